"""Assembly: tile rows of objects in, output chunks of seed ids out, in bounded memory.

Tile rows arrive in order (each row whole). After row r every object seeded above the row's
bottom edge ``f`` is known, and any object still to come has no pixel above ``f - reach``
(``tiling.object_reach``). So an overlap component whose pixels all lie above that line is
complete: it is resolved on its own (``candidates.resolve_objects``) and its objects wait for
their output chunks. A chunk row is written once nothing still to come or still open can touch
it. Memory: the open components, the resolved objects of unwritten chunk rows, and one chunk.
Components are the only unbounded part: a chain of touching masks as long as the image keeps
its objects open; ``largest_component`` reports the longest seen.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..core.candidates import resolve_objects
from ..core.config import SpiralNetConfig
from ..core.objects import COLUMNS, object_table, seed_ids
from ..core.resample import scaled_shape, to_input
from ..core.tiling import OverlapComponents, Tile, object_reach


class Assembler:
    """``feed(row_index, objects)`` once per tile row in order; ``write(tile, block)`` is
    called once per output chunk with its ``h x w`` uint64 seed ids; ``finish()`` returns the
    per-object table columns (``core.objects.COLUMNS``, sequential ``id`` included).

    Tiles (and the objects fed) live in the image as segmented, resampled by ``scale``; output
    chunks and the table are at the input's resolution (``shape``): each resolved object is
    brought back by nearest neighbour (``resample.to_input``) before it is painted.
    """

    def __init__(
        self, shape, tile_size: int, cfg: SpiralNetConfig, write, image_index: int = 0, scale: float = 1.0
    ):
        self.shape, self.size, self.cfg, self.write = tuple(shape), tile_size, cfg, write
        self.index, self.scale = image_index, scale
        self.scaled = scaled_shape(self.shape, scale)
        self.reach = object_reach(cfg.region, cfg.spiral)[0]
        self.components = OverlapComponents()
        self.pending: dict[int, list] = defaultdict(list)  # chunk row -> resolved objects touching it
        self.next_row = 0  # first chunk row not yet written
        self.rows_fed = 0
        self.parts: list[dict] = []
        self.n_rows = -(-self.scaled[0] // tile_size)  # tile rows (as segmented)
        self.n_chunk_rows = -(-self.shape[0] // tile_size)  # output chunk rows (input resolution)
        self.n_cols = -(-self.shape[1] // tile_size)

    def feed(self, row: int, objects) -> None:
        if row != self.rows_fed:
            raise ValueError(f"tile row {row} fed out of order (expected {self.rows_fed})")
        self.components.add(o for o in objects if o is not None)
        self.rows_fed += 1
        last = self.rows_fed == self.n_rows
        frontier = min(self.rows_fed * self.size, self.scaled[0])
        limit = np.inf if last else frontier - self.reach
        for comp in self.components.pop_closed(limit):
            self._resolved(resolve_objects(comp, self.scaled, self.cfg.candidates))
        self._flush(np.inf if last else limit)

    def _resolved(self, objects) -> None:
        objects = [to_input(o, self.scale, self.shape, self.scaled) for o in objects]
        if self.cfg.candidates.exclude_border:
            from ..core.objects import touches_border

            objects = [o for o in objects if not touches_border(o, self.shape)]
        objects = [o for o in objects if o.mask.any()]
        if not objects:
            return
        self.parts.append(object_table(objects, self.shape, self.index, self.scale, self.scaled))
        for o in objects:
            for c in range(o.y0 // self.size, (o.y0 + o.mask.shape[0] - 1) // self.size + 1):
                self.pending[c].append(o)

    def _flush(self, limit: float) -> None:
        """Write every chunk row that nothing unseen (above ``limit``) or open can still touch
        (both in rows of the image as segmented)."""
        open_top = min((o.y0 for o in self.components.objects.values()), default=np.inf)
        while self.next_row < self.n_chunk_rows:
            bottom = min((self.next_row + 1) * self.size, self.shape[0])
            reaches = int(np.floor((bottom - 0.5) * self.scale)) + 1  # scaled rows it samples
            if reaches > limit or reaches > open_top:
                return
            self._write_row(self.next_row)
            self.next_row += 1

    def _write_row(self, row: int) -> None:
        objects = self.pending.pop(row, [])
        y0 = row * self.size
        y1 = min(y0 + self.size, self.shape[0])
        ids = seed_ids(np.array([o.seed for o in objects], np.int64).reshape(-1, 2), self.scaled, self.index)
        for col in range(self.n_cols):
            x0 = col * self.size
            x1 = min(x0 + self.size, self.shape[1])
            block = np.zeros((y1 - y0, x1 - x0), np.uint64)
            for o, i in zip(objects, ids, strict=True):
                oy1, ox1 = o.y0 + o.mask.shape[0], o.x0 + o.mask.shape[1]
                sy0, sy1, sx0, sx1 = max(o.y0, y0), min(oy1, y1), max(o.x0, x0), min(ox1, x1)
                if sy1 > sy0 and sx1 > sx0:
                    m = o.mask[sy0 - o.y0 : sy1 - o.y0, sx0 - o.x0 : sx1 - o.x0]
                    block[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0][m] = i
            self.write(Tile(row, col, y0, y1, x0, x1), block)

    @property
    def largest_component(self) -> int:
        return self.components.largest

    def finish(self) -> dict:
        if self.rows_fed != self.n_rows:
            raise ValueError(f"{self.n_rows - self.rows_fed} tile rows were never fed")
        if not self.parts:
            return object_table([], self.shape, self.index, self.scale, self.scaled)
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in COLUMNS}
        order = np.argsort(cols["seed_id"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        cols["id"] = np.arange(1, len(order) + 1, dtype=np.uint32 if len(order) < 2**32 else np.uint64)
        return cols
