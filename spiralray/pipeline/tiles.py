"""Tile work, independent of how it is scheduled: score a tile, pick its candidates, segment
candidates (of one tile or many) reading every region from the image itself, and the compact
record of a tile's objects that a resumed run reloads.
"""

from __future__ import annotations

import numpy as np

from ..core.candidates import prepare_object
from ..core.config import SpiralNetConfig
from ..core.engine import SCORE_BLOCK
from ..core.outline import context_box, reads_image, refine_objects
from ..core.prepare import to_channels
from ..core.regions import reflect_index
from ..core.resample import resample_window, scaled_shape
from ..core.spiral import ObjectMask, segment_objects
from ..core.tiling import Tile, core_candidates, score_window, tile_scoring
from ..data.normalize import apply_stats, filled, working_dtype


class WindowSource:
    """Normalised pixels ``C x h x w`` of any image box, reflected past the image's borders
    (``np.pad(mode="symmetric")``'s values, so a region near the border sees what the whole
    image's padded array holds). Read windows are kept until ``clear()``; a region outside all
    of them triggers one read of the box around the regions that need it."""

    def __init__(self, reader, stats: tuple[float, float], cfg: SpiralNetConfig):
        self.reader, self.stats, self.cfg = reader, stats, cfg
        self.windows: list[tuple[int, int, np.ndarray]] = []  # (y0, x0, C x h x w)
        self.pixels_read = 0

    def window(self, y0: int, y1: int, x0: int, x1: int, keep: bool = True) -> np.ndarray:
        H, W = self.reader.shape
        rows, cols = reflect_index(np.arange(y0, y1), H), reflect_index(np.arange(x0, x1), W)
        ry0, ry1, rx0, rx1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        raw = self.reader.read(ry0, ry1, rx0, rx1)
        self.pixels_read += raw.size
        raw = raw[np.ix_(rows - ry0, cols - rx0)]
        x = to_channels(apply_stats(raw, self.stats), self.cfg.model.in_channels)
        if keep:
            self.windows.append((y0, x0, x))
        return x

    def _find(self, y0: int, x0: int, h: int, w: int):
        for wy, wx, x in self.windows:
            if wy <= y0 and wx <= x0 and y0 + h <= wy + x.shape[1] and x0 + w <= wx + x.shape[2]:
                return x[:, y0 - wy : y0 - wy + h, x0 - wx : x0 - wx + w]
        return None

    def regions(self, centres: np.ndarray) -> np.ndarray:
        """Regions centred on ``centres`` (``M x 2`` image coords): ``M x C x h x w`` float32."""
        r = self.cfg.region
        cy, cx = r.centre
        c = np.asarray(centres, np.int64).reshape(-1, 2)
        out = np.empty((len(c), self.cfg.model.in_channels, r.height, r.width), np.float32)
        boxes = [(y - cy, y - cy + r.height, x - cx, x - cx + r.width) for y, x in c.tolist()]
        self.read_around(boxes)  # one read for regions close together
        for k, (y0, y1, x0, x1) in enumerate(boxes):
            got = self._find(y0, x0, y1 - y0, x1 - x0)
            if got is None:  # scattered: one small read each
                self.window(y0, y1, x0, x1)
                got = self._find(y0, x0, y1 - y0, x1 - x0)
            out[k] = got
        return out

    def read_around(self, boxes: list[tuple[int, int, int, int]]) -> None:
        """Keep one window holding the image boxes ``(y0, y1, x0, x1)`` that no kept window holds,
        when they lie close together (their joint box at most 4x their summed areas): regions of
        a batch, or the surroundings of its objects, which hold seeds from anywhere."""
        todo = [b for b in boxes if self._find(b[0], b[2], b[1] - b[0], b[3] - b[2]) is None]
        if not todo:
            return
        y0, y1 = min(b[0] for b in todo), max(b[1] for b in todo)
        x0, x1 = min(b[2] for b in todo), max(b[3] for b in todo)
        if (y1 - y0) * (x1 - x0) <= 4 * sum((b[1] - b[0]) * (b[3] - b[2]) for b in todo):
            self.window(y0, y1, x0, x1)

    def plane(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The first channel's normalised pixels of an image box, ``h x w``: from a kept window
        when one holds the box, else read (and not kept)."""
        got = self._find(y0, x0, y1 - y0, x1 - x0)
        return (got if got is not None else self.window(y0, y1, x0, x1, keep=False))[0]

    def clear(self) -> None:
        self.windows.clear()


class ScaledReader:
    """The image resampled by ``scale`` (``core.resample``), read by window like the reader it
    wraps: ``h x w`` in its ``working_dtype``, the whole image's numbers whatever the window."""

    def __init__(self, reader, scale: float):
        self.reader, self.scale = reader, scale
        self.shape = scaled_shape(reader.shape, scale)
        self.dtype = working_dtype(reader.dtype)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return resample_window(self.reader.read, self.reader.shape, self.scale, (y0, y1), (x0, x1))


def source_for(reader, plan, cfg: SpiralNetConfig) -> WindowSource | None:
    """Where an image's tiles read their pixels (None for a constant image: nothing to find)."""
    if plan.stats is None:
        return None
    reader = filled(reader, plan.pad_value, plan.stats)  # padding reads as background, before resampling
    return WindowSource(reader if plan.scale == 1 else ScaledReader(reader, plan.scale), plan.stats, cfg)


def score_tile(engine, source: WindowSource, tile: Tile, shape, cfg: SpiralNetConfig):
    """(seeds ``K x 2``, scores ``K``) of the candidates whose seeds lie in the tile's core."""
    scoring = tile_scoring(tile, shape, cfg)
    if scoring.rows[0] >= scoring.rows[1] or scoring.cols[0] >= scoring.cols[1]:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    y0, y1, x0, x1 = score_window(scoring.rows, scoring.cols, shape, cfg, SCORE_BLOCK)
    win = source.window(y0, y1, x0, x1, keep=False)
    scores = engine.score_grid(win, (-y0, -x0), scoring.rows, scoring.cols, shape)
    return core_candidates(scores, scoring, shape, cfg)


def seg_margin(cfg: SpiralNetConfig) -> int:
    """Pixels read around a tile's core for segmenting: its seeds' regions and most of their
    first continuations; anything farther is read on demand."""
    r = cfg.region
    return 2 * max(r.height, r.width)


def segment_candidates(engine, source: WindowSource, seeds: np.ndarray, scores: np.ndarray, shape, cfg):
    """Objects (prepared for the resolve; None where the seed fell outside its mask or the object
    was dropped as faint) of ``seeds``, border continuations read from the image wherever they
    lead, outlines refined against the image around each (``core.outline``, as
    ``core.segment.refined`` does)."""
    if not len(seeds):
        return []
    objects = segment_objects(
        seeds, scores, lambda c: engine.masks_of(source.regions(c)), shape, cfg.region, cfg.spiral
    )
    prepared = [prepare_object(o, cfg.candidates) for o in objects]
    level, faint = cfg.candidates.outline_level, cfg.candidates.faint
    source.read_around([context_box(o, shape) for o in prepared if reads_image(o, level, faint)])
    return refine_objects(prepared, source.plane, shape, level, faint)


def segment_tiles(engine, source: WindowSource, work: list[tuple[Tile, np.ndarray, np.ndarray]], shape, cfg):
    """Segment the candidates of several tiles in one batched spiral: {tile key: objects}."""
    m = seg_margin(cfg)
    for tile, seeds, _ in work:
        if len(seeds):
            source.window(tile.y0 - m, tile.y1 + m, tile.x0 - m, tile.x1 + m)
    seeds = np.concatenate([s for _, s, _ in work]) if work else np.zeros((0, 2), np.int64)
    scores = np.concatenate([s for _, _, s in work]) if work else np.zeros(0, np.float32)
    objects = segment_candidates(engine, source, seeds, scores, shape, cfg)
    out, k = {}, 0
    for tile, s, _ in work:
        out[tile.key] = objects[k : k + len(s)]
        k += len(s)
    return out


def encode(objects: list[ObjectMask | None], n_candidates: int) -> dict[str, np.ndarray]:
    """A tile's objects as flat arrays (bit-packed masks)."""
    objs = [o for o in objects if o is not None]
    bits = [np.packbits(o.mask.ravel()) for o in objs]
    return {
        "candidates": np.array([n_candidates], np.int64),
        "seeds": np.array([o.seed for o in objs], np.int64).reshape(-1, 2),
        "scores": np.array([o.score for o in objs], np.float32),
        "regions": np.array([o.regions for o in objs], np.int32),
        "boxes": np.array([[o.y0, o.x0, *o.mask.shape] for o in objs], np.int64).reshape(-1, 4),
        "offsets": np.cumsum([0] + [len(b) for b in bits]).astype(np.int64),
        "bits": np.concatenate(bits) if bits else np.zeros(0, np.uint8),
    }


def decode(rec: dict[str, np.ndarray]) -> list[ObjectMask]:
    out = []
    for k, (y0, x0, h, w) in enumerate(rec["boxes"].tolist()):
        raw = rec["bits"][rec["offsets"][k] : rec["offsets"][k + 1]]
        mask = np.unpackbits(raw, count=h * w).astype(bool).reshape(h, w)
        seed = tuple(int(v) for v in rec["seeds"][k])
        out.append(ObjectMask(seed, float(rec["scores"][k]), y0, x0, mask, int(rec["regions"][k])))
    return out
