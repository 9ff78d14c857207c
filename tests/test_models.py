import numpy as np
import pytest
import torch

from spiralray.bench.baselines import unet_step, unet_targets
from spiralray.core.config import SpiralNetConfig
from spiralray.core.models import Scorer, Segmenter, UNet
from spiralray.core.net import SpiralNet
from spiralray.data.normalize import normalize
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.train.sampling import RegionSampler
from spiralray.train.steps import TrainSpec, scorer_step, spiral_windows


def test_scorer_shapes_and_dense_form_equals_per_region():
    torch.manual_seed(0)
    s = Scorer(in_channels=2)
    assert s(torch.randn(5, 2, 52, 58)).shape == (5,)
    img = torch.randn(1, 2, 52 + 16 * 3, 58 + 16 * 4)
    dense = s.dense(img, 16)
    assert dense.shape == (1, 4, 5)
    for i in range(4):
        for j in range(5):
            region = img[:, :, i * 16 : i * 16 + 52, j * 16 : j * 16 + 58]
            assert torch.allclose(dense[0, i, j], s(region)[0], atol=1e-5)


@pytest.mark.parametrize("skips", [0, 1, 2, 3])
def test_segmenter_shapes_and_valid_windows_equal_full_fov(skips):
    torch.manual_seed(0)
    seg = Segmenter(in_channels=1, skip_modules=skips)
    assert seg.receptive_radius == 2 + 2 * skips
    img, mask = torch.randn(3, 1, 52, 58), torch.rand(3, 3, 52, 58)
    full = seg(img, mask)
    assert full.shape == (3, 3, 52, 58) and 0 <= full.min() and full.max() <= 1
    r = seg.receptive_radius
    win = seg.logits(
        img[:, :, 22 - r : 30 + r, 25 - r : 33 + r], mask[:, :, 22 - r : 30 + r, 25 - r : 33 + r], padding=0
    )
    assert win.shape == (3, 3, 8, 8)
    assert torch.allclose(torch.sigmoid(win), full[:, :, 22:30, 25:33], atol=1e-6)


def test_segmenter_has_no_relu_before_sigmoid():
    seg = Segmenter()
    with torch.no_grad():
        seg.head.bias.fill_(-10.0)
    assert seg(torch.zeros(1, 1, 52, 58), torch.zeros(1, 3, 52, 58)).max() < 0.5


@pytest.mark.parametrize("base", [64, 8])
def test_unet_shapes(base):
    net = UNet(in_channels=1, classes=3, base=base)
    assert net.down[0][0].out_channels == base
    assert net(torch.randn(1, 1, 70, 90)).shape == (1, 3, 70, 90)


def _sampler():
    cfg = SpiralNetConfig()
    pairs = [generate(SyntheticSpec(160, 160), seed=s) for s in range(2)]
    return RegionSampler(
        [normalize(i) for i, _ in pairs], [lb for _, lb in pairs], cfg, augment=False, seed=0
    )


def _halves(losses):
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


def test_scorer_overfits_a_fixed_batch():
    net = SpiralNet.build(seed=0)
    imgs, _, targets = _sampler().sample(32, net.config.model.score_label)
    assert targets.std() > 0.1
    opt = torch.optim.Adam(net.scorer.parameters(), lr=1e-3)
    net.scorer.train()
    _halves([scorer_step(net, opt, imgs, targets, TrainSpec(), "cpu") for _ in range(150)])


def test_segmenter_overfits_a_fixed_batch():
    net = SpiralNet.build(seed=0)
    imgs, labs, _ = _sampler().sample(4)
    ims, masks, targets, weights = spiral_windows(net, imgs, labs, teacher=True, device="cpu")
    assert ims.shape[0] == 4 * 63 and ims.shape[-1] == 8 + 2 * net.segmenter.receptive_radius
    idx = torch.arange(0, len(ims), 4)
    opt = torch.optim.Adam(net.segmenter.parameters(), lr=1e-3)
    net.segmenter.train()
    losses = []
    for _ in range(60):
        logits = net.segmenter.logits(ims[idx], masks[idx], padding=0)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[idx], reduction="none")
            * weights[idx]
        ).sum() / (weights[idx].sum() * 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    _halves(losses)


def test_unet_overfits_a_fixed_batch():
    torch.manual_seed(0)
    net = UNet(base=8, depth=2)
    imgs, labs = _sampler().sample_tiles(2, size=64)
    classes = np.stack([unet_targets(lb) for lb in labs])
    assert set(np.unique(classes)) == {0, 1, 2}
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    _halves([unet_step(net, opt, imgs, classes) for _ in range(80)])


def test_cosine_schedule_runs_from_lr_to_lr_final():
    from spiralray.train.steps import cosine_lr

    spec = TrainSpec(lr=1e-3, lr_final=1e-5)
    assert cosine_lr(spec, 0) == pytest.approx(1e-3) and cosine_lr(spec, 1) == pytest.approx(1e-5)
    assert cosine_lr(spec, 0.5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(spec, 2) == pytest.approx(1e-5)  # past the budget: stays at the end
    assert type(cosine_lr(spec, 0.3)) is float  # numpy scalars break weights_only checkpoint loads


def test_sampler_draws_every_zoom_equally_often():
    image, labels = generate(SyntheticSpec(128, 128), seed=2)
    sampler = RegionSampler([image.astype(np.float32)], [labels], SpiralNetConfig(), scales=(0.5, 1.0, 2.0))
    assert np.allclose(sampler.weights, 1 / 3)


def test_loader_workers_draw_distinct_batches_with_their_targets():
    """GPU training draws regions in loader processes: numpy out, targets precomputed, and each
    worker its own stream (identical streams would repeat every batch)."""
    from spiralray.core.regions import centre_slices
    from spiralray.train.sampling import batches

    cfg = SpiralNetConfig()
    stream = batches(_sampler(), 16, "thesis", workers=2)
    drawn = [next(stream) for _ in range(4)]
    rows, cols = centre_slices(cfg.region)
    for imgs, labs, targets in drawn:
        assert isinstance(imgs, np.ndarray) and imgs.shape == (16, 1, cfg.region.height, cfg.region.width)
        # the thesis label: a score above 0 exactly where the central window holds foreground
        assert np.array_equal(targets > 0, (labs[:, rows, cols] > 0).any((1, 2)))
    assert not np.array_equal(drawn[0][0], drawn[1][0])  # workers 0 and 1 take turns
    inline = batches(_sampler(), 16, None, workers=0)
    imgs, labs, targets = next(inline)
    assert targets is None and imgs.shape[0] == 16
