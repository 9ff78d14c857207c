"""Tiled == whole (DESIGN section 3, invariant 1), the order-free component resolve, and ids
that do not depend on the tile size. Block-wise tests in the spirit of StarDist's."""

import numpy as np
import pytest

from spiralray import api
from spiralray.core.candidates import prepare_object, resolve_objects
from spiralray.core.config import CandidateSpec
from spiralray.core.metrics import labels_equal
from spiralray.core.spiral import ObjectMask
from spiralray.core.tiling import OverlapComponents, grid_range, object_reach, overlap_components, tile_grid
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.pipeline.local import Options, segment_array


@pytest.fixture(scope="module")
def engine(small_engine):
    return small_engine  # the pipeline's mechanics: the answer is the model's, whatever the model


@pytest.fixture(scope="module")
def shipped():
    return api.load_engine(None)  # where what the model finds matters, and on real frames


def test_tile_grid_covers_the_image_once():
    tiles = tile_grid((700, 1100), 256)
    cover = np.zeros((700, 1100), int)
    for t in tiles:
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (cover == 1).all() and len(tiles) == 3 * 5
    assert [t.key for t in tiles[:2]] == ["00000_00000", "00000_00001"]


def test_grid_range_picks_centres_in_the_span():
    # centres at i * 8 - 2: -2, 6, 14, ...
    assert grid_range(0, 16, -2, 8, 100) == (1, 3)  # 6, 14
    assert grid_range(14, 15, -2, 8, 100) == (2, 3)
    assert grid_range(-50, 5, -2, 8, 100) == (0, 1)


def test_object_reach_bounds_continuation_chains():
    from spiralray.core.config import RegionSpec, SpiralSpec

    assert object_reach(RegionSpec(), SpiralSpec(max_hops=8)) == (9 * 26, 9 * 29)
    assert object_reach(RegionSpec(), SpiralSpec(continuation=False)) == (26, 29)


