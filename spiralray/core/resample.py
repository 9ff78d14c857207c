"""Resampling an image by a scale factor, window by window, with the whole image's numbers.

Pixel centres map as ``source = (i + 0.5) / s - 0.5`` (s > 1 enlarges). Enlarging is bilinear;
shrinking averages the source pixels each output pixel covers (area weights), so small
features are not aliased away. Each output pixel is a fixed-order sum over at most ``K``
source pixels of each axis, a function of its own index alone: a window of the output computed
from a window of the source equals that part of the whole output, bit for bit, which keeps
tiled == whole at any scale. Past the image's edge, sources reflect (symmetric).

Labels go back the other way by nearest neighbour (``to_input``): every input pixel takes the
label of the scaled pixel its centre falls in, so disjoint masks stay disjoint. Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from ..data.normalize import working_dtype
from .regions import reflect_index
from .spiral import ObjectMask


def scaled_size(n: int, s: float) -> int:
    return max(1, int(round(n * s)))


def scaled_shape(shape: tuple[int, int], s: float) -> tuple[int, int]:
    return scaled_size(shape[0], s), scaled_size(shape[1], s)


def taps(i0: int, i1: int, s: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (``K x (i1 - i0)``, float64) of output indices ``[i0, i1)`` of
    an axis of ``n`` source pixels resampled by ``s``."""
    i = np.arange(i0, i1, dtype=np.float64)
    if s >= 1:  # bilinear between the two source pixels around the centre
        p = (i + 0.5) / s - 0.5
        j = np.floor(p)
        f = p - j
        idx = np.stack([j, j + 1]).astype(np.int64)
        w = np.stack([1 - f, f])
    else:  # area: the source interval [i / s, (i + 1) / s) the output pixel covers
        lo, hi = i / s, (i + 1) / s
        k = int(np.ceil(1 / s)) + 1
        j = np.floor(lo)[None, :] + np.arange(k)[:, None]
        w = np.clip(np.minimum(j + 1, hi[None, :]) - np.maximum(j, lo[None, :]), 0, None) * s
        idx = j.astype(np.int64)
    return reflect_index(idx, n), w


def resample_window(read, src_shape: tuple[int, int], s: float, rows: tuple[int, int], cols: tuple[int, int]):
    """Output rows x cols (``h x w``, in the source's ``working_dtype``) of the image resampled
    by ``s``; ``read(y0, y1, x0, x1)`` gives source pixels of the in-image box it is asked for."""
    ri, rw = taps(*rows, s, src_shape[0])
    ci, cw = taps(*cols, s, src_shape[1])
    y0, y1, x0, x1 = int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1
    src = np.asarray(read(y0, y1, x0, x1))
    # float64 for wide data, weights too: float32 weights sum to 1 within 1e-7, which times an
    # offset of 2^40 (not subtracted yet) is 1e5
    ft = working_dtype(src.dtype)
    src, rw, cw = src.astype(ft, copy=False), rw.astype(ft), cw.astype(ft)
    tmp = np.zeros((ri.shape[1], src.shape[1]), ft)
    for k in range(ri.shape[0]):  # fixed order: the same sum whatever the window
        tmp += rw[k][:, None] * src[ri[k] - y0, :]
    out = np.zeros((ri.shape[1], ci.shape[1]), ft)
    for k in range(ci.shape[0]):
        out += cw[k][None, :] * tmp[:, ci[k] - x0]
    return out


def resample(image: np.ndarray, s: float) -> np.ndarray:
    """The whole ``H x W`` image resampled by ``s`` (float32)."""
    a = np.asarray(image)
    H, W = a.shape
    h, w = scaled_shape((H, W), s)
    return resample_window(lambda y0, y1, x0, x1: a[y0:y1, x0:x1], (H, W), s, (0, h), (0, w))


def input_span(a0: int, a1: int, s: float, n_in: int) -> tuple[int, int]:
    """Input indices whose nearest scaled pixel ``floor((y + 0.5) s)`` lies in ``[a0, a1)``."""
    lo = int(np.ceil(a0 / s - 0.5))
    hi = int(np.ceil(a1 / s - 0.5))
    return max(lo, 0), min(hi, n_in)


def nearest(y: np.ndarray, s: float, n_scaled: int) -> np.ndarray:
    return np.clip(np.floor((y + 0.5) * s).astype(np.int64), 0, n_scaled - 1)


def to_input(obj: ObjectMask, s: float, input_shape, scaled: tuple[int, int]) -> ObjectMask:
    """An object found at scale ``s`` at the input's resolution (nearest neighbour). Its seed
    stays the scaled one (what its id is made of)."""
    if s == 1:
        return obj
    h, w = obj.mask.shape
    r0, r1 = input_span(obj.y0, obj.y0 + h, s, input_shape[0])
    c0, c1 = input_span(obj.x0, obj.x0 + w, s, input_shape[1])
    yy = nearest(np.arange(r0, r1), s, scaled[0]) - obj.y0
    xx = nearest(np.arange(c0, c1), s, scaled[1]) - obj.x0
    mask = obj.mask[np.ix_(np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1))]
    mask &= ((yy >= 0) & (yy < h))[:, None] & ((xx >= 0) & (xx < w))[None, :]
    return ObjectMask(obj.seed, obj.score, r0, c0, mask, obj.regions)
