"""Exact tiling: tiles whose answers, put together, are the whole image's answer (DESIGN section 3).

- **Tiles** are the output chunks (cores) of a raster grid; a candidate belongs to the tile whose
  core holds its seed.
- **Scores and NMS**: a tile scores every grid position within ``nms_reach`` positions of its core,
  in the global score blocks of ``engine.SCORE_BLOCK`` (so its scores are the whole image's, bit
  for bit), and keeps the core's local maxima: every NMS decision for the core sees the same
  neighbours as on the whole image.
- **Regions** (border continuations included) are read from the image itself, never from a tile:
  no object is cut by a tile edge. An object's mask stays within ``object_reach`` of its seed.
- **Resolve**: objects interact only where their prepared masks share pixels, so the connected
  components of that overlap graph are resolved independently (``OverlapComponents``), wherever
  their objects were segmented; a component is complete once no tile still to come can add an
  object touching it.

Pure NumPy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .config import CandidateSpec, RegionSpec, SpiralNetConfig, SpiralSpec
from .regions import grid_shape

MIN_TILE = 256


@dataclass(frozen=True)
class Tile:
    """A tile's core (its output chunk): image rows ``[y0, y1)`` x cols ``[x0, x1)``."""

    ty: int
    tx: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def key(self) -> str:
        return f"{self.ty:05d}_{self.tx:05d}"


def tile_grid(shape: tuple[int, int], size: int) -> list[Tile]:
    """The tiles of an image in raster order (the last row and column may be smaller)."""
    H, W = shape
    return [
        Tile(ty, tx, y, min(y + size, H), x, min(x + size, W))
        for ty, y in enumerate(range(0, H, size))
        for tx, x in enumerate(range(0, W, size))
    ]


