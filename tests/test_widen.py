"""Growing a trained segmenter's skip modules (train.widen): same masks at first, then trainable."""

import itertools
import json
from importlib.metadata import version

import numpy as np
import pytest
import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.data.normalize import normalize
from spiralray.data.synthetic import SyntheticSpec, generate, generate_many
from spiralray.errors import SpiralrayError
from spiralray.train.local import fit
from spiralray.train.sampling import RegionSampler
from spiralray.train.steps import TrainSpec
from spiralray.train.widen import widen_skips


def test_widened_model_segments_exactly_as_the_original(tmp_path):
    image, _ = generate(SyntheticSpec(160, 200), seed=11)
    before = Engine(modelzoo.load(None), device="cpu").segment(image).labels
    grown = widen_skips(modelzoo.load(None), 48)
    modelzoo.save(grown, tmp_path / "w48")  # the shape travels in the config
    loaded = modelzoo.load(str(tmp_path / "w48"))
    assert loaded.config.model.seg_skip_inner == 48
    # which spiralray saved it: a later one's new settings are named as such, not as typos
    assert json.loads((tmp_path / "w48" / "config.json").read_text())["spiralray_version"] == version(
        "spiralray"
    )
    assert loaded.segmenter.skips[0].a.weight.shape[0] == 48
    after = Engine(loaded, device="cpu").segment(image).labels
    assert before.max() > 3
    np.testing.assert_array_equal(after, before)


def test_new_channels_learn():
    torch.manual_seed(0)
    grown = widen_skips(modelzoo.load(None), 40)
    pairs = generate_many(2, SyntheticSpec(128, 128), seed=5)
    sampler = RegionSampler([normalize(im) for im, _ in pairs], [lb for _, lb in pairs], grown.config, seed=2)
    steps = []
    ticks = itertools.count(0.0, 0.5)  # a clock that counts calls: the same few steps on any machine
    fit(
        grown,
        sampler,
        TrainSpec(),
        0,
        3,
        log=lambda name, it, loss: steps.append(it),
        clock=lambda: next(ticks),
    )
    assert steps  # at least one segmenter step ran
    new_in = grown.segmenter.skips[0].b.weight[:, 32:]
    assert float(new_in.abs().max()) > 0  # the zero start is a start, not a frozen part


def test_narrowing_is_refused():
    with pytest.raises(SpiralrayError, match="cannot narrow"):
        widen_skips(modelzoo.load(None), 16)
