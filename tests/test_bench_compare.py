"""``spiralray bench compare``'s parts: the U-Net baseline's stored post-processing, SpiralNet run
as users run it with its regions counted."""

import numpy as np
import torch

from spiralray import api, modelzoo
from spiralray.bench.baselines import unet_instances, unet_logits
from spiralray.bench.compare import _methods, _score, _unet, save_unet
from spiralray.core.engine import Engine
from spiralray.core.models import UNet
from spiralray.data.normalize import normalize
from spiralray.data.synthetic import SyntheticSpec, generate


def test_bench_compare_applies_the_unet_postprocessing_stored_with_it(tmp_path):
    """``bench compare``'s U-Net row uses the post-processing chosen on validation and stored with
    its weights (``bench/train_baselines.py --calibrate``) and says so; without one, the defaults."""
    from argparse import Namespace

    torch.manual_seed(0)
    untrained = UNet(base=8)
    untrained.head.weight.data.normal_(0, 1)  # class maps that vary with the image: blobs of all sizes
    post = {"min_area": 30, "grow": 1}
    save_unet(str(tmp_path / "unet8"), untrained, {"base": 8, "trained": "here", "postprocessing": post})
    save_unet(str(tmp_path / "unet4"), UNet(base=4), {"base": 4, "trained": "there"})
    args = Namespace(weights=str(tmp_path), baseline_minutes=0)
    u8, note, got = _unet(8, args, None)
    assert got == post and note == "here; post-processing chosen on validation: seeds over 30 px grown 1 px"
    assert _unet(4, args, None)[1:] == ("there", {})

    net = modelzoo.load()
    fn = _methods(Engine(net, device="cpu"), "shipped", {8: (u8, note, got)}, net.config.model)["unet8"][0]
    image = generate(SyntheticSpec(96, 96), seed=3)[0]
    card = net.config.model
    z = unet_logits(u8, normalize(image, card.norm, card.norm_low, card.norm_high))
    chosen, default = unet_instances(z, **post), unet_instances(z)
    assert not np.array_equal(chosen, default)  # the choice matters on this image
    np.testing.assert_array_equal(fn(image), chosen)


def test_bbbc039_table_applies_the_unet_postprocessing_stored_with_it(tmp_path):
    """``bench/bbbc039.py --unet`` takes the post-processing stored with the U-Net, as each SpiralNet
    model brings its own thresholds: it does not choose again (the HeLa path it would need to
    choose is missing here)."""
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    sys.path.insert(0, bench)
    try:
        from bbbc039 import unet_method
    finally:
        sys.path.remove(bench)
    torch.manual_seed(0)
    net = UNet(base=8)
    net.head.weight.data.normal_(0, 1)
    post = {"min_area": 30, "grow": 1, "objective": 0.5}
    save_unet(str(tmp_path / "u"), net, {"base": 8, "trained": "here", "postprocessing": post})
    fn, chosen = unet_method(
        str(tmp_path / "u"), hela=str(tmp_path / "no hela"), fields=2, log=lambda m: None
    )
    assert chosen == {**post, "trained": "here"}
    image = generate(SyntheticSpec(96, 96), seed=3)[0]
    expected = unet_instances(unet_logits(net, normalize(image)), 30, 1)
    assert not np.array_equal(expected, unet_instances(unet_logits(net, normalize(image))))
    np.testing.assert_array_equal(fn(image), expected)


def test_bench_compare_counts_spiralnet_regions_per_found_object():
    """SpiralNet's row reports the regions its recursion segmented per object it found (the
    runaway check on out-of-domain data); a method that does not count regions reports none."""
    net = modelzoo.load()
    engine = Engine(net, device="cpu")
    pairs = [generate(SyntheticSpec(128, 128), seed=s) for s in (1, 2)]
    methods = _methods(engine, "shipped", {}, net.config.model)  # SpiralNet as compare runs it
    out = _score(methods, pairs)
    sn = out["spiralnet"]
    expected = sum(api.segment_image(engine, im).regions for im, _ in pairs)
    assert sn["regions"] == expected and sn["n_pred"] > 0
    assert sn["regions_per_object"] == expected / sn["n_pred"]
    assert sn["object_f1_50"] > 0.5  # the labels scored are the segmentation's own
    assert "regions" not in out["watershed"]
    blank = _score(methods, [(np.zeros((96, 96), np.uint16), np.zeros((96, 96), np.int32))])
    assert blank["spiralnet"]["n_pred"] == 0 and blank["spiralnet"]["regions_per_object"] is None