def grid_range(lo: int, hi: int, offset: int, stride: int, n: int) -> tuple[int, int]:
    """Grid indices ``[i0, i1)`` whose centres ``i * stride + offset`` lie in ``[lo, hi)``."""
    i0 = -(-(lo - offset) // stride)
    i1 = -(-(hi - offset) // stride)
    return min(max(i0, 0), n), min(max(i1, 0), n)


def nms_reach(spec: CandidateSpec) -> int:
    """Grid positions an NMS decision looks at on each side."""
    return int(np.floor(spec.nms_radius / spec.stride))


def object_reach(region: RegionSpec, spiral: SpiralSpec) -> tuple[int, int]:
    """Bound (rows, cols) on how far an object's pixels lie from its seed: a continuation region
    is centred on its parent's border, at most ``max(c, size - 1 - c)`` from the parent's centre,
    and the chain is at most ``max_hops`` long."""
    cy, cx = region.centre
    hops = spiral.max_hops if spiral.continuation else 0
    step_y, step_x = max(cy, region.height - 1 - cy), max(cx, region.width - 1 - cx)
    return (hops + 1) * step_y, (hops + 1) * step_x


@dataclass(frozen=True)
class TileScoring:
    """What a tile scores: grid rows/cols of its core and of the neighbourhood NMS needs."""

    core_rows: tuple[int, int]
    core_cols: tuple[int, int]
    rows: tuple[int, int]  # scored grid rows (core +- nms reach, clipped to the grid)
    cols: tuple[int, int]


def tile_scoring(tile: Tile, shape: tuple[int, int], cfg: SpiralNetConfig) -> TileScoring:
    r, s = cfg.region, cfg.candidates.stride
    gh, gw = grid_shape(*shape, r, s)
    oy, ox = r.offset
    cr = grid_range(tile.y0, tile.y1, oy, s, gh)
    cc = grid_range(tile.x0, tile.x1, ox, s, gw)
    k = nms_reach(cfg.candidates)
    return TileScoring(
        cr, cc, (max(cr[0] - k, 0), min(cr[1] + k, gh)), (max(cc[0] - k, 0), min(cc[1] + k, gw))
    )


def score_window(rows: tuple[int, int], cols: tuple[int, int], shape, cfg: SpiralNetConfig, block: int):
    """Image box ``(y0, y1, x0, x1)`` (may reach past the image: reflected pixels) holding every
    pixel of the global score blocks (``block`` positions a side) that meet the grid range."""
    r, s = cfg.region, cfg.candidates.stride
    gh, gw = grid_shape(*shape, r, s)
    b0, b1 = (rows[0] // block) * block, min(-(-rows[1] // block) * block, gh)
    c0, c1 = (cols[0] // block) * block, min(-(-cols[1] // block) * block, gw)
    return (
        b0 * s - r.pad,
        (b1 - 1) * s - r.pad + r.height,
        c0 * s - r.pad,
        (c1 - 1) * s - r.pad + r.width,
    )


def core_candidates(scores: np.ndarray, scoring: TileScoring, shape, cfg: SpiralNetConfig):
    """The tile's candidates from its scored neighbourhood ``scores`` (rows x cols of
    ``scoring``): (seeds ``K x 2`` image coords, scores ``K``), seeds in the core only."""
    from .candidates import select_candidates
    from .regions import inside_image

    r, s = cfg.region, cfg.candidates.stride
    oy, ox = r.offset
    ii, jj = np.meshgrid(np.arange(*scoring.rows), np.arange(*scoring.cols), indexing="ij")
    centres = np.stack([ii * s + oy, jj * s + ox], -1)
    idx = select_candidates(scores, inside_image(centres, *shape), cfg.candidates)
    gi, gj = idx[:, 0] + scoring.rows[0], idx[:, 1] + scoring.cols[0]
    core = (
        (gi >= scoring.core_rows[0])
        & (gi < scoring.core_rows[1])
        & (gj >= scoring.core_cols[0])
        & (gj < scoring.core_cols[1])
    )
    idx = idx[core]
    return centres[idx[:, 0], idx[:, 1]].reshape(-1, 2), scores[idx[:, 0], idx[:, 1]]


def _box(o) -> tuple[int, int, int, int]:
    return o.y0, o.y0 + o.mask.shape[0], o.x0, o.x0 + o.mask.shape[1]


def masks_touch(a, b) -> bool:
    """Whether two objects' masks share a pixel."""
    ay0, ay1, ax0, ax1 = _box(a)
    by0, by1, bx0, bx1 = _box(b)
    y0, y1, x0, x1 = max(ay0, by0), min(ay1, by1), max(ax0, bx0), min(ax1, bx1)
    if y1 <= y0 or x1 <= x0:
        return False
    return bool(
        np.any(
            a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
            & b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        )
    )


class OverlapComponents:
    """Connected components of the overlap graph of (prepared) object masks, built as objects
    arrive in any order. Memory: the open components' objects plus a cell index of them.

    ``add(objects)``; ``pop_closed(limit)`` returns (and forgets) every component whose pixels
    all lie above row ``limit``, in the order of their first seed (row, col).
    """

    def __init__(self, cell: int = 128):
        self.cell = cell
        self.objects: dict[int, object] = {}
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}  # root -> object keys
        self.bottom: dict[int, int] = {}  # root -> max y1 of its members
        self.cells: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.next = 0
        self.largest = 0  # most objects ever in one component

    def _find(self, k: int) -> int:
        root = k
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[k] != root:  # path compression
            self.parent[k], k = root, self.parent[k]
        return root

    def _cells(self, o):
        y0, y1, x0, x1 = _box(o)
        c = self.cell
        return [(i, j) for i in range(y0 // c, (y1 - 1) // c + 1) for j in range(x0 // c, (x1 - 1) // c + 1)]

    def add(self, objects) -> None:
        for o in objects:
            k = self.next
            self.next += 1
            self.objects[k], self.parent[k] = o, k
            self.members[k], self.bottom[k] = [k], _box(o)[1]
            near = set().union(*(self.cells[c] for c in self._cells(o)))
            for other in near:
                if masks_touch(o, self.objects[other]):
                    self._union(k, other)
            for c in self._cells(o):
                self.cells[c].add(k)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        self.bottom[ra] = max(self.bottom[ra], self.bottom.pop(rb))
        self.largest = max(self.largest, len(self.members[ra]))

    def pop_closed(self, limit: float) -> list[list]:
        done = [root for root, bottom in self.bottom.items() if bottom <= limit]
        out = []
        for root in done:
            keys = self.members.pop(root)
            del self.bottom[root]
            comp = [self.objects.pop(k) for k in keys]
            for k, o in zip(keys, comp, strict=True):
                for c in self._cells(o):
                    self.cells[c].discard(k)
                    if not self.cells[c]:
                        del self.cells[c]
                del self.parent[k]
            self.largest = max(self.largest, len(comp))
            out.append(sorted(comp, key=lambda o: o.seed))
        return sorted(out, key=lambda comp: comp[0].seed)

    def __len__(self) -> int:
        return len(self.objects)


def overlap_components(objects) -> list[list]:
    """All connected components of the overlap graph of ``objects`` at once."""
    oc = OverlapComponents()
    oc.add(objects)
    return oc.pop_closed(np.inf)
