"""Fixes from a review of the training code (issue 11, item 5): validation leaves the live
network alone, mirrored labels are other objects, one score label for training and validation,
calibration chooses on validation only. (The frame split's tests are in test_train.py.)"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ellipse

from spiralray.core.config import SpiralNetConfig
from spiralray.core.net import SpiralNet
from spiralray.core.regions import three_channel_labels
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.train.sampling import RegionSampler, batches

ROOT = Path(__file__).resolve().parents[1]


def test_validation_leaves_the_live_network_alone(monkeypatch):
    """Under Ray Train the validation step ran ``Engine(net, device="cpu")`` on the live network:
    the engine moves the network it gets to its device (a GPU run's weights left the GPU under
    its optimizer) and switches it to eval mode."""
    from spiralray.train.worker_loop import _validate

    net = SpiralNet.build(seed=0)
    net.scorer.train()  # the scorer stays in train mode through the segmenter stage
    net.segmenter.train()
    live = [*net.scorer.parameters(), *net.segmenter.parameters()]
    params = [(p, p.data_ptr(), p.device, p.detach().clone()) for p in live]
    moved = []
    real_to = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        moved.append(module)
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    val = [generate(SyntheticSpec(64, 72), seed=4)]
    out = _validate(net, val, "segmenter")
    assert np.isfinite(out["val_score_mse"]) and 0 <= out["val_object_f1_50"] <= 1
    assert moved, "the engine should have been handed a network to move (a copy)"
    modules = {id(m) for m in (*net.scorer.modules(), *net.segmenter.modules())}
    assert not [m for m in moved if id(m) in modules], "validation called .to() on the live network"
    assert net.scorer.training and net.segmenter.training
    after = [*net.scorer.parameters(), *net.segmenter.parameters()]
    for (p, ptr, device, before), now in zip(params, after, strict=True):
        assert now is p and p.data_ptr() == ptr and p.device == device
        assert torch.equal(p.detach(), before)


def _border_nucleus(h=96, w=112):
    """One nucleus cut by the top border (centre 3 px inside): ~13 rows x 25 cols, so every
    region centred on one of its pixels holds all of it."""
    labels = np.zeros((h, w), np.int32)
    labels[ellipse((h, w), (3, 50), 12, 10)] = 7
    image = np.where(labels > 0, 1.0, 0.1).astype(np.float32)
    return image, labels


@pytest.mark.parametrize("augment", [False, True])
def test_mirrored_border_nucleus_is_not_the_central_object(augment):
    image, labels = _border_nucleus()
    area = int((labels == 7).sum())
    sampler = RegionSampler(
        [image], [labels], SpiralNetConfig(), augment=augment, object_fraction=1.0, seed=1
    )
    labs = sampler.sample(24)[1]
    for lb in labs:
        target = three_channel_labels(lb)
        assert target[0].sum() == area  # the real nucleus, whole, and nothing mirrored
        assert target[1].sum() > 0  # its mirror image is there, as another object
    # The U-Net's tiles keep the plain mirror: it never sees a mirror seam at inference.
    tiles = sampler.sample_tiles(4, size=64)[1]
    assert set(np.unique(tiles)) <= {0, 7}


def test_mirrored_copies_get_ids_of_their_own():
    from spiralray.train.sampling import _pad_labels

    labels = np.array([[1, 0, 2], [0, 0, 0], [3, 0, 4]], np.int32)
    padded = _pad_labels(labels, 2)
    assert np.array_equal(padded[2:5, 2:5], labels)  # the image keeps its ids
    bands = (slice(0, 2), slice(2, 5), slice(5, 7))
    zones = [set(np.unique(padded[a, b])) - {0} for a in bands for b in bands]
    assert zones[4] == {1, 2, 3, 4}
    for i, zone in enumerate(zones):  # no id is shared by two zones (the image is zone 4)
        assert zone and not [j for j, other in enumerate(zones) if j != i and zone & other]
    assert np.array_equal(padded % 5, np.pad(labels, 2, mode="symmetric"))  # the plain mirror back


def test_training_score_targets_equal_the_validation_truth():
    """The scorer trains on the score validation measures it against: formula (2) of the whole
    image's score label, not of each crop's (a crop cuts objects and moves their centre)."""
    from spiralray.train.steps import score_truth

    h, w = 120, 140
    labels = np.zeros((h, w), np.int32)
    labels[ellipse((h, w), (60, 70), 45, 30, 0.3)] = 1  # wider than a region: crops cut it
    labels[ellipse((h, w), (60, 118), 14, 10)] = 2  # touching it
    labels[ellipse((h, w), (4, 20), 10, 8)] = 3  # cut by the border
    image = np.random.default_rng(0).random((h, w)).astype(np.float32)  # unique values: findable
    for kind in ("centred", "thesis"):
        cfg = SpiralNetConfig().replace(model={"score_label": kind})
        cy, cx = cfg.region.centre
        oy, ox = np.array(cfg.region.centre) - cfg.region.pad  # centre of stride-1 grid cell (0, 0)
        truth = score_truth(labels, cfg, stride=1)
        sampler = RegionSampler([image], [labels], cfg, augment=False, seed=3)
        imgs, _, targets = next(batches(sampler, 256, kind))
        checked = 0
        for region, target in zip(imgs[:, 0], targets, strict=True):
            (y, x), *_ = np.argwhere(image == region[cy, cx])
            if 0 <= y - oy < truth.shape[0] and 0 <= x - ox < truth.shape[1]:
                assert target == pytest.approx(truth[y - oy, x - ox], abs=1e-6), (kind, y, x)
                checked += 1
        assert checked > 200


def test_calibration_chooses_on_validation_only():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from calibrate import choose
    finally:
        sys.path.remove(str(ROOT / "bench"))
    val_images = [np.full((4, 4), v) for v in (1, 2)]
    seen = []

    def segment(image, cfg):  # a fake segmenter: "good" only at central threshold 0.3
        seen.append(image)
        return np.ones((4, 4), np.int32) if cfg.spiral.threshold == 0.3 else np.zeros((4, 4), np.int32)

    sets = {"native": [(im, np.ones((4, 4), np.int32)) for im in val_images]}
    grid = {"score": [0.4], "central": [0.2, 0.3], "nms": [8.0], "min_area": [0]}
    best, trials = choose(segment, sets, grid, SpiralNetConfig(), log=lambda t: None)
    assert best["central"] == 0.3 and len(trials) == 2
    assert all(any(im is v for v in val_images) for im in seen)  # nothing but validation images


def test_calibration_chooses_the_faint_rule_and_the_config_carries_it():
    """``--faint-contrast`` x ``--faint-area`` become (contrast, area) trials, the rule off once;
    the chosen pair reaches the segmenting config."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from calibrate import choose, faint_grid
    finally:
        sys.path.remove(str(ROOT / "bench"))
    pairs = faint_grid("0,0.2", "300,400", (0.0, 0))
    assert pairs == [(0.0, 0), (0.2, 300), (0.2, 400)]
    assert faint_grid("", "", (0.15, 250)) == [(0.15, 250)]  # the model's own
    for bad in (("-0.1", "300"), ("0.2", "300.5"), ("0.2", "-5"), ("", "300"), ("0.2", "x")):
        with pytest.raises(SystemExit, match="^calibrate.py: "):
            faint_grid(*bad, (0.0, 0))

    def segment(image, cfg):  # "good" only with the rule at (0.2, 400)
        good = cfg.candidates.faint == (0.2, 400)
        return np.full((4, 4), int(good), np.int32)

    sets = {"native": [(np.zeros((4, 4)), np.ones((4, 4), np.int32))]}
    grid = {"score": [0.4], "central": [0.3], "nms": [8.0], "min_area": [0], "faint": pairs}
    best, trials = choose(segment, sets, grid, SpiralNetConfig(), log=lambda t: None)
    assert (best["faint_contrast"], best["faint_area"]) == (0.2, 400) and len(trials) == 3


