import numpy as np

from spiralray.core.candidates import (
    nms_offsets,
    relabel_sequential,
    resolve_objects,
    select_candidates,
)
from spiralray.core.config import CandidateSpec
from spiralray.core.spiral import ObjectMask


def test_nms_keeps_local_maxima_and_breaks_ties_by_position():
    spec = CandidateSpec(threshold=0.4, stride=8, nms_radius=12)
    s = np.zeros((6, 6), np.float32)
    s[1, 1] = 0.9
    s[1, 2] = 0.8  # neighbour of a higher score: suppressed
    s[4, 3] = s[4, 4] = 0.7  # a tie: the earlier position wins
    s[0, 5] = 0.3  # below threshold
    kept = select_candidates(s, np.ones_like(s, bool), spec)
    assert [tuple(k) for k in kept] == [(1, 1), (4, 3)]
    valid = np.ones_like(s, bool)
    valid[1, 1] = False  # invalid positions neither win nor suppress
    assert [tuple(k) for k in select_candidates(s, valid, spec)] == [(1, 2), (4, 3)]


def test_nms_offsets_radius():
    assert set(nms_offsets(8, 8)) == {(-1, 0), (1, 0), (0, -1), (0, 1)}
    assert len(nms_offsets(12, 8)) == 8


def _box(seed, score, y0, x0, h, w):
    m = np.ones((h, w), bool)
    return ObjectMask(seed, score, y0, x0, m)


def test_resolve_drops_duplicates_and_gives_contested_pixels_to_higher_score():
    a = _box((10, 10), 0.9, 5, 5, 10, 10)
    dup = _box((11, 11), 0.8, 6, 6, 10, 10)  # overlaps a by 81/100 of the smaller: same object
    b = _box((10, 22), 0.7, 5, 13, 10, 10)  # overlaps a by 20/100: a new object, loses 2 columns
    kept = resolve_objects([b, dup, a], (40, 40), CandidateSpec(min_area=1))
    assert [k.seed for k in kept] == [(10, 10), (10, 22)]
    assert kept[0].area == 100 and kept[1].area == 80


def test_resolve_keeps_seed_component_and_drops_seedless_masks():
    m = np.zeros((10, 20), bool)
    m[2:8, 1:6] = True
    m[2:8, 12:18] = True  # a second blob not connected to the seed
    kept = resolve_objects([ObjectMask((4, 3), 0.9, 0, 0, m)], (10, 20), CandidateSpec(min_area=1))
    assert kept[0].area == 30
    assert resolve_objects([ObjectMask((0, 0), 0.9, 0, 0, m)], (10, 20), CandidateSpec()) == []


def test_relabel_sequential_keeps_id_order():
    lab = np.array([[0, 206, 206], [1, 0, 50]], np.uint32)
    assert np.array_equal(relabel_sequential(lab), [[0, 3, 3], [1, 0, 2]])


def _disks(centres, shape, radius=6):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.any([(yy - y) ** 2 + (xx - x) ** 2 <= radius**2 for y, x in centres], axis=0)


def test_resolve_carves_a_swallowed_neighbour_out_of_an_overgrown_mask():
    shape = (30, 40)
    both = _disks([(15, 12), (15, 24)], shape)  # two touching nuclei
    right = _disks([(15, 24)], shape)
    overgrown = ObjectMask((15, 12), 0.9, 0, 0, both)  # bled into its neighbour
    neighbour = ObjectMask((15, 24), 0.8, 0, 0, right)  # its seed is inside the overgrown mask
    kept = resolve_objects([neighbour, overgrown], shape, CandidateSpec(min_area=10))
    assert [k.seed for k in kept] == [(15, 12), (15, 24)]
    left_disk = _disks([(15, 12)], shape) & ~right
    assert np.array_equal(kept[0].mask, left_disk) and np.array_equal(kept[1].mask, right)
    # The old rule (a duplicate) merges them; so does a second mask that holds both seeds.
    off = CandidateSpec(min_area=10, split_swallowed=False)
    assert [k.seed for k in resolve_objects([neighbour, overgrown], shape, off)] == [(15, 12)]
    twin = ObjectMask((15, 24), 0.8, 0, 0, both)
    assert [k.seed for k in resolve_objects([twin, overgrown], shape, CandidateSpec(min_area=10))] == [
        (15, 12)
    ]


def test_resolve_does_not_split_one_object_into_a_rim():
    shape = (30, 40)
    big = _disks([(15, 18)], shape, radius=10)
    inner = _disks([(15, 19)], shape, radius=9)  # a second mask of it that misses its left edge
    kept = resolve_objects(
        [
            ObjectMask((15, 8), 0.9, 0, 0, big),
            ObjectMask((15, 20), 0.8, 0, 0, inner),
        ],
        shape,
        CandidateSpec(min_area=10),
    )
    assert len(kept) == 1 and kept[0].area == big.sum()


def test_resolve_fills_holes():
    m = _disks([(15, 15)], (30, 30), radius=8)
    m[14:17, 14:17] = False  # a hole, not at the seed
    kept = resolve_objects([ObjectMask((15, 9), 0.9, 0, 0, m)], (30, 30), CandidateSpec(min_area=1))
    assert kept[0].area == _disks([(15, 15)], (30, 30), radius=8).sum()
    off = CandidateSpec(min_area=1, fill_holes=False)
    assert resolve_objects([ObjectMask((15, 9), 0.9, 0, 0, m)], (30, 30), off)[0].area == m.sum()


def test_carved_object_below_min_area_is_dropped():
    """An accepted mask that swallowed a neighbour is carved; if what it keeps is smaller than
    min_area, it is no object any more."""
    a = np.zeros((10, 9), bool)
    a[:, :] = True  # 90 px, seed at (5, 1): bled over its neighbour
    b = np.zeros((10, 9), bool)
    b[:, 3:] = True  # the neighbour: 60 px, its seed inside a's mask
    objs = [ObjectMask((5, 1), 0.9, 0, 0, a), ObjectMask((5, 6), 0.8, 0, 0, b)]
    kept = resolve_objects(objs, (10, 9), CandidateSpec(min_area=40))
    assert [o.seed for o in kept] == [(5, 6)] and kept[0].area == 60
    kept = resolve_objects(objs, (10, 9), CandidateSpec(min_area=30))
    assert sorted(o.area for o in kept) == [30, 60]
