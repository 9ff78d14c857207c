"""The order-free candidate rule: which regions are segmented and how masks become objects.

1. Threshold the score map (>= t) and keep its local maxima within a radius (non-maximum
   suppression); equal scores are broken by position (smaller row, then column, wins).
2. Every kept candidate is segmented independently (``spiral.segment_objects``).
3. Objects are resolved greedily in the order (score descending, row, col): a mask keeps only
   its connected component that holds its seed; a mask whose overlap with an accepted object's
   mask exceeds ``overlap`` of the smaller one is a duplicate and dropped, unless its seed lies
   inside that object while its own mask leaves that object's seed out: then the accepted mask
   had swallowed a neighbour (a mask that bled across a touching border), and the neighbour is
   carved out of it. Otherwise it becomes a new object owning its pixels not already owned
   (contested pixels go to the higher score).
4. With ``neck`` > 0, an accepted object whose mask narrows to a neck is split into its lobes
   (``necks.lobes``): a mask that flooded across the seam of two touching nuclei.

The order is a property of the data (scores and positions), never of processing order, so
batching, tiling and worker timing cannot change the labels. Pure NumPy/SciPy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .config import CandidateSpec
from .necks import distance, lobes
from .spiral import ObjectMask


def nms_offsets(radius: float, stride: int) -> list[tuple[int, int]]:
    """Grid offsets within ``radius`` px (the centre excluded)."""
    r = int(np.floor(radius / stride))
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if (dy, dx) != (0, 0) and (dy * stride) ** 2 + (dx * stride) ** 2 <= radius**2
    ]


def select_candidates(scores: np.ndarray, valid: np.ndarray, spec: CandidateSpec) -> np.ndarray:
    """Grid indices ``K x 2`` of the kept candidates, in row-major order.

    scores: ``gh x gw`` score map; valid: ``gh x gw`` bool (centres inside the image). A position
    is kept when its score is >= threshold and it beats every valid neighbour within the radius
    (higher score, or equal score and an earlier position).
    """
    s = np.where(valid, scores, -np.inf).astype(np.float64)
    keep = valid & (s >= spec.threshold)
    gh, gw = s.shape
    big = np.full((gh + 2 * gh, gw + 2 * gw), -np.inf)  # generous -inf border for any offset
    big[gh : 2 * gh, gw : 2 * gw] = s
    for dy, dx in nms_offsets(spec.nms_radius, spec.stride):
        if abs(dy) >= gh or abs(dx) >= gw:
            continue
        other = big[gh + dy : 2 * gh + dy, gw + dx : 2 * gw + dx]
        earlier = (dy, dx) < (0, 0)  # lexicographic: the neighbour comes first in raster order
        keep &= (s > other) | ((s == other) & (not earlier))
    return np.argwhere(keep)


def _seed_component(obj: ObjectMask) -> np.ndarray | None:
    """The connected component (8-connectivity) of the mask that holds the seed, or None."""
    sy, sx = obj.seed[0] - obj.y0, obj.seed[1] - obj.x0
    h, w = obj.mask.shape
    if not (0 <= sy < h and 0 <= sx < w) or not obj.mask[sy, sx]:
        return None
    lab, _ = ndi.label(obj.mask, structure=np.ones((3, 3), bool))
    return lab == lab[sy, sx]


def prepare_object(obj: ObjectMask, spec: CandidateSpec) -> ObjectMask | None:
    """The mask the resolve works with: the connected component that holds the seed, holes
    filled (``spec.fill_holes``); None when the seed is not in the mask. Idempotent, and a
    function of the object alone, so a tile can prepare its objects before any resolve."""
    comp = _seed_component(obj)
    if comp is None:
        return None
    if spec.fill_holes:
        comp = ndi.binary_fill_holes(comp)
    return ObjectMask(obj.seed, obj.score, obj.y0, obj.x0, comp, obj.regions)


def resolve_objects(
    objects: list[ObjectMask], image_shape: tuple[int, int], spec: CandidateSpec
) -> list[ObjectMask]:
    """Greedy, order-free duplicate removal and pixel ownership (see the module docstring).

    Returns the accepted objects in resolution order; each mask holds only the pixels it owns.
    Objects interact only through pixels their prepared masks share, so resolving each
    connected component of the overlap graph on its own gives the same answer (``tiling``).
    Memory: one int32 ownership map over the objects' joint bounding box.
    """
    prepared = [p for p in (prepare_object(o, spec) for o in objects) if p is not None]
    if not prepared:
        return []
    oy = min(o.y0 for o in prepared)
    ox = min(o.x0 for o in prepared)
    fy = max(o.y0 + o.mask.shape[0] for o in prepared)
    fx = max(o.x0 + o.mask.shape[1] for o in prepared)
    owner = np.zeros((fy - oy, fx - ox), np.int32)  # 1 + index into ``kept``; 0 = unowned
    order = sorted(range(len(prepared)), key=lambda i: (-prepared[i].score, *prepared[i].seed))
    kept: list[ObjectMask] = []
    firsts: list[ObjectMask] = []  # each accepted object's own (highest-scoring) mask
    boxes = np.zeros((0, 4), np.int64)
    for i in order:
        obj = prepared[i]
        comp = obj.mask
        area = int(comp.sum())
        y1, x1 = obj.y0 + comp.shape[0], obj.x0 + comp.shape[1]
        hits = np.flatnonzero(
            (boxes[:, 0] < y1) & (boxes[:, 2] > obj.y0) & (boxes[:, 1] < x1) & (boxes[:, 3] > obj.x0)
        )
        dups = [int(k) for k in hits if _overlap(obj, firsts[k], area) > spec.overlap]
        carved = {}  # accepted objects that swallowed this one, without it
        for k in dups if spec.split_swallowed else ():
            rest = _without_swallowed(obj, firsts[k])
            if rest is None:
                break
            carved[k] = rest
        if len(carved) < len(dups):  # a duplicate of some accepted object
            continue
        window = owner[obj.y0 - oy : y1 - oy, obj.x0 - ox : x1 - ox]
        # A swallowed neighbour takes back its whole mask from the objects that swallowed it.
        mine = comp & ((window == 0) | np.isin(window, np.asarray(dups, np.int32) + 1))
        if mine.sum() < spec.min_area:
            continue
        for k in dups:
            firsts[k] = carved[k]
            kept[k] = _carve(kept[k], obj)
            _release(owner, kept[k], k + 1, (oy, ox))
        window[mine] = len(kept) + 1
        firsts.append(obj)
        boxes = np.vstack([boxes, [[obj.y0, obj.x0, y1, x1]]])
        kept.append(ObjectMask(obj.seed, obj.score, obj.y0, obj.x0, mine, obj.regions))
    # Carving can leave an accepted object below the minimum area: it goes too (after the loop,
    # so no other decision depends on it).
    kept = [o for o in kept if o.area >= spec.min_area]
    return split_necks(kept, spec) if spec.neck > 0 else kept


def split_necks(objects: list[ObjectMask], spec: CandidateSpec) -> list[ObjectMask]:
    """Each object split into its lobes (``necks.lobes``), each lobe right after the last.

    The lobe that holds the object's seed keeps the seed, so the object keeps its id (the
    largest lobe keeps it when the seed pixel went to another object). Every other lobe is
    seeded at its deepest pixel that is no other object's seed (seeds are ids), with the
    object's score and no regions of its own. The split depends on each object's mask and on
    seeds inside it, which belong to objects of the same overlap component, so resolving
    components on their own (tiles) still gives the whole image's answer.
    """
    taken = {o.seed for o in objects}
    out = []
    for obj in objects:
        parts = lobes(obj.mask, spec.neck, spec.min_area)
        if parts is None:
            out.append(obj)
            continue
        sy, sx = obj.seed[0] - obj.y0, obj.seed[1] - obj.x0
        h, w = parts.shape
        own = int(parts[sy, sx]) if 0 <= sy < h and 0 <= sx < w else 0
        if own == 0:
            own = int(np.argmax(np.bincount(parts.ravel())[1:])) + 1
        d = distance(obj.mask)
        for k, (ry, rx) in enumerate(ndi.find_objects(parts), start=1):
            piece = parts[ry, rx] == k
            y0, x0 = obj.y0 + ry.start, obj.x0 + rx.start
            if k == own:
                out.append(ObjectMask(obj.seed, obj.score, y0, x0, piece, obj.regions))
                continue
            ys, xs = np.nonzero(piece)
            depth = d[ry, rx][ys, xs]
            for i in np.lexsort((xs, ys, -depth)):
                seed = (y0 + int(ys[i]), x0 + int(xs[i]))
                if seed not in taken:
                    break
            taken.add(seed)
            out.append(ObjectMask(seed, obj.score, y0, x0, piece, 0))
    return out


def _without_swallowed(b: ObjectMask, a: ObjectMask) -> ObjectMask | None:
    """a without b if a swallowed b, else None. a swallowed b when b's seed lies in a's mask but
    a's seed is outside b's mask, and a keeps at least half of b's area without it: two objects,
    a overgrown. (Two masks of one object each hold the other's seed.)"""
    if not a.holds(b.seed) or b.holds(a.seed):
        return None
    rest = _carve(a, b)
    # What a keeps must be an object too, not a rim: a partial second mask of one large
    # object can also leave that object's seed out.
    return rest if rest.area >= 0.5 * b.area else None


def _carve(a: ObjectMask, b: ObjectMask) -> ObjectMask:
    """a without b's pixels, reduced to the component that holds a's seed."""
    mask = a.mask.copy()
    y0, x0 = max(a.y0, b.y0), max(a.x0, b.x0)
    y1 = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    x1 = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    if y1 > y0 and x1 > x0:
        mask[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0] &= ~b.mask[
            y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0
        ]
    comp = _seed_component(ObjectMask(a.seed, a.score, a.y0, a.x0, mask, a.regions))
    return ObjectMask(a.seed, a.score, a.y0, a.x0, mask if comp is None else comp, a.regions)


def _release(owner: np.ndarray, obj: ObjectMask, index: int, origin: tuple[int, int]) -> None:
    """Unown the pixels of ``index`` that its (carved) mask no longer holds; ``owner``'s pixel
    (0, 0) is image pixel ``origin``."""
    h, w = obj.mask.shape
    y0, x0 = obj.y0 - origin[0], obj.x0 - origin[1]
    view = owner[y0 : y0 + h, x0 : x0 + w]
    view[(view == index) & ~obj.mask] = 0


def _overlap(a: ObjectMask, b: ObjectMask, area_a: int) -> float:
    """Intersection of two masks over the smaller one's area."""
    y0, x0 = max(a.y0, b.y0), max(a.x0, b.x0)
    y1 = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    x1 = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0.0
    inter = np.count_nonzero(
        a.mask[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
        & b.mask[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]
    )
    smaller = min(area_a, b.area)
    return inter / smaller if smaller else 0.0


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in the order of the original ids (so still deterministic)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(labels.dtype)
    if ids[0] != 0:
        out += 1
    return out
