"""Stage-1 geometry and labels: reflect padding, the crop grid, the reverse distance matrix,
the ground-truth score (thesis formula (2)) and the three-channel segmenter labels.

Pure NumPy. Images are ``C x H x W`` (or ``H x W``); coordinates are (row, col) in pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .config import RegionSpec


def crop_pad(spec: RegionSpec) -> int:
    """Padding that lets a region be centred on any image pixel (>= the thesis's 28 px)."""
    cy, cx = spec.centre
    return max(spec.pad, cy, cx, spec.height - cy, spec.width - cx)


def pad_image(image: np.ndarray, pad: int) -> np.ndarray:
    """Symmetric reflection (edge pixel repeated) of the last two axes by ``pad`` px."""
    widths = [(0, 0)] * (image.ndim - 2) + [(pad, pad), (pad, pad)]
    return np.pad(image, widths, mode="symmetric")


def grid_shape(height: int, width: int, spec: RegionSpec, stride: int) -> tuple[int, int]:
    """Number of regions along each axis of an image padded by ``spec.pad``."""
    rows = (height + 2 * spec.pad - spec.height) // stride + 1
    cols = (width + 2 * spec.pad - spec.width) // stride + 1
    return max(rows, 0), max(cols, 0)


def grid_centres(height: int, width: int, spec: RegionSpec, stride: int) -> np.ndarray:
    """Image coordinates of every grid region's centre, ``gh x gw x 2`` (int64).

    Region (i, j) has its top-left at ``(i * stride, j * stride)`` of the padded image; some
    centres fall in the padding (e.g. row -2 with the thesis's numbers).
    """
    gh, gw = grid_shape(height, width, spec, stride)
    oy, ox = spec.offset
    ys = np.arange(gh) * stride + oy
    xs = np.arange(gw) * stride + ox
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)


