"""Object ids and the per-object table.

Ids are a function of the object, never of timing or order (DESIGN section 3, invariant 3):
- the **seed id** packs (image index, seed pixel) into a uint64: ``image_index << 40 |
  (row * W + col + 1)``; 40 bits hold images of up to 2^40 - 1 pixels (a 1M x 1M mosaic) and
  24 bits hold 16.7 M images per archive, so ids are unique across an archive with no counter;
- the **sequential id** is 1..N per image in seed order (row-major seed position), the rank of
  the seed id among the image's objects: deterministic, computed from the table alone.

Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpiralrayError
from .spiral import ObjectMask

PIXEL_BITS = 40
MAX_IMAGES = 1 << (64 - PIXEL_BITS)

# Columns of the per-object table, in order; the Parquet file and the JSON table use these names.
COLUMNS = (
    "id",
    "seed_id",
    "seed_y",
    "seed_x",
    "centroid_y",
    "centroid_x",
    "area",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "score",
    "touches_border",
    "regions",
    "scale",
    # in micrometers where the input records its pixel size (NaN where it does not): areas and
    # positions that compare across magnifications, centroids in the image's frame (its offset)
    "area_um2",
    "centroid_y_um",
    "centroid_x_um",
)
PHYSICAL = ("area_um2", "centroid_y_um", "centroid_x_um")


def seed_ids(seeds: np.ndarray, image_shape: tuple[int, int], image_index: int = 0) -> np.ndarray:
    """uint64 seed ids of seeds ``N x 2`` (row, col) in an image of ``image_shape``."""
    H, W = (int(n) for n in image_shape)
    if H * W >= 1 << PIXEL_BITS:
        raise SpiralrayError(f"image of {H} x {W} px is too large for 40-bit pixel ids")
    if not 0 <= image_index < MAX_IMAGES:
        raise SpiralrayError(f"image index {image_index} out of range (at most {MAX_IMAGES - 1})")
    s = np.asarray(seeds, np.uint64).reshape(-1, 2)
    return (np.uint64(image_index) << np.uint64(PIXEL_BITS)) | (
        s[:, 0] * np.uint64(W) + s[:, 1] + np.uint64(1)
    )


def sequential_ids(seed_id: np.ndarray) -> np.ndarray:
    """1..N (uint32 when it fits) in seed order: the rank of each seed id among ``seed_id``."""
    seed_id = np.asarray(seed_id, np.uint64)
    ranks = np.empty(len(seed_id), np.uint64)
    ranks[np.argsort(seed_id, kind="stable")] = np.arange(1, len(seed_id) + 1, dtype=np.uint64)
    return ranks.astype(np.uint32) if len(seed_id) < 2**32 else ranks


def label_dtype(ids: np.ndarray) -> np.dtype:
    """A label image's dtype for ``ids``: uint64 for seed ids (uint64 arrays, whatever their
    values: every image of an archive gets one dtype), uint32 for sequential ids (which are
    uint64 only past 2^32 objects)."""
    return np.dtype(np.uint64) if np.asarray(ids).dtype == np.uint64 else np.dtype(np.uint32)


def touches_border(obj: ObjectMask, image_shape: tuple[int, int]) -> bool:
    """Whether any mask pixel lies in the image's first or last row or column."""
    H, W = image_shape
    h, w = obj.mask.shape
    rows, cols = obj.mask.any(1), obj.mask.any(0)
    return bool(
        (obj.y0 == 0 and rows[0])
        or (obj.y0 + h == H and rows[-1])
        or (obj.x0 == 0 and cols[0])
        or (obj.x0 + w == W and cols[-1])
    )


def object_table(
    objects: list[ObjectMask],
    image_shape: tuple[int, int],
    image_index: int = 0,
    scale: float = 1.0,
    id_shape: tuple[int, int] | None = None,
) -> dict:
    """Columns (``COLUMNS``, NumPy arrays of length N) of resolved objects, sorted by seed id.

    ``id`` is the sequential id; ``seed_id`` the archive-unique one. Masks are at the image's
    resolution (``image_shape``); bbox is half-open (y0, x0, y1, x1), centroid the pixel mean
    (float64). Objects segmented at ``scale`` carry their seed in the scaled image
    (``id_shape``), which their seed id is made of; ``seed_y``/``seed_x`` report it at the
    image's resolution.
    """
    n = len(objects)
    seeds = np.array([o.seed for o in objects], np.int64).reshape(n, 2)
    sid = seed_ids(seeds, id_shape or image_shape, image_index)
    order = np.argsort(sid, kind="stable")
    cols: dict[str, list] = {
        k: [] for k in COLUMNS if k not in ("id", "seed_id", "seed_y", "seed_x", "scale", *PHYSICAL)
    }
    for k in order:
        o = objects[k]
        ys, xs = np.nonzero(o.mask)
        cols["centroid_y"].append(o.y0 + ys.mean() if len(ys) else np.nan)
        cols["centroid_x"].append(o.x0 + xs.mean() if len(xs) else np.nan)
        cols["area"].append(len(ys))
        cols["bbox_y0"].append(o.y0 + (ys.min() if len(ys) else 0))
        cols["bbox_x0"].append(o.x0 + (xs.min() if len(xs) else 0))
        cols["bbox_y1"].append(o.y0 + (ys.max() + 1 if len(ys) else 0))
        cols["bbox_x1"].append(o.x0 + (xs.max() + 1 if len(xs) else 0))
        cols["score"].append(o.score)
        cols["touches_border"].append(touches_border(o, image_shape))
        cols["regions"].append(o.regions)
    sid = sid[order]
    seeds = seeds[order]
    if scale != 1:
        seeds = np.floor((seeds + 0.5) / scale).astype(np.int64)
    out = {
        "id": sequential_ids(sid),
        "seed_id": sid,
        "seed_y": seeds[:, 0],
        "seed_x": seeds[:, 1],
        "scale": np.full(n, scale, np.float64),
        **{k: np.full(n, np.nan) for k in PHYSICAL},  # ``in_micrometers`` fills them
    }
    dtypes = {"area": np.int64, "touches_border": bool, "regions": np.int32, "score": np.float32}
    for k, v in cols.items():
        out[k] = np.asarray(v, dtypes.get(k, np.int64 if k.startswith("bbox") else np.float64))
    return {k: out[k] for k in COLUMNS}


def in_micrometers(table: dict, frame: tuple[float, float, float, float] | None) -> dict:
    """``table`` with its ``PHYSICAL`` columns from its pixel ones: ``frame`` is (sy, sx, ty, tx),
    the pixel's height and width and pixel (0, 0)'s position, in micrometers (None: unknown,
    the columns stay NaN)."""
    if frame is None:
        return table
    sy, sx, ty, tx = frame
    return {
        **table,
        "area_um2": np.asarray(table["area"], np.float64) * (sy * sx),
        "centroid_y_um": ty + sy * np.asarray(table["centroid_y"], np.float64),
        "centroid_x_um": tx + sx * np.asarray(table["centroid_x"], np.float64),
    }


def paint(objects: list[ObjectMask], ids: np.ndarray, image_shape, dtype) -> np.ndarray:
    """Label image ``H x W`` with ``ids[k]`` on object k's pixels (masks are disjoint)."""
    labels = np.zeros(image_shape, dtype)
    for obj, i in zip(objects, ids, strict=True):
        h, w = obj.mask.shape
        labels[obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w][obj.mask] = i
    return labels
