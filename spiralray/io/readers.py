"""Images on storage, read by window: one 2-D plane of a zarr array (v2 or v3), an OME-Zarr image
(NGFF 0.4 or 0.5, level 0 of its multiscales), a TIFF, or a PNG/JPEG; a local path or an
fsspec URL (``s3://`` through the standard AWS environment, ``AWS_ENDPOINT_URL`` included).

Chunked formats (zarr, tiled or striped TIFF, through tifffile's zarr view) read only the chunks
a window needs. A PNG, or a TIFF stored as one compressed strip, can only be read whole: the
reader says so (``whole``), and ``spiralray ingest`` converts such files to chunked OME-Zarr.

Every failure a user can fix (missing object, unknown protocol, missing filesystem package,
credentials, corrupt chunk, non-image array) raises ``SpiralrayError`` with one line naming the
object. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SpiralrayError
from . import spacing
from .planes import Plane, choose_plane, grey_of_colour, resolve_channel
from .retry import retrying
from .zarr_axes import array_axes, channel_names, ome_axes, ome_xml_channel_names

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg", ".bmp")
WHOLE_WARN_PIXELS = 64 * 2**20  # beyond this, reading a file whole is worth a warning


def is_url(path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def local(path) -> str:
    s = str(path)
    return s[len("file://") :] if s.startswith("file://") else s


def suffix(path) -> str:
    """The file extension, lower case: a URL's without its query string; a local path's whole
    (a file may be named 'a?b.tif')."""
    s = str(path)
    return Path(s.split("?", 1)[0] if is_url(s) else local(s)).suffix.lower()


def redact(url: str) -> str:
    """A URL without credentials or query string (what a manifest may record)."""
    s = str(url)
    if "://" not in s:
        return os.path.abspath(s)
    proto, rest = s.split("://", 1)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    host, _, path = rest.partition("/")
    host = host.rsplit("@", 1)[-1]
    return f"{proto}://{host}/{path}" if path else f"{proto}://{host}"


def check_protocol(url: str) -> None:
    """A clear error for an unknown URL protocol or a missing filesystem package."""
    if not is_url(url):
        return
    import fsspec

    proto = str(url).split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(proto)
    except ValueError:
        raise SpiralrayError(f"unknown URL protocol '{proto}://' in {redact(url)}") from None
    except ImportError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise SpiralrayError(f"cannot read {proto}:// URLs: {first}") from None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def is_zarr(path) -> bool:
    s = local(path).rstrip("/")
    if s.endswith(".zarr") or ".zarr/" in s:
        return True
    return (
        not is_url(s)
        and os.path.isdir(s)
        and any(os.path.exists(os.path.join(s, m)) for m in ("zarr.json", ".zarray", ".zgroup"))
    )


class ImageReader:
    """One 2-D plane of an image on storage. ``read(y0, y1, x0, x1)`` returns ``h x w`` in the
    stored dtype; ``shape`` is (H, W); ``chunks`` the natural read unit (rows, cols)."""

    def __init__(
        self,
        url: str,
        array,
        plane: Plane,
        chunks,
        whole: bool,
        kind: str,
        missing: int = 0,
        keep=None,
        spacing: dict | None = None,
    ):
        self.url, self.array, self.plane, self.kind = url, array, plane, kind
        self.data_url = url  # where its pixels are stored: the file, or the zarr array (level 0)
        self.software = None  # the program that wrote it, where the format records one (TIFF)
        ys = [n for a, n in zip(plane.axes, array.shape, strict=True) if a == "y"]
        xs = [n for a, n in zip(plane.axes, array.shape, strict=True) if a == "x"]
        self.shape = (int(ys[0]), int(xs[0]))
        self.dtype = np.dtype(array.dtype)
        self.chunks = chunks
        self.whole = whole
        self._missing = missing  # a count, or a function that lists the store on first use
        self._objects = None  # the stored objects' listing (stored_objects), taken once
        self._keep = keep  # open file handles the array reads through
        self.spacing = spacing  # physical pixel size (io.spacing), None when the metadata has none
        if self.dtype.kind not in "uifb":
            raise SpiralrayError(f"{redact(url)} holds {self.dtype} data, not a numeric image")

    @property
    def missing_chunks(self) -> int:
        """Chunks of the plane that are not stored (read as the fill value)."""
        if callable(self._missing):
            self._missing = int(self._missing())
        return self._missing

    def stored(self, storage_options: dict | None = None) -> dict | None:
        """The objects stored under ``data_url`` (``io.storage.stored_objects``), listed once:
        the missing-chunk count and the content stamp read the same listing."""
        if self._objects is None:
            from .storage import stored_objects

            self._objects = stored_objects(self.data_url, storage_options) or {}
        return self._objects or None

    def stamp(self, storage_options: dict | None = None) -> str | None:
        """A digest of the input's stored bytes (``io.storage.stamp_of``); None where unknown."""
        from .storage import stamp_of

        return stamp_of(self.stored(storage_options))

    def _index(self, y0, y1, x0, x1):
        out = []
        for a, k in zip(self.plane.axes, self.plane.index, strict=True):
            out.append(slice(y0, y1) if a == "y" else slice(x0, x1) if a == "x" else k)
        return tuple(out)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        H, W = self.shape
        if not (0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
            raise ValueError(f"window {(y0, y1, x0, x1)} outside the {H} x {W} image")
        index = self._index(y0, y1, x0, x1)
        try:
            return retrying(lambda: np.asarray(self.array[index]))
        except SpiralrayError:
            raise
        except Exception as exc:
            raise SpiralrayError(f"cannot read {self._where(y0, y1, x0, x1)}: {one_line(exc)}") from exc

    def _where(self, y0, y1, x0, x1) -> str:
        """The object a failed read names: the first chunk of the window that fails alone."""
        ch, cw = self.chunks
        for y in range(y0 - y0 % ch, y1, ch):
            for x in range(x0 - x0 % cw, x1, cw):
                try:
                    np.asarray(self.array[self._index(y, min(y + ch, y1), x, min(x + cw, x1))])
                except Exception:
                    y1c, x1c = min(y + ch, self.shape[0]), min(x + cw, self.shape[1])
                    return f"{redact(self.url)} chunk at rows {y}-{y1c}, cols {x}-{x1c}"
        return f"{redact(self.url)} rows {y0}-{y1}, cols {x0}-{x1}"

    def windows(self, target_pixels: int = 16 * 2**20) -> Iterator[tuple[int, int, int, int]]:
        """Chunk-aligned boxes covering the image, about ``target_pixels`` each (row bands)."""
        H, W = self.shape
        ch = self.chunks[0]
        rows = max(ch, (target_pixels // max(W, 1)) // ch * ch)
        for y in range(0, H, rows):
            yield y, min(y + rows, H), 0, W

    def describe(self) -> dict:
        return {
            "url": redact(self.url),
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "axes": self.plane.axes,
            "plane": [k if isinstance(k, int) else None for k in self.plane.index],
            "array_shape": [int(n) for n in self.array.shape],  # the plane's place in a stack
            "chunks": list(self.chunks),
            "whole": self.whole,
            "missing_chunks": self.missing_chunks,
            **({"spacing": self.spacing} if self.spacing else {}),
        }


def open_zarr(url: str, channel, plane, storage_options=None) -> ImageReader:
    import zarr

    try:
        node = zarr.open(local(url), mode="r", storage_options=storage_options if is_url(url) else None)
    except Exception as exc:
        raise SpiralrayError(f"cannot open {redact(url)} as zarr: {one_line(exc)}") from exc
    axes, kind, pixel = None, "zarr", None
    names = None
    if isinstance(node, zarr.Group):
        names = channel_names(dict(node.attrs))
        ms, axes = ome_axes(dict(node.attrs))
        if ms is None:
            raise SpiralrayError(
                f"{redact(url)} is a zarr group, not an image: name an array or image inside it"
            )
        pixel = spacing.from_ngff(ms)
        try:
            node = node[ms["datasets"][0]["path"]]
        except Exception as exc:
            raise SpiralrayError(
                f"{redact(url)}: level 0 of its multiscales cannot be opened: {one_line(exc)}"
            ) from exc
        kind = "ome-zarr " + str(
            dict(node.attrs).get("ome", {}).get("version", "") or ms.get("version", "0.5")
        )
    if not hasattr(node, "shape") or len(node.shape) < 2:
        raise SpiralrayError(
            f"{redact(url)} is an array of shape {getattr(node, 'shape', None)}, not an image"
        )
    if kind == "zarr":  # an array named directly: a level of an OME-Zarr image, or its own names
        axes, pixel = array_axes(url, node, storage_options)
    channel = resolve_channel(channel, names, redact(url))
    p = choose_plane(tuple(node.shape), axes, channel, plane)
    chunks = tuple(int(c) for a, c in zip(p.axes, node.chunks, strict=True) if a in "yx")
    reader = ImageReader(url, node, p, chunks, whole=False, kind=kind.strip(), spacing=pixel)
    if kind != "zarr":  # an OME-Zarr image: its level 0 array
        reader.data_url = f"{str(url).rstrip('/')}/{ms['datasets'][0]['path']}"
    # counted only when asked (a plan, --strict): an actor opening the image to read its tiles
    # lists nothing
    reader._missing = lambda: _missing(node, p, reader.stored(storage_options))
    return reader


def _missing(node, p: Plane, objects: dict | None = None) -> int:
    """Chunks of the chosen plane that are not stored (read as the fill value): the plane's keys
    looked up in one listing of the array's objects (``objects``, keyed '/c/0/1'; else zarr's
    own listing). Other planes' and channels' empty chunks are not this run's. (zarr has no
    public per-region count: where its private helpers differ, the whole array's count is
    taken.)"""
    try:
        if objects is not None:
            stored = {name.lstrip("/") for name in objects}
        else:
            from zarr.core.array import _shards_initialized
            from zarr.core.sync import sync

            stored = set(sync(_shards_initialized(node._async_array)))
        unit = node.shards or node.chunks  # the stored object's extent
        origin = [0 if a in "yx" else k // u for a, k, u in zip(p.axes, p.index, unit, strict=True)]
        extent = [-(-n // u) if a in "yx" else 1 for a, n, u in zip(p.axes, node.shape, unit, strict=True)]
        per_object = int(np.prod([u // c for u, c in zip(unit, node.chunks, strict=True)]))
        keys = node._iter_shard_keys(origin=origin, selection_shape=extent)
        return per_object * sum(k not in stored for k in keys)
    except Exception:
        try:
            return int(node.nchunks) - int(node.nchunks_initialized)
        except Exception:
            return 0


def one_series(name: str, series: list):
    """The file's image (``name``: how an error names the file): its first series, when every
    other is smaller (a slide's thumbnail or label). A file of several images of its size
    (positions of an OME-TIFF) or whose first is a preview is refused: segmenting one of them
    silently would answer another question."""

    def plane(s) -> list[int]:  # H, W (the last two axes where they are not named)
        return [int(n) for a, n in zip(s.axes, s.shape, strict=False) if a in "YX"] or list(s.shape[-2:])

    first = series[0]
    if any(np.prod(plane(s)) >= np.prod(plane(first)) for s in series[1:]):
        sizes = ", ".join("x".join(map(str, plane(s))) for s in series[:6])
        raise SpiralrayError(
            f"{name} holds {len(series)} images ({sizes}{', ...' if len(series) > 6 else ''}): "
            "spiralray reads one image per file; save each as its own file"
        )
    return first


def open_tiff(url: str, channel, plane, storage_options=None) -> ImageReader:
    import tifffile
    import zarr

    try:
        if is_url(url):
            import fsspec

            handle = fsspec.open(url, "rb", **(storage_options or {})).open()
            tif = tifffile.TiffFile(handle)
        else:
            handle, tif = None, tifffile.TiffFile(local(url))
        series = one_series(redact(url), tif.series)
        arr = zarr.open(series.aszarr(), mode="r")
        if isinstance(arr, zarr.Group):  # a pyramidal TIFF: level 0
            arr = arr["0"]
        pixel = spacing.from_tiff(tif)
    except SpiralrayError:
        raise
    except Exception as exc:
        raise SpiralrayError(f"cannot read {redact(url)} as a TIFF: {one_line(exc)}") from exc
    axes = series.axes.lower().replace("s", "c").replace("i", "z")  # q: unknown, guessed
    names = ome_xml_channel_names(tif.ome_metadata) if tif.is_ome else None
    p = choose_plane(tuple(arr.shape), axes, resolve_channel(channel, names, redact(url)), plane)
    chunks = tuple(int(c) for a, c in zip(p.axes, arr.chunks, strict=True) if a in "yx")
    shape = tuple(n for a, n in zip(p.axes, arr.shape, strict=True) if a in "yx")
    whole = chunks[0] >= shape[0] and chunks[1] >= shape[1]
    reader = ImageReader(url, arr, p, chunks, whole=whole, kind="tiff", keep=(tif, handle), spacing=pixel)
    reader.software = tif.pages[0].software  # "spiralray": a label image it wrote
    return reader


def open_raster(url: str, channel, plane, storage_options=None) -> ImageReader:
    import imageio.v3 as iio

    try:
        if is_url(url):
            import fsspec

            with fsspec.open(url, "rb", **(storage_options or {})) as f:
                data = f.read()
        else:
            with open(local(url), "rb") as f:
                data = f.read()
        if not data:
            raise SpiralrayError(f"cannot read {redact(url)} as an image: the file is empty (0 bytes)")
        a = np.asarray(iio.imread(data, extension=suffix(url)))
    except SpiralrayError:
        raise
    except Exception as exc:
        raise SpiralrayError(f"cannot read {redact(url)} as an image: {one_line(exc)}") from exc
    channel = resolve_channel(channel, None, redact(url))
    if channel is None and (grey := grey_of_colour(a)) is not None:
        a = grey  # a grey image saved as RGB(A): nothing to choose (--channel C still reads C)
    p = choose_plane(a.shape, None, channel, plane)
    shape = tuple(n for ax, n in zip(p.axes, a.shape, strict=True) if ax in "yx")
    return ImageReader(url, a, p, shape, whole=True, kind="raster")


REACH_HINT = "check the object store's endpoint and credentials"  # after any store it cannot use


def exists(url: str, storage_options=None) -> bool:
    if is_url(url):
        import fsspec

        try:
            fs, p = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
            return fs.exists(p)
        except Exception as exc:
            raise SpiralrayError(f"cannot reach {redact(url)}: {one_line(exc)} ({REACH_HINT})") from exc
    return os.path.exists(local(url))


def open_image(url: str, channel: int | None = None, plane=None, storage_options=None) -> ImageReader:
    """An ``ImageReader`` for any supported image at a path or URL."""
    url = str(url)
    check_protocol(url)
    if not exists(url, storage_options):
        raise SpiralrayError(f"input not found: {redact(url) if is_url(url) else url}")
    if is_zarr(url):
        return open_zarr(url, channel, plane, storage_options)
    ext = suffix(url)
    if ext in TIFF:
        return open_tiff(url, channel, plane, storage_options)
    if ext in RASTER:
        return open_raster(url, channel, plane, storage_options)
    if not is_url(url) and os.path.isdir(local(url)):
        raise SpiralrayError(f"{url} is a directory, not an image (a zarr store needs zarr.json or .zarray)")
    raise SpiralrayError(f"unsupported image format '{ext or 'none'}' for {url} (use .tif, .png or .zarr)")
