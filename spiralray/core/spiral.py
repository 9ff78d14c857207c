"""Stage 2: spiral geometry, the reference recursion (the oracle), and border continuation.

The fill loop sees only callables (FFN's lesson): ``predict(image_fov, mask_fov) -> probs``
for the reference recursion, and ``region_masks(centres) -> masks`` for the continuation
driver, so the fast engine reuses every rule here and differs only in arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import RegionSpec, SpiralSpec

# predict: image FoV B x C x h x w, mask FoV B x 3 x h x w -> probabilities B x 3 x h x w
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]
# region_masks: centres M x 2 (image coords) -> central-object masks M x h x w (bool)
RegionMasks = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SpiralGeometry:
    """Where each step's block and field of view lie, in region coordinates.

    blocks: ``K x 2`` block origins (unclipped; edge blocks extend past the region), spiral order.
    fov_offset: offset of the written block inside the field of view (its n x n centre).
    margin: zero margin around the region that every step's field of view needs (the canvas).
    """

    height: int
    width: int
    block: int
    blocks: tuple[tuple[int, int], ...]
    fov_offset: tuple[int, int]
    margin: tuple[int, int]

    @property
    def canvas_shape(self) -> tuple[int, int]:
        return self.height + 2 * self.margin[0], self.width + 2 * self.margin[1]

    def clipped(self, k: int) -> tuple[slice, slice]:
        """Rows and cols of the region that step ``k`` writes (its block clipped to the region)."""
        y, x = self.blocks[k]
        n = self.block
        return slice(max(y, 0), min(y + n, self.height)), slice(max(x, 0), min(x + n, self.width))


def _origin(size: int, n: int, fewest: bool) -> int:
    """Origin of the centre block on an axis of ``size`` px: the block centred on the region
    (``size // 2 - n // 2``), or, with ``fewest``, of the origins whose block still holds the
    centre pixel ``size // 2``, the one needing the fewest blocks to cover the axis (ties: the
    closest to centred). 58 px with n = 8: origin 25 needs 9 block columns (two of them write a
    single column), origin 26 needs 8."""
    centred = size // 2 - n // 2
    if not fewest:
        return centred

    def count(o):  # blocks [o + k n, o + (k + 1) n) meeting [0, size)
        return (o + n - 1) // n + (size - 1 - o) // n + 1

    candidates = range(size // 2 - n + 1, size // 2 + 1)  # blocks holding the centre pixel
    return min(candidates, key=lambda o: (count(o), abs(o - centred), o))


@functools.lru_cache(maxsize=16)
def spiral_geometry(height: int, width: int, block: int, fewest: bool = False) -> SpiralGeometry:
    """Counter-clockwise spiral of n x n blocks from the centre: up, left, down, right, with run
    lengths 1, 1, 2, 2, 3, 3, ...; blocks wholly outside the region are skipped. A 52 x 58 region
    with n = 8 and the centre block centred takes 63 steps (the thesis quotes 48); ``fewest``
    shifts the block grid (the centre pixel stays in the first block) to 56 steps."""
    n = block
    oy, ox = _origin(height, n, fewest), _origin(width, n, fewest)
    # Every block that intersects the region, indexed relative to the centre block.
    a_lo, a_hi = -((oy + n - 1) // n), (height - 1 - oy) // n
    b_lo, b_hi = -((ox + n - 1) // n), (width - 1 - ox) // n
    wanted = {(a, b) for a in range(a_lo, a_hi + 1) for b in range(b_lo, b_hi + 1)}
    order, pos, run = [], (0, 0), 1
    moves = [(-1, 0), (0, -1), (1, 0), (0, 1)]  # up, left, down, right
    order.append(pos)
    k = 0
    while len(order) < len(wanted):
        for _ in range(2):
            dy, dx = moves[k % 4]
            for _ in range(run):
                pos = (pos[0] + dy, pos[1] + dx)
                if pos in wanted:
                    order.append(pos)
            k += 1
        run += 1
    blocks = tuple((oy + a * n, ox + b * n) for a, b in order)
    # Every step's field of view is centred on the block it writes (the network's output centre),
    # whatever the layout: with "fewest" the first one sits a pixel off the region's centre.
    fov = ((height - n) // 2, (width - n) // 2)
    ys = [y - fov[0] for y, _ in blocks]
    xs = [x - fov[1] for _, x in blocks]
    # A field of view starting at y spans [y, y + h): it fits a canvas with margin m iff -m <= y <= m.
    margin = (max(0, -min(ys), max(ys)), max(0, -min(xs), max(xs)))
    return SpiralGeometry(height, width, n, blocks, fov, margin)


def geometry_for(region: RegionSpec, spiral: SpiralSpec) -> SpiralGeometry:
    return spiral_geometry(region.height, region.width, spiral.block, spiral.layout == "fewest")


def reference_region(image: np.ndarray, predict: Predict, geom: SpiralGeometry) -> np.ndarray:
    """Run the spiral over one region, full field of view per step: slow and obviously faithful.

    image: ``C x h x w`` region (normalised). Returns the final object mask ``3 x h x w``
    (probabilities; channel 0 is the central object).
    """
    my, mx = geom.margin
    h, w = geom.height, geom.width
    canvas = np.zeros((image.shape[0], *geom.canvas_shape), np.float32)
    canvas[:, my : my + h, mx : mx + w] = image  # the segmenter never sees pixels outside
    mask = np.zeros((3, *geom.canvas_shape), np.float32)
    fy, fx = geom.fov_offset
    for k, (by, bx) in enumerate(geom.blocks):
        y0, x0 = by - fy + my, bx - fx + mx
        fov = (slice(y0, y0 + h), slice(x0, x0 + w))
        probs = predict(canvas[None, :, fov[0], fov[1]], mask[None, :, fov[0], fov[1]])[0]
        rows, cols = geom.clipped(k)
        mask[:, rows.start + my : rows.stop + my, cols.start + mx : cols.stop + mx] = probs[
            :, rows.start - by + fy : rows.stop - by + fy, cols.start - bx + fx : cols.stop - bx + fx
        ]
    return mask[:, my : my + h, mx : mx + w]


@dataclass
class ObjectMask:
    """One object: its seed region's centre and score, and its mask in image coordinates."""

    seed: tuple[int, int]
    score: float
    y0: int
    x0: int
    mask: np.ndarray  # bool, rows x cols of the object's bounding box
    regions: int = 1  # regions segmented for it (1 + border continuations)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def holds(self, p: tuple[int, int]) -> bool:
        """Whether image pixel ``p`` (row, col) is in the mask."""
        y, x = p[0] - self.y0, p[1] - self.x0
        h, w = self.mask.shape
        return bool(0 <= y < h and 0 <= x < w and self.mask[y, x])