def _random_objects(rng, n=60, size=200):
    objs = []
    for _ in range(n):
        h, w = rng.integers(5, 30, 2)
        m = rng.random((h, w)) < 0.8
        y0, x0 = rng.integers(0, size - h), rng.integers(0, size - w)
        seed = (y0 + h // 2, x0 + w // 2)
        m[h // 2, w // 2] = True
        objs.append(ObjectMask(seed, float(rng.random()), int(y0), int(x0), m))
    return objs


def test_components_are_independent_of_order_and_resolve_alike():
    rng = np.random.default_rng(0)
    spec = CandidateSpec(min_area=5)
    objs = [p for p in (prepare_object(o, spec) for o in _random_objects(rng)) if p is not None]
    comps = overlap_components(objs)
    assert sum(len(c) for c in comps) == len(objs) and max(len(c) for c in comps) > 2
    key = lambda cs: sorted(tuple(sorted(o.seed for o in c)) for c in cs)  # noqa: E731
    for seed in range(3):  # any arrival order, incrementally: the same components
        order = np.random.default_rng(seed).permutation(len(objs))
        oc = OverlapComponents(cell=17)
        for chunk in np.array_split(order, 5):
            oc.add([objs[i] for i in chunk])
        assert key(oc.pop_closed(np.inf)) == key(comps)
    # resolving each component on its own gives the whole resolve's objects, pixel for pixel
    whole = {o.seed: o for o in resolve_objects(objs, (200, 200), spec)}
    parts = {o.seed: o for c in comps for o in resolve_objects(c, (200, 200), spec)}
    assert whole.keys() == parts.keys()
    for s, o in whole.items():
        p = parts[s]
        assert (o.y0, o.x0) == (p.y0, p.x0) and np.array_equal(o.mask, p.mask)


def test_components_close_once_nothing_can_reach_them():
    a = ObjectMask((5, 5), 0.9, 0, 0, np.ones((10, 10), bool))
    b = ObjectMask((50, 5), 0.9, 45, 0, np.ones((10, 10), bool))
    oc = OverlapComponents()
    oc.add([a, b])
    assert [len(c) for c in oc.pop_closed(30)] == [1] and len(oc) == 1
    assert oc.pop_closed(30) == [] and [len(c) for c in oc.pop_closed(60)] == [1]


def _long_nucleus_scene(h=420, w=560, seed=3):
    """Dense synthetic nuclei plus a 150-px diagonal nucleus centred on the 256-px tile corner,
    in a cleared patch: it needs border continuation and crosses two tile edges."""
    image, _ = generate(SyntheticSpec(h, w, density=0.0009), seed=seed)
    image = image.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    patch = (abs(yy - 256) < 70) & (abs(xx - 256) < 70)
    image[patch] = np.percentile(image, 20)
    u, v = (xx - 256 + yy - 256) / np.sqrt(2), (xx - 256 - yy + 256) / np.sqrt(2)
    long = (u / 75.0) ** 2 + (v / 11.0) ** 2 <= 1
    image[long] = np.percentile(image, 98)
    return image.astype(np.uint16)


def _check_equal(engine, image, sizes, ids="seed"):
    whole = api.segment_image(engine, image, ids=ids).labels
    assert len(np.unique(whole)) > 10
    for size in sizes:
        tiled = segment_array(image, engine, Options(tile_size=size, ids=ids))["labels"]
        eq = labels_equal(tiled, whole)
        assert eq["equal"], (size, eq)
        # same code, same machine: bitwise, ids included (DESIGN section 2)
        assert np.array_equal(tiled, whole), size
    return whole


def test_tiled_equals_whole_on_synthetic_with_long_objects(shipped):
    engine = shipped  # the shipped model follows the long nucleus across the corner
    image = _long_nucleus_scene()
    whole = _check_equal(engine, image, (256, 300, 512))
    seg = engine.segment(image)
    assert max(o.regions for o in seg.objects) > 1  # continuation across region borders happened
    # the long nucleus crosses the tile corner at (256, 256): one object on both sides of both edges
    i = np.bincount(whole[200:312, 200:312][whole[200:312, 200:312] > 0].astype(np.int64)).argmax()
    ys, xs = np.nonzero(whole == i)
    assert ys.min() < 256 <= ys.max() and xs.min() < 256 <= xs.max() and len(ys) > 500


def test_tiled_equals_whole_at_other_offsets(engine):
    image = _long_nucleus_scene(seed=5)
    for dy, dx in ((37, 91), (130, 3)):
        _check_equal(engine, image[dy:, dx:], (256,), ids="sequential")


def test_tiled_equals_whole_on_a_real_frame(shipped, hela):
    images, _ = hela  # with the shipped model, as users run it
    _check_equal(shipped, images[17, 50:610, 100:880], (256, 384))


def test_ids_are_the_same_whatever_the_tile_size(engine):
    image = _long_nucleus_scene(seed=8)
    a = segment_array(image, engine, Options(tile_size=256, ids="seed"))
    b = segment_array(image, engine, Options(tile_size=512, ids="seed"))
    assert np.array_equal(a["labels"], b["labels"]) and a["objects"] == b["objects"] > 10
    seq = segment_array(image, engine, Options(tile_size=256, ids="sequential"))["labels"]
    # sequential ids are 1..N in seed order: a relabelling of the seed ids
    ids = np.unique(a["labels"][a["labels"] > 0])
    assert np.array_equal(np.unique(seq[seq > 0]), np.arange(1, len(ids) + 1))
    for rank, i in enumerate(ids, start=1):
        assert np.array_equal(a["labels"] == i, seq == rank)


def test_tile_size_below_minimum_is_refused(engine):
    from spiralray.errors import SpiralrayError

    with pytest.raises(SpiralrayError, match="minimum"):
        segment_array(np.zeros((300, 300), np.uint16), engine, Options(tile_size=128))
