"""The Python API for one in-memory image: what ``spiralray segment`` writes for a small image
and what the Serve application returns, from one function, so the two cannot drift apart.

    from spiralray import api
    result = api.segment_image(api.load_engine(), image)   # image: H x W (or C x H x W + channel)
    result.labels, result.semantic, result.table
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core.objects import object_table, paint
from .core.segment import Segmentation
from .errors import SpiralrayError

IDS = ("sequential", "seed")


@dataclass
class Result:
    labels: np.ndarray  # H x W instance ids: 1..N (uint32) or seed ids (uint32/uint64)
    table: dict  # per-object columns (core.objects.COLUMNS), in seed order
    segmentation: Segmentation

    @property
    def semantic(self) -> np.ndarray:
        """H x W uint8 foreground mask (the semantic output)."""
        return (self.labels > 0).astype(np.uint8)


def load_engine(model: str | None = None, device: str = "auto", batch_size: int = 256, **options):
    """The fast engine for a model (None: the shipped one; a directory; ``models:/NAME@ALIAS``)."""
    from . import modelzoo
    from .core.engine import Engine

    if batch_size < 1:
        raise SpiralrayError(f"batch size must be at least 1, got {batch_size}")
    return Engine(modelzoo.load(model), device=device, batch_size=batch_size, **options)


def segment_image(
    engine, image: np.ndarray, channel: int | None = None, ids: str = "sequential", image_index: int = 0
) -> Result:
    """Segment one image held in memory. ``ids``: "sequential" (1..N in seed order) or "seed"
    (the archive-unique seed ids, ``core.objects``)."""
    if ids not in IDS:
        raise SpiralrayError(f"unknown id scheme {ids!r} (use {' or '.join(IDS)})")
    seg = engine.segment(image, channel=channel)
    shape = seg.labels.shape
    table = object_table(seg.objects, shape, image_index)
    chosen = table["id"] if ids == "sequential" else table["seed_id"]
    dtype = np.uint32 if (len(chosen) == 0 or int(chosen.max()) < 2**32) else np.uint64
    order = np.argsort([_key(o, shape) for o in seg.objects], kind="stable")
    labels = paint([seg.objects[k] for k in order], chosen, shape, dtype)
    return Result(labels, table, seg)


def _key(obj, shape) -> int:
    return int(obj.seed[0]) * int(shape[1]) + int(obj.seed[1])