def test_calibration_can_score_hela_against_conformed_outlines(hela):
    """calibrate.py --conform-hela: HeLa validation labels peeled to BBBC039's convention (fewer
    pixels, the same objects); HeLa at half magnification is made from those labels."""
    from tests.conftest import HELA

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from calibrate import validation_sets
    finally:
        sys.path.remove(str(ROOT / "bench"))
    given, _ = validation_sets(str(HELA), None)
    peeled, weights = validation_sets(str(HELA), None, conform_hela=True)
    assert set(peeled) == {"hela", "hela half"} and weights == {"hela": 1.0, "hela half": 1.0}
    for key in ("hela", "hela half"):
        for (im0, lb0), (im1, lb1) in zip(given[key], peeled[key], strict=True):
            assert np.array_equal(im0, im1)
            assert 0.8 * (lb0 > 0).sum() < (lb1 > 0).sum() < 0.97 * (lb0 > 0).sum()
            assert set(np.unique(lb1)) == set(np.unique(lb0))


def test_calibration_can_choose_on_shifted_validation_frames_too(hela):
    """calibrate.py --shifts "dim + noisy": the shifted HeLa validation frames join the sets the
    thresholds are chosen on, weight 1, their labels those of the (conformed) frames."""
    from spiralray.data.shifts import SHIFTS, shifted
    from tests.conftest import HELA

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from calibrate import validation_sets
    finally:
        sys.path.remove(str(ROOT / "bench"))
    sets, weights = validation_sets(str(HELA), None, conform_hela=True, shifts=["dim + noisy"])
    assert weights == {"hela": 1.0, "hela half": 1.0, "hela dim + noisy": 1.0}
    expected = shifted(sets["hela"], shifts={"dim + noisy": SHIFTS["dim + noisy"]})["dim + noisy"]
    for (im, lb), (im_e, lb_e) in zip(sets["hela dim + noisy"], expected, strict=True):
        np.testing.assert_array_equal(im, im_e)
        np.testing.assert_array_equal(lb, lb_e)
    assert len(sets["hela dim + noisy"]) == len(sets["hela"])


