import numpy as np
import pytest
from conftest import ellipse
from oracle import oracle_region_masks

from spiralray.core.candidates import resolve_objects
from spiralray.core.config import CandidateSpec, RegionSpec, SpiralSpec
from spiralray.core.segment import seed_labels as assemble_labels
from spiralray.core.spiral import continuation_centres, segment_objects, spiral_geometry
from spiralray.data.synthetic import SyntheticSpec, generate

REGION, SPIRAL = RegionSpec(), SpiralSpec()


@pytest.mark.parametrize("fewest", [False, True])
@pytest.mark.parametrize("shape,n", [((52, 58), 8), ((52, 58), 6), ((40, 40), 8), ((33, 47), 5)])
def test_spiral_covers_region_exactly_once(shape, n, fewest):
    g = spiral_geometry(*shape, n, fewest)
    hits = np.zeros(shape, int)
    for k in range(len(g.blocks)):
        rows, cols = g.clipped(k)
        assert rows.stop > rows.start and cols.stop > cols.start  # no empty steps
        hits[rows, cols] += 1
    assert np.all(hits == 1)


def test_spiral_order_is_counter_clockwise_from_centre():
    g = spiral_geometry(52, 58, 8)
    assert len(g.blocks) == 63  # not the thesis's 48: 7 x 9 blocks cover 52 x 58
    assert g.blocks[0] == (22, 25)  # the block holding the centre pixel (26, 29)
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(g.blocks[:8], g.blocks[1:9], strict=True)]
    # up, left, down, down, right, right, up, up
    assert steps == [(-8, 0), (0, -8), (8, 0), (8, 0), (0, 8), (0, 8), (-8, 0), (-8, 0)]


def test_fewest_layout_takes_56_steps_and_keeps_the_centre_first():
    """Issue 11 item 6: shifting the block grid a column covers 52 x 58 with 7 x 8 blocks; the
    first block still holds the centre pixel and every field of view is centred on its block."""
    centred, fewest = spiral_geometry(52, 58, 8), spiral_geometry(52, 58, 8, True)
    assert len(fewest.blocks) == 56 < len(centred.blocks)
    y, x = fewest.blocks[0]
    assert y <= 26 < y + 8 and x <= 29 < x + 8
    assert fewest.fov_offset == centred.fov_offset == (22, 25)

    def widths(g):
        return [g.clipped(k)[1].stop - g.clipped(k)[1].start for k in range(len(g.blocks))]

    assert min(widths(fewest)) == 2  # no step writes a single column any more
    assert widths(centred).count(1) == 14


def _truth_scene():
    shape = (160, 220)
    lab = np.zeros(shape, np.int32)
    lab[ellipse(shape, (80, 110), 75, 9, 0.1)] = 1  # 150 px long: needs border continuation
    lab[ellipse(shape, (30, 40), 12, 9)] = 2
    lab[ellipse(shape, (30, 62), 10, 10)] = 3  # touches 2
    lab[ellipse(shape, (135, 30), 14, 8, 1.0)] = 4
    lab[ellipse(shape, (150, 200), 12, 12)] = 5  # cut by the image border
    lab[ellipse(shape, (60, 10), 9, 12)] = 6  # cut by the image border
    return lab


def _seeds_on_objects(lab, step=8):
    ys, xs = np.mgrid[0 : lab.shape[0] : step, 1 : lab.shape[1] : step]
    pts = np.stack([ys.ravel(), xs.ravel()], 1)
    return pts[lab[pts[:, 0], pts[:, 1]] > 0]


def _objects_equal(pred, truth):
    """Every truth object is exactly one predicted object, pixel for pixel."""
    assert len(np.unique(pred)) == len(np.unique(truth))
    for t in np.unique(truth)[1:]:
        ids = np.unique(pred[truth == t])
        assert len(ids) == 1 and ids[0] != 0
        assert np.array_equal(pred == ids[0], truth == t)


def test_oracle_reproduces_objects_including_border_continuation():
    lab = _truth_scene()
    seeds = np.array([[80, 110], [30, 40], [30, 62], [135, 30], [150, 200], [60, 10]])
    objs = segment_objects(
        seeds, np.ones(len(seeds)), oracle_region_masks(lab, REGION, SPIRAL), lab.shape, REGION, SPIRAL
    )
    for k, obj in enumerate(objs, start=1):
        full = np.zeros(lab.shape, bool)
        full[obj.y0 : obj.y0 + obj.mask.shape[0], obj.x0 : obj.x0 + obj.mask.shape[1]] = obj.mask
        assert np.array_equal(full, lab == k), f"object {k}"
    assert objs[0].regions >= 3  # the long one was followed across region borders
    no_hops = segment_objects(
        seeds[:1],
        np.ones(1),
        oracle_region_masks(lab, REGION, SPIRAL),
        lab.shape,
        REGION,
        SpiralSpec(continuation=False),
    )
    assert no_hops[0].area < (lab == 1).sum()  # and without continuation it is cut off


def test_each_object_once_and_candidate_order_irrelevant():
    lab = _truth_scene()
    seeds = _seeds_on_objects(lab)
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.5, 1.0, len(seeds))
    masks = oracle_region_masks(lab, REGION, SPIRAL)
    spec = CandidateSpec()
    objs = segment_objects(seeds, scores, masks, lab.shape, REGION, SPIRAL)
    labels = assemble_labels(resolve_objects(objs, lab.shape, spec), lab.shape)
    _objects_equal(labels, lab)
    perm = rng.permutation(len(seeds))
    objs2 = segment_objects(seeds[perm], scores[perm], masks, lab.shape, REGION, SPIRAL)
    labels2 = assemble_labels(resolve_objects(objs2, lab.shape, spec), lab.shape)
    assert np.array_equal(labels, labels2)  # ids included


