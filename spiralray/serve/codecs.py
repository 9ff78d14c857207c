"""Request bodies to arrays and label images to response bodies: pure functions, no Ray.

Every refusal is a ``RequestError`` carrying the HTTP status and a one-line message that names
the problem. Sizes are checked before any decoding work: the body's length against
``max_bytes``, then the array size the header *declares* against ``max_pixels``, so a small
compressed body cannot expand into a huge array (a decompression bomb) before it is refused.
Nothing here opens a file or a URL: the only input is the request's bytes.
"""

from __future__ import annotations

import io

import numpy as np

from ..core.objects import COLUMNS
from ..core.prepare import channel_axis, squeezed_shape
from ..data.normalize import looks_inverted, pad_text
from ..errors import SpiralrayError

# Content-Type of a request body -> decoder name.
MEDIA_TYPES = {"image/tiff": "tiff", "image/png": "png", "application/x-npy": "npy"}
# format query value -> Content-Type of the response.
FORMATS = {"tiff": "image/tiff", "png": "image/png", "npy": "application/x-npy", "json": "application/json"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> decoded channels (palette -> RGB)


class RequestError(SpiralrayError):
    """A request the client must change: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def media_kind(content_type: str | None) -> str:
    """``tiff``/``png``/``npy`` for a request's Content-Type (parameters ignored), else 415."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not media:
        raise RequestError(415, f"missing Content-Type: send one of {', '.join(MEDIA_TYPES)}")
    if media not in MEDIA_TYPES:
        raise RequestError(415, f"unsupported Content-Type {media!r}: send one of {', '.join(MEDIA_TYPES)}")
    return MEDIA_TYPES[media]


def check_length(n_bytes: int, max_bytes: int) -> None:
    if n_bytes > max_bytes:
        raise RequestError(413, f"request body of {n_bytes} bytes exceeds the limit of {max_bytes} bytes")


def decode(data: bytes, kind: str, max_pixels: int) -> np.ndarray:
    """The image a body holds: ``H x W`` or ``C x H x W`` / ``H x W x C``, any numeric dtype.

    kind: ``tiff`` (first series, as ``tifffile.imread`` reads a file), ``png`` (as
    ``imageio.v3.imread``) or ``npy`` (no pickles). The declared size is checked first.
    """
    if not data:
        raise RequestError(400, "empty request body: send the image's bytes")
    decoder = {"tiff": _tiff, "png": _png, "npy": _npy}[kind]
    try:
        image = decoder(data, max_pixels)
    except RequestError:
        raise
    except Exception as exc:  # whatever the codec library raises, the client sent bad bytes
        raise RequestError(400, f"cannot decode the body as {kind}: {first_line(exc)}") from exc
    check_array(image, max_pixels)
    return image.reshape(squeezed_shape(image.shape))  # as the engine reads it


def check_array(image: np.ndarray, max_pixels: int) -> None:
    """Refuse arrays the engine cannot segment: wrong dtype, dimensionality or size."""
    check_header(tuple(image.shape), image.dtype, max_pixels)


def check_header(shape: tuple[int, ...], dtype, max_pixels: int) -> None:
    """``check_array`` from a header's shape and dtype, before any pixel is read."""
    if np.dtype(dtype).kind not in "uifb":
        raise RequestError(422, f"unsupported dtype {dtype}: send integer, float or bool pixels")
    if len(squeezed_shape(shape)) not in (2, 3):
        raise RequestError(
            422,
            f"image has shape {tuple(shape)}: send a 2-D image, or a 3-D one with ?channel=C or ?plane=Z",
        )
    _check_pixels(shape, max_pixels)


def check_channel(shape: tuple[int, ...], channel: int | None) -> None:
    """A 3-D image needs ?channel=C (which axis holds channels is the engine's rule) or, for a
    stack, ?plane=Z (taken before this check); a 2-D image has no channels to choose."""
    if len(shape) == 3 and channel is None:
        raise RequestError(
            422,
            f"image has shape {tuple(shape)}: choose a channel with ?channel=C, "
            "or a plane of a Z x H x W stack with ?plane=Z",
        )
    if len(shape) == 2 and channel is not None:
        raise RequestError(422, f"?channel={channel} given but the image is 2-D {tuple(shape)}")


def take_plane(image: np.ndarray, plane: int | None, channel: int | None) -> np.ndarray:
    """``Z x H x W`` -> the ``H x W`` plane ``plane`` (a z-stack or time series: its first axis is
    never read as channels, as ?channel would). ``image`` is returned as is without ``plane``."""
    if plane is None:
        return image
    if channel is not None:
        raise RequestError(422, "?plane and ?channel given: a 3-D image is a stack or channels, not both")
    if image.ndim != 3:
        raise RequestError(422, f"?plane={plane} given but the image is {image.ndim}-D {tuple(image.shape)}")
    if channel_axis(image.shape) != 0:  # the engine's rule: the smaller end axis holds channels
        raise RequestError(
            422, f"image of shape {tuple(image.shape)} has channels last (H x W x C): use ?channel=C"
        )
    if plane >= image.shape[0]:
        raise RequestError(422, f"plane {plane} out of range: the stack has {image.shape[0]} planes")
    return np.ascontiguousarray(image[plane])


def _check_pixels(shape, max_pixels: int) -> None:
    n = int(np.prod(shape, dtype=np.int64))
    if n > max_pixels:
        raise RequestError(
            413, f"image of shape {tuple(shape)} has {n} values, over the limit of {max_pixels}"
        )


def _tiff(data: bytes, max_pixels: int) -> np.ndarray:
    import tifffile

    from ..errors import SpiralrayError
    from ..io.readers import one_series

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.series:
            raise RequestError(400, "the TIFF holds no image")
        try:
            series = one_series("the TIFF", tif.series)  # several images: refused, as the CLI does
        except SpiralrayError as exc:
            raise RequestError(422, str(exc)) from None
        _check_pixels(series.shape, max_pixels)
        return series.asarray()


def tiff_pixel_size(data: bytes) -> float | None:
    """The pixel's side in micrometers that a TIFF body's OME or ImageJ metadata records."""
    import tifffile

    from ..io import spacing

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return spacing.pixel_micrometers(spacing.from_tiff(tif))
    except Exception:  # the pixels were decodable; metadata is optional
        return None


def _png(data: bytes, max_pixels: int) -> np.ndarray:
    import imageio.v3 as iio

    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 26:
        raise RequestError(400, "cannot decode the body as png: no PNG signature and header")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    _check_pixels((height, width, PNG_CHANNELS.get(data[25], 4)), max_pixels)
    return np.asarray(iio.imread(data, extension=".png"))


def _npy(data: bytes, max_pixels: int) -> np.ndarray:
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise RequestError(400, f"unsupported .npy format version {version[0]}.{version[1]}")
    check_header(tuple(shape), dtype, max_pixels)  # before any data
    f.seek(0)
    return np.load(f, allow_pickle=False)


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def encode(labels: np.ndarray, fmt: str) -> bytes:
    """Body of a label image ``H x W`` in ``fmt`` (tiff, png or npy).

    TIFF is written as ``spiralray segment`` writes it (zlib, its Software tag: a saved answer is
    recognised as spiralray's output, replaceable with ``--overwrite``); PNG holds at most 16 bits, so
    larger ids are refused (use tiff or npy for them)."""
    buf = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        from ..io.storage import SOFTWARE

        tifffile.imwrite(buf, labels, compression="zlib", software=SOFTWARE)
    elif fmt == "npy":
        np.save(buf, labels, allow_pickle=False)
    elif fmt == "png":
        import imageio.v3 as iio

        if labels.dtype.itemsize > 2 and labels.size and int(labels.max()) >= 1 << 16:
            raise RequestError(
                422, f"ids up to {int(labels.max())} do not fit 16-bit PNG: use format=tiff or npy"
            )
        return iio.imwrite(
            "<bytes>", labels.astype(np.uint16 if labels.dtype.itemsize > 1 else np.uint8), extension=".png"
        )
    else:
        raise RequestError(422, f"unknown image format {fmt!r} (use {', '.join(FORMATS)})")
    return buf.getvalue()


def table_json(table: dict, shape: tuple[int, int]) -> dict:
    """The per-object table (``core.objects.COLUMNS``) as JSON: one record per object, in id order.
    seed ids are 64-bit integers: JavaScript clients should read them as strings or BigInt. A
    value that is not a finite number (the micrometer columns of an uncalibrated image) is null:
    strict JSON has no NaN."""

    def values(column) -> list:
        a = np.asarray(column)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return [v if np.isfinite(v) else None for v in a.tolist()]
        return a.tolist()

    columns = [values(table[c]) for c in COLUMNS]
    objects = [dict(zip(COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]
    return {
        "shape": [int(n) for n in shape],
        "count": len(objects),
        "columns": list(COLUMNS),
        "objects": objects,
    }


def polarity_headers(info: dict | None, invert: bool) -> dict:
    """``X-Polarity`` (``normalize.polarity``: +1 bright nuclei on dark, -1 dark on bright, as
    read) from an image's plan info, and an ``X-Hint`` where the image looks read the wrong way."""
    if not info or info.get("polarity") is None:
        return {}
    headers = {"X-Polarity": f"{info['polarity']:+.3f}"}
    if looks_inverted(info):
        looks, flag = (
            ("bright nuclei", "without invert=true") if invert else ("dark nuclei", "with invert=true")
        )
        hint = f"looks like {looks} (polarity {info['polarity']:+.2f}): if so, try {flag}"
        if info.get("polarity_floor") is not None:
            v = pad_text(info["polarity_floor"])
            hint += f"; if {v} is padding, pad_value={v}"
        headers["X-Hint"] = hint
    return headers
