"""``spiralray bench tiles``: tiled == whole on a mosaic of real frames, and what tiling costs.

- Equality: the mosaic (six 700 x 1100 HeLa frames, 2100 x 2200 px) segmented whole in memory
  (``api.segment_image``) and by the tiled path at 256, 512 and 1024 px: DESIGN section 2
  equality, bitwise equality and equal ids (seed ids) for each.
- Overhead: the tiled path at 512 px against the same path as one tile, interleaved repeats,
  medians (a ratio measured side by side, not an absolute time).
- Overlap components: the largest seen on the mosaic and on a confluent synthetic field
  (``SyntheticSpec`` at 4x HeLa's density, touching nuclei), which bounds the assembler's memory.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .. import api
from ..core.metrics import labels_equal
from ..pipeline.local import Options, segment_array
from .engine import machine

FRAMES = (14, 15, 16, 17, 18, 19)


def mosaic(data: str) -> tuple[np.ndarray, str]:
    """3 x 2 real frames (2100 x 2200), or a synthetic field of that size without the data."""
    path = os.path.join(data, "images.tif")
    if os.path.exists(path):
        import tifffile

        frames = [tifffile.imread(path, key=k) for k in FRAMES]
        rows = [np.concatenate(frames[i : i + 2], axis=1) for i in range(0, 6, 2)]
        return np.concatenate(rows, axis=0), f"HeLa frames {FRAMES} as a 3 x 2 mosaic ({data})"
    from ..data.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(2100, 2200, density=0.0003), seed=5)[
        0
    ], "synthetic 2100 x 2200 (HeLa absent)"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_tiles(args) -> dict:
    engine = api.load_engine(None, device=args.device)
    image, source = mosaic(args.data)
    H, W = image.shape
    t_whole, whole = _timed(lambda: api.segment_image(engine, image, ids="seed"))
    sizes = {}
    for size in (256, 512, 1024):
        t, s = _timed(lambda size=size: segment_array(image, engine, Options(tile_size=size, ids="seed")))
        eq = labels_equal(s["labels"], whole.labels)
        sizes[str(size)] = {
            "equal": eq["equal"],
            "identical": bool(np.array_equal(s["labels"], whole.labels)),
            "objects": eq["objects"],
            "differing_pixels": eq["differing_pixels"],
            "seconds": round(t, 2),
            "tiles": s["tiles"],
            "largest_component": s["largest_component"],
        }
    one = -(-max(H, W) // 256) * 256
    times = {"512": [], "one_tile": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        times["512"].append(_timed(lambda: segment_array(image, engine, Options(tile_size=512)))[0])
        times["one_tile"].append(_timed(lambda: segment_array(image, engine, Options(tile_size=one)))[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    dense = _dense_components(engine)
    return {
        "benchmark": "tiles",
        "source": source,
        "shape": [H, W],
        "device": str(engine.device),
        "whole_seconds": round(t_whole, 2),
        "whole_objects": len(whole.segmentation.objects),
        "tile_sizes": sizes,
        "repeats": args.repeats,
        "seconds_512": [round(t, 2) for t in times["512"]],
        "seconds_one_tile": [round(t, 2) for t in times["one_tile"]],
        "overhead_512_vs_one_tile": round(med["512"] / med["one_tile"], 3),
        "dense_components": dense,
        "machine_info": machine(),
    }


def _dense_components(engine) -> dict:
    """Overlap components on a confluent field: how far touching masks chain."""
    from ..data.synthetic import SyntheticSpec, generate

    image, truth = generate(SyntheticSpec(1024, 1024, density=0.0024, max_overlap=0.35), seed=9)
    s = segment_array(image, engine, Options(tile_size=256))
    return {
        "field": "synthetic 1024 x 1024, density 0.0024 / px^2 (12x HeLa), overlap up to 35%",
        "nuclei": int(truth.max()),
        "objects": s["objects"],
        "largest_component": s["largest_component"],
    }