def test_oracle_on_synthetic_nuclei():
    image, lab = generate(SyntheticSpec(128, 160), seed=5)
    seeds = _seeds_on_objects(lab, step=6)
    objs = segment_objects(
        seeds,
        np.linspace(1, 0.5, len(seeds)),
        oracle_region_masks(lab, REGION, SPIRAL),
        lab.shape,
        REGION,
        SPIRAL,
    )
    labels = assemble_labels(resolve_objects(objs, lab.shape, CandidateSpec(min_area=1)), lab.shape)
    found = set(np.unique(lab[labels > 0]))
    seeded = set(np.unique(lab[seeds[:, 0], seeds[:, 1]]))
    assert seeded <= found
    for t in seeded:
        ids = np.unique(labels[lab == t])
        assert len(ids) == 1 and np.array_equal(labels == ids[0], lab == t)


def test_continuation_centres_on_border_runs():
    mask = np.zeros((52, 58), bool)
    mask[20:30, 25:58] = True  # the central object, touching the right border on rows 20..29
    out = continuation_centres(mask, (100, 100), (400, 400), REGION)
    assert out == [((100 - 26 + 24, 100 - 29 + 57), (100 - 26 + 24, 100 - 29 + 58))]
    # at the image edge the region border is the image border: no continuation
    assert continuation_centres(mask, (100, 371), (400, 400), REGION) == []


def test_a_flood_over_all_four_borders_is_not_followed():
    """A mask over half its region's border and a quarter or more of each side is a flood
    (out-of-domain input), not a nucleus at the model's scale: it starts no continuation (the
    default, ``SpiralSpec.stop_floods``); three sides, or one touched briefly, are followed."""
    flood = np.ones((52, 58), bool)
    assert len(continuation_centres(flood, (100, 100), (400, 400), REGION, stop_floods=False)) == 4
    assert continuation_centres(flood, (100, 100), (400, 400), REGION) == []
    flood[:, -1] = False  # clear of the right border
    assert len(continuation_centres(flood, (100, 100), (400, 400), REGION)) == 3
    flood[:40, -1] = True  # 40 of its 52 rows: a flood again
    assert continuation_centres(flood, (100, 100), (400, 400), REGION) == []
    flood[12:, -1] = False  # 12 rows, under a quarter: followed
    assert len(continuation_centres(flood, (100, 100), (400, 400), REGION)) == 4
    cross = np.zeros((52, 58), bool)  # arms 16 px wide: each side over a quarter, the border 29%
    cross[18:34, :] = cross[:, 21:37] = True
    assert all(side.mean() >= 0.25 for side in (cross[0], cross[-1], cross[:, 0], cross[:, -1]))
    assert len(continuation_centres(cross, (100, 100), (400, 400), REGION)) == 4
    # at the image's corner the flood reaches past the image's edges (into reflected pixels):
    # still a flood, and the two borders inside the image start nothing
    corner = np.ones((52, 58), bool)
    assert len(continuation_centres(corner, (10, 10), (400, 400), REGION, stop_floods=False)) == 2
    assert continuation_centres(corner, (10, 10), (400, 400), REGION) == []


def test_a_long_diagonal_nucleus_is_no_flood():
    """A long nucleus along the region's diagonal touches all four borders near two corners;
    it is followed across them and comes back whole through the oracle."""
    shape = (200, 220)
    lab = np.zeros(shape, np.int32)
    lab[ellipse(shape, (100, 110), 90, 11, np.arctan2(52, 58))] = 1
    (mask,) = oracle_region_masks(lab, REGION, SPIRAL)(np.array([[100, 110]]))
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    (obj,) = segment_objects(
        np.array([[100, 110]]), np.ones(1), oracle_region_masks(lab, REGION, SPIRAL), shape, REGION, SPIRAL
    )
    assert obj.regions >= 3 and obj.area == (lab == 1).sum()


@pytest.mark.parametrize("stop", [False, True])
def test_floods_cost_one_region_each_not_max_hops(stop):
    """Every region flooded (an inverted frame: nearly every candidate): the recursion runs each
    object's ``max_hops`` continuations unless floods stop it."""
    seeds = np.array([[100, 100], [200, 300]])
    spiral = SpiralSpec(max_hops=8, stop_floods=stop)
    calls = []

    def floods(centres):
        calls.append(len(centres))
        return np.ones((len(centres), REGION.height, REGION.width), bool)

    objects = segment_objects(seeds, np.ones(2), floods, (400, 500), REGION, spiral)
    assert [o.regions for o in objects] == ([1, 1] if stop else [9, 9])
    assert sum(calls) == (2 if stop else 18)


def test_continuation_follows_only_the_central_object():
    mask = np.zeros((52, 58), bool)
    mask[20:32, 20:40] = True  # the central object, inside the region
    mask[0:6, 10:20] = True  # another piece touching the top border, not connected to it
    assert continuation_centres(mask, (100, 100), (400, 400), REGION) == []
    mask[5:21, 15:21] = True  # now connected to the central object: followed
    assert len(continuation_centres(mask, (100, 100), (400, 400), REGION)) == 1
    assert continuation_centres(np.zeros((52, 58), bool), (100, 100), (400, 400), REGION) == []
