"""Splitting a mask that flooded across touching nuclei at its neck (core.necks), and the
resolve step that uses it: ids stay functions of the objects, tiles still agree."""

import numpy as np
import pytest

from spiralray.core.candidates import prepare_object, resolve_objects, split_necks
from spiralray.core.config import CandidateSpec
from spiralray.core.necks import lobes
from spiralray.core.spiral import ObjectMask
from spiralray.core.tiling import overlap_components


def disc(shape, centre, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def pair(scale=1.0, gap=20.0, r1=11.0, r2=10.0):
    """Two discs whose centres are ``gap`` apart (touching and overlapping a little)."""
    s = scale
    shape = (int(50 * s), int(40 * s + gap * s))
    a, b = (25 * s, 18 * s), (25 * s, 18 * s + gap * s)
    return disc(shape, a, r1 * s), disc(shape, b, r2 * s)


def iou(x, y):
    return (x & y).sum() / (x | y).sum()


@pytest.mark.parametrize("scale", [0.75, 1.0, 2.0, 4.0])
def test_two_touching_discs_split_at_their_neck_at_any_size(scale):
    a, b = pair(scale)
    parts = lobes(a | b, neck=0.8, min_area=int(60 * scale**2 * 0.5))
    assert parts is not None and parts.max() == 2
    assert ((parts > 0) == (a | b)).all()  # every pixel goes to a lobe
    # lobe 1 is the deeper one: the larger disc
    assert iou(parts == 1, a) > 0.85 and iou(parts == 2, b) > 0.85


@pytest.mark.parametrize(
    "shape",
    ["disc", "ellipse", "kidney", "wide pair"],
)
def test_one_nucleus_stays_whole(shape):
    yy, xx = np.mgrid[0:80, 0:80]
    if shape == "disc":
        m = disc((80, 80), (40, 40), 20)
    elif shape == "ellipse":  # elongated 3:1 has a flat ridge, no neck
        m = ((yy - 40) / 10.0) ** 2 + ((xx - 40) / 30.0) ** 2 <= 1
    elif shape == "kidney":  # a disc with a shallow bite
        m = disc((80, 80), (40, 40), 22) & ~disc((80, 80), (40, 70), 14)
    else:  # two discs fused along a wide seam: the saddle is most of the peaks
        a, b = pair(gap=12)
        m = a | b
    assert lobes(m, neck=0.8, min_area=60) is None


def test_a_lobe_under_the_minimum_area_is_not_an_object():
    a, b = pair(gap=13, r1=14, r2=4)
    assert lobes(a | b, neck=0.95, min_area=60) is None
    a, b = pair()
    assert lobes(a | b, neck=0.8, min_area=10_000) is None
    assert lobes(a | b, neck=0.0, min_area=60) is None  # neck 0: only pieces apart would split


def test_resolve_splits_a_flooded_mask_and_keeps_the_seed_id():
    a, b = pair()
    seed = (10 + 25, 20 + 18)  # the centre of disc a, in image coordinates
    flooded = ObjectMask(seed, 0.9, 10, 20, a | b)
    spec = CandidateSpec(min_area=60, neck=0.8)
    out = resolve_objects([flooded], (100, 120), spec)
    assert len(out) == 2
    keep, new = out
    assert keep.seed == seed and keep.regions == flooded.regions and new.regions == 0
    assert new.holds(new.seed) and not keep.holds(new.seed)
    # the new lobe is seeded at its deepest pixel: near disc b's centre, in image coordinates
    assert abs(new.seed[0] - (10 + 25)) <= 1 and abs(new.seed[1] - (20 + 38)) <= 1
    assert keep.area + new.area == (a | b).sum()
    # off by default: one object
    assert len(resolve_objects([flooded], (100, 120), CandidateSpec(min_area=60))) == 1


def test_a_new_lobe_never_takes_another_objects_seed():
    a, b = pair()
    flooded = ObjectMask((25, 18), 0.9, 0, 0, a | b)
    deepest = split_necks([flooded], CandidateSpec(min_area=60, neck=0.8))[1].seed
    # another object whose seed pixel is that deepest pixel (its seed went to the flooded mask)
    other = ObjectMask(deepest, 0.5, 0, 70, np.ones((10, 10), bool))
    out = split_necks([flooded, other], CandidateSpec(min_area=60, neck=0.8))
    seeds = [o.seed for o in out]
    assert len(out) == 3 and len(set(seeds)) == 3 and deepest in seeds
    assert out[1].seed != deepest and out[1].holds(out[1].seed)


def test_components_resolve_alike_with_necks():
    """Resolving each overlap component on its own (as tiles do) gives the whole resolve's
    objects, splits included."""
    rng = np.random.default_rng(1)
    objs = []
    for _ in range(40):
        a, b = pair(gap=float(rng.uniform(14, 24)), r1=float(rng.uniform(8, 13)))
        y0, x0 = (int(v) for v in rng.integers(0, 150, 2))
        objs.append(ObjectMask((y0 + 25, x0 + 18), float(rng.random()), y0, x0, a | b))
    spec = CandidateSpec(min_area=40, neck=0.8)
    prepared = [p for p in (prepare_object(o, spec) for o in objs) if p is not None]
    whole = {o.seed: o for o in resolve_objects(prepared, (230, 230), spec)}
    parts = {o.seed: o for c in overlap_components(prepared) for o in resolve_objects(c, (230, 230), spec)}
    assert len(whole) > len(resolve_objects(prepared, (230, 230), CandidateSpec(min_area=40)))
    assert whole.keys() == parts.keys()
    for s, o in whole.items():
        assert (o.y0, o.x0) == (parts[s].y0, parts[s].x0) and np.array_equal(o.mask, parts[s].mask)


def test_tiled_equals_whole_with_necks_on_touching_nuclei():
    """Through the engine and the tile pipeline: lobes are split (new objects with no regions of
    their own) and tiles still give the whole image's labels, ids included."""
    from spiralray import api, modelzoo
    from spiralray.core.engine import Engine
    from spiralray.data.synthetic import SyntheticSpec, generate
    from spiralray.pipeline.local import Options, segment_array

    net = modelzoo.load(None)
    net.config = net.config.replace(candidates={"neck": 0.85})
    engine = Engine(net)
    image, _ = generate(SyntheticSpec(300, 420, density=0.002, max_overlap=0.3), seed=4)
    seg = engine.segment(image)
    assert sum(o.regions == 0 for o in seg.objects) >= 1  # some mask was split at a neck
    whole = api.segment_image(engine, image, ids="seed").labels
    tiled = segment_array(image, engine, Options(tile_size=256, ids="seed"))["labels"]
    assert np.array_equal(tiled, whole)
