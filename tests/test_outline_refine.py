"""Outline refinement at inference (spiralray.core.outline): peeling a mask's dim outline pixels,
its guards, the faint-object rule, and the same labels tiled or whole with them on."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_outlines import blurred, disc

from spiralray import api
from spiralray.core.outline import contrast, faint_object, peel, refine_objects
from spiralray.core.spiral import ObjectMask
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.pipeline.local import Options, segment_array


def test_a_mask_a_pixel_too_wide_is_peeled_to_the_edge():
    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    wide = disc(shape, 32, 32, 11)
    out = peel(wide, blurred(true), 0.4)
    assert not (out & ~wide).any()  # only removes
    ring = wide & ~true
    assert out[ring].mean() < 0.2  # most of the ring outside the edge went
    assert out[true].mean() > 0.97  # the nucleus stayed


def test_a_tight_mask_and_level_zero_are_left_alone():
    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    tight = disc(shape, 32, 32, 9)
    assert (peel(tight, blurred(true), 0.4) == tight).all()
    obj = ObjectMask((32, 32), 0.9, 0, 0, disc(shape, 32, 32, 12), 1)
    assert refine_objects([obj, None], lambda *b: blurred(true), shape, 0.0) == [obj, None]


def test_dark_objects_crowded_objects_and_the_seed_are_kept():
    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    wide = disc(shape, 32, 32, 12)
    dark = 2000.0 - blurred(true)  # a dark object on a bright background: nothing to place
    assert (peel(wide, dark, 0.4) == wide).all()
    full = np.ones(shape, bool)  # no background ring around it
    assert (peel(full, blurred(true), 0.4) == full).all()
    # The seed on the outline stays even where the pixel is dim.
    obj = ObjectMask((32, 20), 0.9, 0, 0, wide, 1)  # (32, 20): 12 px left of the centre
    (out,) = refine_objects([obj], lambda y0, y1, x0, x1: blurred(true)[y0:y1, x0:x1], shape, 0.4)
    assert out.mask[32, 20] and out.mask.sum() < wide.sum()


def test_a_peel_that_would_take_half_the_object_is_not_made():
    shape = (64, 96)
    true = disc(shape, 32, 20, 6)
    core = disc(shape, 32, 20, 7)
    for length, peeled in ((20, True), (60, False)):
        mask = true.copy()
        mask[31:33, 26 : 26 + length] = True  # a 2 px spur of dim background pixels
        out = peel(mask, blurred(true), 0.4)
        spur = mask & ~core
        if peeled:  # the spur is under half the mask: it goes, the nucleus stays
            assert not out[spur].any() and out[true].all()
        else:  # taking the spur would take more than half: the mask is left as it is
            assert 2 * int(spur.sum()) > int(mask.sum())
            assert (out == mask).all()


def test_objects_at_the_image_border_read_only_image_pixels():
    shape = (40, 40)
    true = disc(shape, 2, 20, 10)  # cut by the top edge
    wide = disc(shape, 2, 20, 11)
    obj = ObjectMask((2, 20), 0.9, 0, 0, wide, 1)
    boxes = []

    def read(y0, y1, x0, x1):
        boxes.append((y0, y1, x0, x1))
        return blurred(true)[y0:y1, x0:x1]

    (out,) = refine_objects([obj], read, shape, 0.4)
    assert all(0 <= a < b <= 40 for y0, y1, x0, x1 in boxes for a, b in ((y0, y1), (x0, x1)))
    assert out.mask.sum() < wide.sum() and out.mask[true].mean() > 0.95


@pytest.fixture(scope="module")
def refining_engine():
    engine = api.load_engine(None)
    engine.cfg = engine.cfg.replace(candidates={"outline_level": 0.4})
    return engine


def test_refined_labels_tiled_equal_whole_and_are_tighter(refining_engine):
    image = generate(SyntheticSpec(400, 440, density=0.0012), seed=31)[0]
    native = refining_engine.cfg.model.diameter  # scale 1: the whole image through the engine
    res = api.segment_image(refining_engine, image, ids="seed", diameter=native)
    whole = res.labels
    assert res.scale == 1
    assert len(np.unique(whole)) > 20
    for size in (256, 384):
        opts = Options(tile_size=size, ids="seed", diameter=native)
        tiled = segment_array(image, refining_engine, opts)["labels"]
        assert np.array_equal(tiled, whole), size
    plain = api.load_engine(None)
    plain.cfg = plain.cfg.replace(candidates={"outline_level": 0.0})
    before = api.segment_image(plain, image, ids="seed", diameter=native).labels
    assert (whole > 0).sum() < (before > 0).sum()


def test_faint_small_objects_are_dropped_and_the_rest_kept():
    """The faint rule drops an object under its area standing under its contrast above the local
    background; a bright object of the same size, a faint object over the area, and every object
    with the rule off stay, unpeeled when the peel is off."""
    shape = (96, 160)
    small, large, bright = disc(shape, 48, 30, 6), disc(shape, 48, 80, 14), disc(shape, 48, 130, 6)
    # normalised intensities: background 0.1, faint objects 0.2 above it, the bright one 0.8
    image = 0.1 + 0.2 * ndi.gaussian_filter((small | large).astype(float), 1) + 0.8 * bright
    objs = [ObjectMask((48, x), 0.9, 0, 0, m, 1) for x, m in ((30, small), (80, large), (130, bright))]
    read = lambda y0, y1, x0, x1: image[y0:y1, x0:x1]  # noqa: E731
    area = int(small.sum()) + 1  # the small ones are under it, the large one over it
    assert contrast(small, image) == pytest.approx(0.2, abs=0.02)
    assert contrast(bright, image) > 0.7
    assert faint_object(small, image, (0.3, area)) and not faint_object(bright, image, (0.3, area))
    assert not faint_object(large, image, (0.3, area))
    assert not faint_object(small, image, (0.1, area))  # stands out more than the rule asks
    out = refine_objects(objs + [None], read, shape, 0.0, (0.3, area))
    assert out[0] is None and out[1] is objs[1] and out[2] is objs[2] and out[3] is None
    dark = 1.0 - image  # a small dark object: under any positive contrast, and under 0
    assert faint_object(small, dark, (0.05, area))
    assert not faint_object(small, dark, (0.0, area)) and not faint_object(small, dark, (0.3, 0))  # off
    dark_objs = [ObjectMask((48, 30), 0.9, 0, 0, small, 1)]
    dark_read = lambda y0, y1, x0, x1: dark[y0:y1, x0:x1]  # noqa: E731
    assert refine_objects(dark_objs, dark_read, shape, 0.0, (0.0, area)) == dark_objs
    # peel and rule together: the faint object goes, a kept one is still peeled
    wide = disc(shape, 48, 130, 8)  # 2 px wider than the bright object
    both = refine_objects([objs[0], ObjectMask((48, 130), 0.9, 0, 0, wide, 1)], read, shape, 0.4, (0.3, area))
    assert both[0] is None and bright.sum() <= both[1].mask.sum() < wide.sum()
    full = np.ones(shape, bool)  # no background ring: nothing to read, kept
    assert not faint_object(full, image, (0.3, full.size + 1))


def test_faint_rule_labels_tiled_equal_whole():
    """Objects dropped as faint are dropped alike whole and tiled: the rule reads the object and
    the image around it, which a tile holds."""
    image = generate(SyntheticSpec(400, 440, density=0.0012, contrast=(0.08, 0.3)), seed=32)[0]
    engine = api.load_engine(None)
    native = engine.cfg.model.diameter
    before = api.segment_image(engine, image, ids="seed", diameter=native).labels
    engine.cfg = engine.cfg.replace(candidates={"faint_contrast": 0.45, "faint_area": 700})
    whole = api.segment_image(engine, image, ids="seed", diameter=native).labels
    kept, all_ = len(np.unique(whole)) - 1, len(np.unique(before)) - 1
    assert 10 < kept < all_  # the rule dropped some objects, not all
    for size in (256, 384):
        opts = Options(tile_size=size, ids="seed", diameter=native)
        assert np.array_equal(segment_array(image, engine, opts)["labels"], whole), size