def _region_box(centre, region: RegionSpec) -> tuple[int, int]:
    cy, cx = region.centre
    return int(centre[0]) - cy, int(centre[1]) - cx


def _inside_any(p, boxes, region: RegionSpec) -> bool:
    return any(y <= p[0] < y + region.height and x <= p[1] < x + region.width for y, x in boxes)


def _longest_run(line: np.ndarray) -> tuple[int, int] | None:
    """(start, stop) of the longest run of True in a 1-D array; the first one on ties."""
    if not line.any():
        return None
    padded = np.concatenate([[False], line, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[::2], edges[1::2]
    k = int(np.argmax(stops - starts))
    return int(starts[k]), int(stops[k])


FLOOD_SIDE, FLOOD_BORDER = 0.25, 0.5


def is_flood(mask: np.ndarray) -> bool:
    """mask: ``h x w`` bool, the central object of one region. A flood (out-of-domain input: on a
    quarter HeLa frame inverted, 278 of 310 candidates with v12's thresholds, 180 of 212 with
    v13's) covers at least ``FLOOD_BORDER`` of the region's border
    and ``FLOOD_SIDE`` of each of its four sides, counted past the image's edge too (the region
    holds the reflected image there). At the model's scale no nucleus does: on BBBC039
    validation the few masks that touch all four sides (clumps) cover 8-21% of the least-touched
    side and 31-44% of the border; a long nucleus along the region's diagonal touches all four
    near two corners and covers about a third of the border."""
    sides = (mask[0], mask[-1], mask[:, 0], mask[:, -1])
    border = sum(int(side.sum()) for side in sides) / sum(side.size for side in sides)
    return border >= FLOOD_BORDER and all(side.mean() >= FLOOD_SIDE for side in sides)


def continuation_centres(
    mask: np.ndarray,
    centre: tuple[int, int],
    image_shape: tuple[int, int],
    region: RegionSpec,
    stop_floods: bool = True,
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the central object touches this region's border inside the image.

    mask: ``h x w`` bool central-object mask of the region centred at ``centre``. Only the
    object under the region's centre is followed (the thesis follows *the central object*): a
    piece of the mask not connected to it does not start a continuation. With ``stop_floods``
    (``SpiralSpec.stop_floods``) neither does a flood: an object over half the region's border
    and a quarter of each side (``is_flood``).
    Returns ``(new_centre, beyond)`` per touched side (top, bottom, left, right): the new region
    is centred on the middle of the longest run along that border; ``beyond`` is the pixel just
    outside the border there.
    """
    H, W = image_shape
    ty, tx = _region_box(centre, region)
    h, w = mask.shape
    out: list = []
    cy, cx = region.centre
    if not mask[cy, cx]:
        return out
    pieces, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    mask = pieces == pieces[cy, cx]
    if stop_floods and is_flood(mask):
        return out
    # Clip the border lines to the image: touching the image edge is not a region border.
    c0, c1 = max(0, -tx), min(w, W - tx)
    r0, r1 = max(0, -ty), min(h, H - ty)
    for side in ("top", "bottom", "left", "right"):
        if side in ("top", "bottom"):
            r = 0 if side == "top" else h - 1
            if not (r0 <= r < r1) or c0 >= c1:
                continue
            run = _longest_run(mask[r, c0:c1])
            if run is None:
                continue
            mid = c0 + (run[0] + run[1] - 1) // 2
            new = (ty + r, tx + mid)
            beyond = (new[0] + (-1 if side == "top" else 1), new[1])
        else:
            c = 0 if side == "left" else w - 1
            if not (c0 <= c < c1) or r0 >= r1:
                continue
            run = _longest_run(mask[r0:r1, c])
            if run is None:
                continue
            mid = r0 + (run[0] + run[1] - 1) // 2
            new = (ty + mid, tx + c)
            beyond = (new[0], new[1] + (-1 if side == "left" else 1))
        if 0 <= beyond[0] < H and 0 <= beyond[1] < W:
            out.append((new, beyond))
    return out


def segment_objects(
    seeds: np.ndarray,
    scores: np.ndarray,
    region_masks: RegionMasks,
    image_shape: tuple[int, int],
    region: RegionSpec,
    spiral: SpiralSpec,
) -> list[ObjectMask]:
    """Segment every seed's object, following it across region borders.

    seeds: ``N x 2`` region centres (image coords); scores: ``N``. Works in rounds: every object's
    regions of hop depth d are segmented in one ``region_masks`` call, then each proposes
    continuations in a fixed order (region order, then top/bottom/left/right); a proposal is
    taken when the pixel beyond the border lies in none of the object's regions so far and the
    object has fewer than ``1 + max_hops`` regions. No rule depends on batching.
    """
    n = len(seeds)
    boxes: list[list[tuple[int, int]]] = [[_region_box(s, region)] for s in seeds]
    acc: list[dict[tuple[int, int], np.ndarray]] = [dict() for _ in range(n)]
    todo = [(i, (int(s[0]), int(s[1]))) for i, s in enumerate(seeds)]
    while todo:
        masks = region_masks(np.array([c for _, c in todo], np.int64).reshape(-1, 2))
        proposals: list[tuple[int, tuple[int, int]]] = []
        round_by_object: dict[int, list[tuple[tuple[int, int], np.ndarray]]] = {}
        for (i, c), m in zip(todo, masks, strict=True):
            acc[i][_region_box(c, region)] = m
            round_by_object.setdefault(i, []).append((c, m))
        if spiral.continuation:
            for i, results in round_by_object.items():
                for c, m in results:
                    for new, beyond in continuation_centres(m, c, image_shape, region, spiral.stop_floods):
                        if len(boxes[i]) >= 1 + spiral.max_hops:
                            break
                        if _inside_any(beyond, boxes[i], region):
                            continue
                        boxes[i].append(_region_box(new, region))
                        proposals.append((i, new))
        todo = proposals
    return [
        _union(acc[i], (int(seeds[i][0]), int(seeds[i][1])), float(scores[i]), image_shape) for i in range(n)
    ]


def _union(parts: dict, seed, score, image_shape) -> ObjectMask:
    """Union of an object's region masks, clipped to the image, as a bounding-box mask."""
    H, W = image_shape
    ys = [y for y, _ in parts]
    xs = [x for _, x in parts]
    h, w = next(iter(parts.values())).shape
    y0, x0 = max(min(ys), 0), max(min(xs), 0)
    y1, x1 = min(max(ys) + h, H), min(max(xs) + w, W)
    out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), bool)
    for (ty, tx), m in parts.items():
        sy0, sx0 = max(ty, y0), max(tx, x0)
        sy1, sx1 = min(ty + h, y1), min(tx + w, x1)
        if sy1 > sy0 and sx1 > sx0:
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] |= m[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx]
    return ObjectMask(seed, score, y0, x0, out, regions=len(parts))
