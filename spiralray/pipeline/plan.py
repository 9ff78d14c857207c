"""The per-image plan: decisions made once per image, before any tile, and recorded in the
manifest so a resumed run (or any worker) uses the same ones: the normalisation statistics
(exact, streamed over the image's chunks, a named pad value left out), the scale, the tile
grid and the image's index in its archive (which the seed ids carry).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.config import SpiralNetConfig
from ..core.resample import scaled_shape
from ..core.scale import model_diameter
from ..core.tiling import MIN_TILE, Tile, tile_grid
from ..data.noise import NOISE_ONLY, NOISE_RANGE, above_noise, local_peak
from ..data.normalize import count_values, fill_pad, is_pad, polarity, streaming_stats, without_pad
from ..errors import SpiralrayError

VERSION = 1


@dataclass
class ImagePlan:
    input: str  # redacted URL or absolute path
    index: int  # position in the archive's sorted path list (0 for one image)
    shape: tuple[int, int]
    dtype: str
    source: dict  # the reader's description: kind, axes, plane, chunks, missing chunks
    stats: tuple[float, float] | None  # normalisation bounds (high first: inverted); None: constant
    tile_size: int
    scale: float = 1.0  # the image is segmented resampled by this (> 1 enlarges)
    diameter: dict = field(default_factory=dict)  # how the scale was decided (given / estimated)
    extra: dict = field(default_factory=dict)
    pad_value: float | None = None  # fill value that is not data (read as the background, stats[0])
    padded_pixels: int = 0  # how many pixels hold it
    invert: bool = False  # dark nuclei on a bright background: the bounds are high first

    @property
    def scaled_shape(self) -> tuple[int, int]:
        """The shape the networks see (tiles and seeds live here)."""
        return scaled_shape(self.shape, self.scale)

    def tiles(self) -> list[Tile]:
        """Tiles of the image as segmented (at ``scale``)."""
        return tile_grid(self.scaled_shape, self.tile_size)

    def to_dict(self) -> dict:
        return {**asdict(self), "pad_value": pad_json(self.pad_value)}

    @classmethod
    def from_dict(cls, d: dict) -> ImagePlan:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["stats"] = tuple(d["stats"]) if d["stats"] is not None else None
        d["pad_value"] = None if d.get("pad_value") is None else float(d["pad_value"])
        return cls(**d)


def pad_json(pad: float | None):
    """A pad value as JSON holds it: NaN as the string "nan" (strict JSON has no NaN)."""
    return "nan" if pad is not None and np.isnan(pad) else pad


def check_pad_value(pad) -> float | None:
    """A pad value as a float (NaN allowed: registration fills with it), or a clear error."""
    if pad is None:
        return None
    if isinstance(pad, bool | np.bool_):  # True would read as 1
        raise SpiralrayError(f"pad value must be a number (or nan), got {pad!r}")
    try:
        v = float(pad)
    except (TypeError, ValueError, OverflowError):
        raise SpiralrayError(f"pad value must be a number (or nan), got {pad!r}") from None
    if np.isinf(v):
        raise SpiralrayError(f"pad value must be finite (or nan), got {pad}")
    return v


def check_tile_size(tile_size: int) -> None:
    if tile_size < MIN_TILE:
        raise SpiralrayError(f"tile size {tile_size} is below the minimum of {MIN_TILE} px")


def image_stats_of(
    reader, cfg: SpiralNetConfig, pad: float | None = None, invert: bool = False, peak: list | None = None
):
    """(bounds, padded pixels): exact per-image normalisation bounds (None: a constant image,
    or all padding), streamed over the reader's chunk bands, the pad value's pixels left out.
    ``invert``: the bounds of the negated image, high first (its 1st percentile is the image's
    99th), so normalisation maps the bright background to 0 as it maps a dark one. ``peak``
    (a list) receives the image's brightest local means (``noise.local_peak``) from the
    first pass over its chunks."""
    m = cfg.model

    def chunks():
        nonlocal measuring
        for box in reader.windows():
            a = reader.read(*box)
            if a.dtype.kind == "f":
                bad = ~np.isfinite(a)
                if pad is not None:
                    bad &= ~is_pad(a, pad)
                if bad.any():
                    what = "image" if reader.kind == "memory" else reader.describe()["url"]  # no path to name
                    hint = "" if pad is not None else " (if NaN marks padding, name it as the pad value)"
                    raise SpiralrayError(f"{what} contains NaN or infinite values{hint}")
            if measuring:
                peaks.append(local_peak(a, invert, pad))
            yield a
        measuring = False  # one pass measures it; the percentile passes read the chunks again

    peaks, measuring = [], peak is not None
    rest = without_pad(chunks, pad)
    n = count_values(rest)
    if peak is not None and peaks:  # (as stored, above the surface): each band's maximum
        peak.append((max(p[0] for p in peaks), max(p[1] for p in peaks)))
    padded = reader.shape[0] * reader.shape[1] - n
    if n == 0:
        return None, padded
    low, high = (100 - m.norm_high, 100 - m.norm_low) if invert else (m.norm_low, m.norm_high)
    lo, hi = streaming_stats(rest, reader.dtype, m.norm, low, high, n)
    if not hi > lo:
        return None, padded
    return ((hi, lo) if invert else (lo, hi)), padded


def _without_px(text: str) -> str:
    """ "8px", "8 PX" -> "8": a number of pixels that says so; any other text as it is."""
    t = text.strip()
    return t[:-2].strip() if t.lower().endswith("px") else text


def parse_diameter(text: str | None, name: str = "--diameter"):
    """A diameter as a user writes it: "auto" (any case), a number of pixels ("12", "12px"),
    or a length ("8um", "800 nm": converted per image by its recorded pixel size), kept as
    "8 micrometer". ``name`` is how the error names the setting."""
    from ..io.spacing import micrometers, parse_length

    if text is None or str(text).strip().lower() == "auto":
        return "auto"
    text = str(text)
    length = parse_length(text)
    try:
        d = length[0] if length else float(_without_px(text))
    except ValueError:
        raise SpiralrayError(
            f"bad {name} '{text}' (a number of pixels, a length such as 8um, or auto)"
        ) from None
    if not (d > 0 and math.isfinite(d)):
        raise SpiralrayError(f"{name} must be a positive size (or auto), got {text}")
    if length:  # in micrometers, whatever unit it was written in: 13um and 13000nm are one run
        return f"{micrometers(d, length[1]):.12g} micrometer"
    return d


def in_pixels(diameter, reader) -> tuple[float | str | None, str | None]:
    """(the diameter in px or "auto", the length it was given as or None): a length ("8
    micrometer", as ``--diameter 8um`` is kept) is converted by the pixel size the image's
    metadata records, so one command serves an archive of several magnifications."""
    from ..io.spacing import micrometers, parse_length, pixel_micrometers

    if not isinstance(diameter, str) or diameter == "auto":
        return diameter, None
    if _without_px(diameter) != diameter:  # "8px", "8 PX": pixels said so
        return _without_px(diameter), None
    length = parse_length(diameter)
    if length is None:
        return diameter, None
    side = pixel_micrometers(getattr(reader, "spacing", None))
    if side is None:
        if reader.kind == "memory":
            raise SpiralrayError(f"diameter {diameter} needs the pixel size: pass pixel_size= (micrometers)")
        recorded = getattr(reader, "spacing", None)
        if recorded:  # a size without a unit (or one that is not a length): not convertible
            sides = [
                f"{v:g} {u}" if u else f"{v:g} without a unit"
                for v, u in zip(*(recorded[k] for k in ("scale", "unit")), strict=True)
            ]
            said = sides[0] if sides[0] == sides[1] else f"{sides[0]} (y), {sides[1]} (x)"
            raise SpiralrayError(
                f"diameter {diameter} needs the pixel size in a unit of length; "
                f"{reader.describe()['url']} records {said}: give the diameter in px"
            )
        raise SpiralrayError(
            f"diameter {diameter} needs the pixel size, which {reader.describe()['url']} does not "
            "record (OME-Zarr, OME-TIFF or ImageJ metadata): give the diameter in px"
        )
    return micrometers(*length) / side, diameter


def check_diameter(diameter, shape, model: float | None = None) -> None:
    """A clear error for a diameter that no image of ``shape`` can hold, or (given the model's
    trained diameter ``model``) that the resampling range cannot bring to the model's size:
    clamping it instead would segment at a size the user did not ask for, slowly."""
    from ..core.scale import SCALE_RANGE

    if diameter in (None, "auto"):
        return
    try:
        d = float(diameter)
    except (TypeError, ValueError):
        raise SpiralrayError(f"diameter must be a number of pixels or 'auto', got {diameter!r}") from None
    if not np.isfinite(d) or d <= 0:
        raise SpiralrayError(f"diameter must be a positive number of pixels (or auto), got {diameter}")
    if d > min(shape):
        raise SpiralrayError(f"diameter {d:g} px is larger than the {shape[0]} x {shape[1]} px image")
    lo, hi = SCALE_RANGE
    if model and not model / hi <= d <= model / lo:
        raise SpiralrayError(
            f"diameter {d:g} px is outside what this model segments: {model / hi:.4g}-{model / lo:.4g} px"
            f" (nuclei of {model:.3g} px, resampled {1 / lo:g}x down to {hi:g}x up)"
        )


def sample_windows(shape, side: int = 1024, whole: int = 4 * 2**20) -> list[tuple[int, int, int, int]]:
    """Where the diameter is measured: the whole image up to ``whole`` px, else one ``side``^2
    window at the centre of each quadrant (a few reads, whatever the image's size)."""
    H, W = shape
    if H * W <= whole:
        return [(0, H, 0, W)]
    out = []
    for cy in (H // 4, 3 * H // 4):
        for cx in (W // 4, 3 * W // 4):
            y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
            out.append((y0, min(H, y0 + side), x0, min(W, x0 + side)))
    return out


def decide_scale(windows, cfg: SpiralNetConfig, stats, diameter="auto") -> tuple[float, dict]:
    """The scale an image is segmented at, once per image: its nuclei (``diameter`` px, or
    estimated from ``windows``, a sample of the image read at ``sample_windows``, pad pixels
    filled as background) brought to the model's trained diameter."""
    from ..core.scale import choose_scale, estimate_diameter, model_diameter

    model = model_diameter(cfg.model)
    if diameter in (None, "auto"):
        if stats is None:
            return 1.0, {"source": "estimated", "diameter": None, "reason": "constant image", "model": model}
        est = estimate_diameter(windows, stats)
        d = est.diameter if est.confident else None  # a shaky estimate leaves the image as it is
        info = {
            "source": "estimated",
            "diameter": est.diameter,
            "confident": est.confident,
            "objects": est.objects,
            "reason": est.reason,
        }
    else:
        d = float(diameter)
        info = {"source": "given", "diameter": d}
    return choose_scale(d, model), {**info, "model": model}


def make_plan(
    reader,
    cfg: SpiralNetConfig,
    tile_size: int,
    index: int = 0,
    diameter="auto",
    pad_value=None,
    invert: bool = False,
) -> ImagePlan:
    check_tile_size(tile_size)
    H, W = reader.shape
    diameter, given = in_pixels(diameter, reader)
    try:
        check_diameter(diameter, (H, W), model_diameter(cfg.model))
    except SpiralrayError as exc:
        if given is None:
            raise
        raise SpiralrayError(f"{given} is {diameter:.3g} px in this image: {exc}") from None
    pad_value = check_pad_value(pad_value)
    desc = reader.describe()
    if invert and reader.missing_chunks:
        _check_missing_inverted(reader, desc["url"], pad_value)
    peak: list = []
    stats, padded = image_stats_of(reader, cfg, pad_value, invert, peak)
    raw = [reader.read(*w) for w in sample_windows((H, W))] if stats is not None else None
    windows = [fill_pad(a, pad_value, stats[0]) for a in raw] if raw and pad_value is not None else raw
    above = above_noise(raw, peak[0], invert, pad_value) if raw and peak else None
    noise_only = above is not None and above[0] < NOISE_ONLY and above[1] < NOISE_RANGE
    if noise_only:
        stats = None  # an empty field: its stretched noise would be segmented into objects
    scale, info = decide_scale(windows, cfg, stats, diameter)
    tails = polarity(raw, invert, pad_value) if raw else None  # also where noise only: a sparse dark field
    if tails is not None:
        info["polarity"] = round(tails[0], 3)
        if tails[1] is not None:
            info["polarity_floor"] = tails[1]
    if above is not None:
        info["peak_over_noise"], info["range_over_noise"] = round(above[0], 2), round(above[1], 2)
        if noise_only:
            info["reason"] = "noise only"
    if given:
        info["given"] = given
    if padded == H * W:
        info["reason"] = "all padding"
    h, w = scaled_shape((H, W), scale)
    r = cfg.region
    if h < r.height or w < r.width:
        raise SpiralrayError(
            f"image is {H} x {W} px ({h} x {w} at scale {scale:g}), "
            f"smaller than one region ({r.height} x {r.width})"
        )
    return ImagePlan(
        input=desc["url"],
        index=index,
        shape=(H, W),
        dtype=desc["dtype"],
        source=desc,
        stats=stats,
        tile_size=tile_size,
        scale=scale,
        diameter=info,
        pad_value=pad_value,
        padded_pixels=padded,
        invert=bool(invert),
    )


def _check_missing_inverted(reader, url: str, pad_value) -> None:
    """Missing chunks read as the array's fill value (0 mostly): background when the nuclei are
    bright, the brightest signal when inverted. Refused unless the fill is named as padding."""
    fill = getattr(reader.array, "fill_value", None)
    fill = 0.0 if fill is None else float(fill)
    if pad_value is not None and is_pad(np.float64(fill), pad_value):
        return
    raise SpiralrayError(
        f"{url}: {reader.missing_chunks} chunks are missing and read as {fill:g}, which --invert reads"
        f" as the brightest signal: name it as padding (--pad-value {fill:g})"
    )


def weights_hash(net) -> str:
    """sha256 of the model's tensors (names, shapes, bytes): which weights made an output."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
