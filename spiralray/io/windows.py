"""A source image as a lazy dask array in NGFF axis order, read by windows through its
``ImageReader`` (its retries and chunk-naming errors): a tiled or striped TIFF in whole tiles or
whole-strip row bands near the output chunk, so a file larger than memory streams through; a
PNG or a one-strip TIFF can only be read whole. ``spiralray ingest`` writes these to OME-Zarr."""

from __future__ import annotations

import numpy as np

from ..errors import SpiralrayError
from .planes import Plane
from .readers import ImageReader, redact

BAND_BYTES = 256 * 2**20  # a striped TIFF is read in full-width row bands up to this size


def source_axes(reader: ImageReader) -> str:
    """The reader's axes letters (one per array axis) checked against what NGFF can hold:
    t, c, z at most once each beside y, x; other axes only when 1 long (they are dropped)."""
    axes, shape = reader.plane.axes, reader.array.shape
    bad = [f"{a}={n}" for a, n in zip(axes, shape, strict=True) if a not in "tczyx" and n > 1]
    kept = [a for a, n in zip(axes, shape, strict=True) if a in "tczyx"]
    if bad or len(set(kept)) != len(kept):
        raise SpiralrayError(
            f"{redact(reader.url)} has axes '{axes}' of shape {tuple(shape)}: OME-Zarr holds t, c, z, y, x"
        )
    return axes


class _Window:
    """One 2-D plane as an array dask slices: every window goes through the reader (its retries
    of transient storage errors, its errors naming the chunk)."""

    def __init__(self, reader: ImageReader):
        self.reader, self.shape, self.dtype, self.ndim = reader, reader.shape, reader.dtype, 2

    def __getitem__(self, key):
        (ys, xs), (h, w) = key, self.shape
        y1, x1 = h if ys.stop is None else ys.stop, w if xs.stop is None else xs.stop
        return self.reader.read(ys.start or 0, y1, xs.start or 0, x1)


def _window(reader: ImageReader, chunk: int) -> tuple[int, int]:
    """Rows x cols of one read: whole strips in full-width bands, or whole tiles in squares, near
    ``chunk`` (a band too wide for ``BAND_BYTES`` becomes squares of whole strip pieces)."""
    (h, w), (ch, cw) = reader.shape, reader.chunks
    if reader.whole:
        return h, w
    rows = min(h, max(ch, chunk // ch * ch))
    if cw >= w and rows * w * reader.dtype.itemsize <= BAND_BYTES:
        return rows, w
    return rows, min(w, max(cw, chunk // cw * cw) if cw < w else chunk)


def as_dask(reader: ImageReader, chunk: int):
    """(dask array in NGFF axis order, its axes, read whole?) for the file behind ``reader``:
    T x C x Z x H x W for the axes the file has, e.g. C x H x W or H x W."""
    import dask.array as da

    axes, shape = source_axes(reader), reader.array.shape
    stack = [(i, a) for i, a in enumerate(axes) if a in "tcz"]
    if isinstance(reader.array, np.ndarray):  # PNG / JPEG: decoded whole by the reader
        data = reader.array[tuple(slice(None) if a in "tczyx" else 0 for a in axes)]
        darr, src = da.from_array(data, chunks=-1), "".join(a for a in axes if a in "tczyx")
    else:
        rows, cols = _window(reader, chunk)
        planes = []
        for idx in np.ndindex(*[shape[i] for i, _ in stack]):
            pick = dict(zip([i for i, _ in stack], idx, strict=True))
            index = tuple(slice(None) if a in "yx" else pick.get(i, 0) for i, a in enumerate(axes))
            plane = Plane(axes, index)
            plane = ImageReader(reader.url, reader.array, plane, reader.chunks, reader.whole, reader.kind)
            meta = np.empty((0, 0), reader.dtype)
            planes.append(da.from_array(_Window(plane), chunks=(rows, cols), meta=meta, name=False))
        darr = da.stack(planes).reshape(tuple(shape[i] for i, _ in stack) + reader.shape)
        src = "".join(a for _, a in stack) + "yx"  # open_image refuses x before y
    order = [src.index(a) for a in "tczyx" if a in src]
    return darr.transpose(order), "".join(src[i] for i in order), reader.whole