def test_calibration_refuses_an_unknown_shift_in_one_line(tmp_path):
    import subprocess

    def calibrate(*shifts):
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "calibrate.py"), "--model", str(tmp_path / "x")]
            + ["--out", str(tmp_path / "m")]
            + [a for name in shifts for a in ("--shifts", name)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert out.returncode != 0 and "Traceback" not in out.stderr
        return out.stderr.strip().splitlines()[-1]

    last = calibrate("dim + noisy", "blurry")
    assert last.startswith("calibrate.py: unknown shift 'blurry' (known: 8-bit; dim + noisy; ")
    assert "half magnification" not in last  # always in: not a choice
    assert not (tmp_path / "m").exists()
    # A name holding a comma is one shift; the run gets as far as the (missing) model.
    assert "model not found" in calibrate("8-bit, dim", "defocus")
    assert "unknown shift 'blurry'" in calibrate("all", "blurry")  # not swallowed by "all"
    assert calibrate("dim + noisy,defocus").endswith("or all; one name per --shifts)")


@pytest.mark.parametrize("rows", [40, 300])
def test_an_epoch_draws_the_samples_asked_for(ray_cluster, rows):
    """Each read task drew 256 regions: an epoch of 40 regions trained on 256 (and a tiny
    recipe's segmenter stage ran 16 times its spiral samples)."""
    from spiralray.train.ray_trainer import region_dataset

    image, labels = generate(SyntheticSpec(96, 112), seed=0)
    ds = region_dataset(
        [image.astype(np.float32)], [labels], SpiralNetConfig(), rows, seed=0, zoom=(1.0,), scores=True
    )
    got = ds.take_all()
    assert len(got) == rows
    assert got[0]["image"].shape[0] == 1 and got[0]["labels"].shape == got[0]["image"].shape[1:]
