"""Training aimed at touching nuclei (issue 11: half of v7's merges were masks that crossed into a
touching neighbour): the contact zone, regions centred on touching objects, and the segmenter's
loss weighted where objects meet. And at micronuclei: regions centred on small objects."""

import numpy as np
import torch
from conftest import ellipse

from spiralray.core.config import SpiralNetConfig
from spiralray.core.net import SpiralNet
from spiralray.core.regions import contact_zone
from spiralray.train.sampling import RegionSampler
from spiralray.train.steps import spiral_windows


def test_contact_zone_marks_where_two_objects_meet():
    lb = np.zeros((30, 60), np.int32)
    lb[5:25, 2:12] = 1
    lb[5:25, 12:22] = 2  # touches 1
    lb[5:25, 25:35] = 3  # a 3-px gap from 2: only the gap's middle sees both
    lb[5:25, 40:50] = 4  # a 5-px gap from 3: nobody sees both
    zone = contact_zone(lb)
    assert set(np.unique(lb[zone])) == {0, 1, 2}
    assert zone[15, 10:14].all() and not zone[15, 8] and not zone[15, 16]  # 2 px either side
    assert zone[15, 23] and not zone[15, 22] and not zone[15, 24]  # the gap between 2 and 3
    assert not zone[:, 36:].any()
    assert not contact_zone(np.where(lb == 4, 4, 0)).any()  # a lone object has none
    for dtype in (np.uint16, np.int64, np.uint64):  # a dtype's extreme value is no sentinel
        assert np.array_equal(contact_zone(lb.astype(dtype)), zone)
    full = np.where(lb > 0, lb + 65531, 0).astype(np.uint16)  # ids up to the dtype's maximum
    assert np.array_equal(contact_zone(full), zone)
    stack = np.stack([lb, lb[:, ::-1], np.zeros_like(lb)])
    assert np.array_equal(contact_zone(stack), np.stack([contact_zone(im) for im in stack]))


def _pair_and_loner(h=140, w=200):
    """A touching pair (ids 1, 2) and a lone nucleus (id 3) far from both; unique image values
    so a region's centre pixel can be found in the image."""
    labels = np.zeros((h, w), np.int32)
    labels[ellipse((h, w), (70, 40), 14, 12)] = 1
    labels[ellipse((h, w), (70, 65), 14, 12) & (labels == 0)] = 2
    labels[ellipse((h, w), (70, 160), 14, 12)] = 3
    image = np.where(labels > 0, 1.0, 0.1) + np.random.default_rng(0).random((h, w)) * 1e-3
    return image.astype(np.float32), labels


def _centre_ids(sampler, n=200):
    cy, cx = sampler.cfg.region.centre
    return sampler.sample(n)[1][:, cy, cx]


def test_contact_sampling_centres_regions_on_touching_objects():
    image, labels = _pair_and_loner()
    cfg = SpiralNetConfig()
    on = RegionSampler([image], [labels], cfg, augment=False, object_fraction=1.0, contact_fraction=1.0)
    ids = _centre_ids(on)
    assert set(np.unique(ids)) == {1, 2}  # both of the pair, never the loner
    plain = RegionSampler([image], [labels], cfg, augment=False, object_fraction=1.0)
    assert 3 in _centre_ids(plain)


def test_small_sampling_centres_regions_on_small_objects_at_native_size():
    image, labels = _pair_and_loner()
    labels[ellipse(labels.shape, (20, 120), 3, 3)] = 4  # a micronucleus, 29 px
    labels[ellipse(labels.shape, (120, 120), 5, 4)] = 5  # 63 px: not small at native size
    image = np.where(labels == 4, 1.0, image).astype(np.float32)
    cfg = SpiralNetConfig()
    kw = dict(augment=False, object_fraction=1.0, small_fraction=1.0, small_area=60)
    assert set(np.unique(_centre_ids(RegionSampler([image], [labels], cfg, **kw)))) == {4}
    # At zoom 2 the micronucleus covers ~116 px: still small, as it is at native size.
    zoomed = RegionSampler([image], [labels], cfg, scales=(2.0,), **kw)
    centres = _centre_ids(zoomed, 50)
    assert len(np.unique(centres)) == 1 and (zoomed.sample(1)[1] > 0).any()
    assert np.diff(zoomed.objects[0][1])[zoomed.small[0]].max() < 60 * 4


def test_contact_weight_weighs_the_segmenter_loss_where_objects_meet():
    image, labels = _pair_and_loner()
    cfg = SpiralNetConfig()
    sampler = RegionSampler([image], [labels], cfg, augment=False, object_fraction=1.0, contact_fraction=1.0)
    imgs, labs, _ = sampler.sample(3)
    net = SpiralNet.build(seed=0)
    plain = spiral_windows(net, imgs, labs, teacher=True, device="cpu")
    weighted = spiral_windows(net, imgs, labs, teacher=True, device="cpu", contact_weight=4.0)
    for a, b in zip(plain[:3], weighted[:3], strict=True):  # the same windows and targets
        assert torch.equal(a, b)
    w0, w4 = plain[3], weighted[3]
    assert set(torch.unique(w0).tolist()) == {0.0, 1.0}
    assert set(torch.unique(w4).tolist()) == {0.0, 1.0, 5.0}
    assert torch.equal(w4 > 0, w0 > 0)  # nothing outside the region gains weight
    # The heavy pixels are the pair's seam: targets of both objects (channels 0 and 1) meet there.
    heavy = w4[:, 0] == 5
    targets = plain[2]
    assert targets[:, 0][heavy].any() and targets[:, 1][heavy].any()


def test_tissue_background_adds_textured_light_and_keeps_the_labels():
    image, labels = _pair_and_loner()
    image = np.where(labels > 0, 1.0, 0.0).astype(np.float32)  # a black background
    cfg = SpiralNetConfig()
    for seed in range(6):  # one region per sampler: its crop, rotation and flip are drawn first
        kw = dict(augment=True, object_fraction=0.0, seed=seed)
        plain = RegionSampler([image], [labels], cfg, **kw)
        tissue = RegionSampler([image], [labels], cfg, tissue_fraction=1.0, **kw)
        for s in (plain, tissue):  # no jitter: what the tissue background adds is left alone
            s._jitter = lambda im: np.asarray(im, np.float32)
        (a, la, _), (b, lb, _) = plain.sample(1), tissue.sample(1)
        assert np.array_equal(la, lb)
        bg = la[0] == 0
        assert np.abs(a[0, 0][bg]).max() == 0  # without it the background stays black
        light = b[0, 0][bg]
        assert light.min() >= 0 and 0.005 < light.mean() < 0.35  # light added, at most a third
        assert light.std() > 0.005  # a texture, not an offset


def test_default_sampling_draws_the_stream_earlier_recipes_drew():
    """Contact, small-object and tissue sampling off (the defaults) draw nothing: a seeded
    sampler's generator ends where it ended before any of them existed (the state below was read
    off the sampler of a4538e3, before tissue sampling, and of this one: equal). The state is
    exact integer arithmetic, so it does not depend on the platform's floating point. A change
    detector, guarding the random streams the committed models were trained on."""
    image, labels = _pair_and_loner()
    sampler = RegionSampler([image], [labels], SpiralNetConfig(), augment=True, seed=5)
    sampler.sample(16, "centred")
    sampler.sample_tiles(4, 64)
    assert sampler.rng.bit_generator.state["state"]["state"] == 318485819128877596895869421652547610965