def inside_image(centres: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which centres (``... x 2`` image coords) lie inside the image (bool ``...``)."""
    y, x = centres[..., 0], centres[..., 1]
    return (y >= 0) & (y < height) & (x >= 0) & (x < width)


def crop_regions(padded: np.ndarray, pad, centres: np.ndarray, spec: RegionSpec) -> np.ndarray:
    """Regions centred on ``centres`` (N x 2 image coords) cut from an array that holds image
    pixel (0, 0) at ``pad`` (an int, or (row, col) for a window of the image).

    padded: ``C x h x w``. Returns ``N x C x height x width``.
    """
    py, px = (pad, pad) if isinstance(pad, int) else pad
    cy, cx = spec.centre
    out = np.empty((len(centres), padded.shape[0], spec.height, spec.width), padded.dtype)
    for k, (y, x) in enumerate(np.asarray(centres, dtype=np.int64)):
        y0, x0 = y - cy + py, x - cx + px
        if y0 < 0 or x0 < 0 or y0 + spec.height > padded.shape[1] or x0 + spec.width > padded.shape[2]:
            raise ValueError(f"region centred at {(y, x)} lies outside the padded window")
        out[k] = padded[:, y0 : y0 + spec.height, x0 : x0 + spec.width]
    return out


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Image index of coordinates ``idx`` under symmetric reflection (edge pixel repeated) of an
    axis of length ``n``, as ``np.pad(mode="symmetric")`` extends it, any number of times over."""
    m = np.mod(np.asarray(idx, np.int64), 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def reverse_distance_matrix(spec: RegionSpec) -> np.ndarray:
    """``height x width`` float32: 1 at the centre pixel falling linearly to 0 at the far corner.

    Our reading of the thesis: Euclidean distance to ``(h // 2, w // 2)``, normalised by the
    distance to the farthest corner.
    """
    cy, cx = spec.centre
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width]
    dist = np.hypot(yy - cy, xx - cx)
    return np.clip(1.0 - dist / dist.max(), 0.0, 1.0).astype(np.float32)


def centre_slices(spec: RegionSpec) -> tuple[slice, slice]:
    """The central ``c x c`` window of a region (rows, cols)."""
    cy, cx = spec.centre
    half = spec.centre_window // 2
    return slice(cy - half, cy - half + spec.centre_window), slice(cx - half, cx - half + spec.centre_window)


def region_score(mask: np.ndarray, spec: RegionSpec) -> float:
    """Thesis formula (2): ``sum(mask * M)`` over the central c x c window, divided by c^2.

    mask: ``height x width`` foreground (bool or 0/1).
    """
    rows, cols = centre_slices(spec)
    weights = reverse_distance_matrix(spec)[rows, cols]
    return float((mask[rows, cols].astype(np.float32) * weights).sum() / spec.centre_window**2)


def centredness(labels: np.ndarray) -> np.ndarray:
    """``H x W`` float32 in [0, 1]: a pixel's distance to the nearest pixel outside its object
    (background or another object) over the largest such distance in its object; 0 on background.

    labels: ``H x W`` instance ids (0 = background).
    """
    lb = np.asarray(labels)
    border = np.zeros(lb.shape, bool)  # pixels 4-adjacent to another id (background included)
    border[:-1] |= lb[:-1] != lb[1:]
    border[1:] |= lb[1:] != lb[:-1]
    border[:, :-1] |= lb[:, :-1] != lb[:, 1:]
    border[:, 1:] |= lb[:, 1:] != lb[:, :-1]
    dist = ndi.distance_transform_edt((lb > 0) & ~border).astype(np.float32) + (lb > 0)
    ids, inverse = np.unique(lb, return_inverse=True)
    peak = np.asarray(ndi.maximum(dist, lb, ids), np.float32)
    peak[ids == 0] = 1.0
    return dist / peak[inverse.reshape(lb.shape)]


def score_foreground(labels: np.ndarray, kind: str) -> np.ndarray:
    """What formula (2) weighs for the score label ``kind`` ("thesis" or "centred"), ``H x W``."""
    if kind == "thesis":
        return (np.asarray(labels) > 0).astype(np.float32)
    if kind == "centred":
        return centredness(labels)
    raise ValueError(f"unknown score label {kind!r} (expected 'thesis' or 'centred')")


def score_map_truth(foreground: np.ndarray, spec: RegionSpec, stride: int) -> np.ndarray:
    """Ground-truth score of every grid region of an image, ``gh x gw`` float32.

    Equals ``region_score`` of each region cut from the padded foreground; only the central
    window matters, so it is a 25-tap correlation sampled on the grid.
    """
    height, width = foreground.shape
    pad = spec.pad
    fg = pad_image(foreground.astype(np.float32), pad)
    gh, gw = grid_shape(height, width, spec, stride)
    rows, cols = centre_slices(spec)
    weights = reverse_distance_matrix(spec)[rows, cols]
    out = np.zeros((gh, gw), np.float32)
    for dy in range(spec.centre_window):
        for dx in range(spec.centre_window):
            y0, x0 = rows.start + dy, cols.start + dx
            tap = fg[y0 : y0 + (gh - 1) * stride + 1 : stride, x0 : x0 + (gw - 1) * stride + 1 : stride]
            out += weights[dy, dx] * tap
    return out / spec.centre_window**2


def three_channel_labels(labels: np.ndarray, centre: tuple[int, int] | None = None) -> np.ndarray:
    """``3 x h x w`` float32 targets: the instance under the centre / all others / background.

    labels: ``h x w`` instance ids (0 = background) of one region or field of view. With
    background under the centre, channel 0 is empty and every instance counts as "other".
    """
    h, w = labels.shape
    cy, cx = centre if centre is not None else (h // 2, w // 2)
    central = labels[cy, cx]
    out = np.empty((3, h, w), np.float32)
    out[0] = (labels == central) & (central != 0)
    out[1] = (labels != 0) & (labels != central)
    out[2] = labels == 0
    return out


def contact_zone(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Where touching objects meet: ``... x H x W`` bool, True at pixels (object or background)
    with two different instances inside the ``(2 radius + 1)``-square window around them.

    labels: ``... x H x W`` int instance ids (0 = background); leading axes are separate images.
    Merges of touching nuclei start here: a mask that crosses this band floods the neighbour.
    """
    lb = np.asarray(labels)
    lb = lb.astype(np.uint64 if lb.dtype == np.uint64 else np.int64, copy=False)  # room for top
    size = (1,) * (lb.ndim - 2) + (2 * radius + 1,) * 2
    top = lb.dtype.type(lb.max(initial=0) + 1)  # background reads as "no object" to the minimum
    hi = ndi.maximum_filter(lb, size=size, mode="nearest")
    lo = ndi.minimum_filter(np.where(lb > 0, lb, top), size=size, mode="nearest")
    return (lo != top) & (hi != lo)  # an object in the window, and another besides it
