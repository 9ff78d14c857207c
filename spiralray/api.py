"""The Python API for one in-memory image: what ``spiralray segment`` writes for a small image
and what the Serve application returns, from one function, so the two cannot drift apart.

    from spiralray import api
    result = api.segment_image(api.load_engine(), image)   # image: H x W (or C x H x W + channel)
    result.labels, result.semantic, result.table
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core.objects import in_micrometers, label_dtype, object_table, paint
from .core.segment import Segmentation
from .errors import SpiralrayError

IDS = ("sequential", "seed")


@dataclass
class Result:
    labels: np.ndarray  # H x W instance ids: 1..N (uint32) or seed ids (uint32/uint64)
    table: dict  # per-object columns (core.objects.COLUMNS), in seed order
    segmentation: Segmentation | None  # the engine's own result (at scale 1), else None
    regions: int = 0  # regions segmented, border continuations included
    scale: float = 1.0  # the image was segmented resampled by this
    diameter: dict | None = None  # how the scale was decided

    @property
    def semantic(self) -> np.ndarray:
        """H x W uint8 foreground mask (the semantic output)."""
        return (self.labels > 0).astype(np.uint8)


def load_engine(model: str | None = None, device: str = "auto", batch_size: int = 256, **options):
    """The fast engine for a model (None: the shipped one; a directory; ``models:/NAME@ALIAS``)."""
    from . import modelzoo
    from .core.engine import Engine

    if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool) or batch_size < 1:
        raise SpiralrayError(f"batch size must be an int of at least 1, got {batch_size!r}")
    return Engine(modelzoo.load(model), device=device, batch_size=batch_size, **options)


def segment_image(
    engine,
    image: np.ndarray,
    channel: int | None = None,
    ids: str = "sequential",
    image_index: int = 0,
    diameter: float | str | None = "auto",
    pad_value: float | None = None,
    pixel_size: float | None = None,
    invert: bool = False,
) -> Result:
    """Segment one image held in memory. ``ids``: "sequential" (1..N in seed order) or "seed"
    (the archive-unique seed ids, ``core.objects``). ``diameter``: the nuclei's size in px, or
    "auto" (estimated): an image whose nuclei are far from the model's size is segmented
    resampled to it, and its labels come back at its own resolution. ``pad_value``: a fill value
    that is not data (0 or nan where the image was stitched, registered or padded), left out of
    the normalisation statistics and read as background. ``pixel_size``: the pixel's side in
    micrometers, which a diameter given as a length ("8um") is converted by. ``invert``: the
    nuclei are darker than the background (brightfield, a stain's absorbance): the image is
    inverted before it is normalised."""
    from .core.prepare import select_plane
    from .io import spacing
    from .io.planes import choose_plane
    from .io.readers import ImageReader
    from .pipeline.local import run_plan
    from .pipeline.plan import make_plan, parse_diameter
    from .pipeline.run import Options

    if ids not in IDS:
        raise SpiralrayError(f"unknown id scheme {ids!r} (use {' or '.join(IDS)})")
    _check_arguments(engine, channel, image_index, diameter, invert)
    image, pad_value = _as_array(image, pad_value)
    if isinstance(diameter, str):  # as the CLI reads it: "auto" in any case, "12px", "8um"
        diameter = parse_diameter(diameter, "diameter")
    plane = select_plane(image, channel)
    if 0 in plane.shape:
        raise SpiralrayError(f"image is {plane.shape[0]} x {plane.shape[1]} px: there is nothing to segment")
    pixel = None
    if pixel_size is not None:
        pixel = None if isinstance(pixel_size, bool) else spacing.make(pixel_size, pixel_size, "µm", "µm")
        if pixel is None:
            raise SpiralrayError(f"pixel_size must be a positive number of micrometers, got {pixel_size!r}")
    reader = ImageReader(
        "memory",
        plane,
        choose_plane(plane.shape, "yx", None, None),
        plane.shape,
        True,
        "memory",
        spacing=pixel,
    )
    opts = Options(
        tile_size=max(256, -(-max(plane.shape) // 256) * 256),
        ids=ids,
        diameter=diameter,
        pad_value=pad_value,
        invert=bool(invert),
    )
    plan = make_plan(reader, engine.cfg, opts.tile_size, image_index, diameter, opts.pad_value, opts.invert)
    if plan.scale != 1 or plan.pad_value is not None or plan.invert or plan.stats is None:
        # the tiled path in one tile: resampling, the padding's fill, the inverted bounds, an
        # image with nothing to find (noise only) and the way back live there
        s = run_plan(reader, plan, engine, opts, None, set())
        return Result(s["labels"], s["table"], None, s["regions"], plan.scale, plan.diameter)
    seg = engine.segment(plane)
    shape = seg.labels.shape
    table = in_micrometers(object_table(seg.objects, shape, image_index), spacing.micrometer_frame(pixel))
    chosen = table["id"] if ids == "sequential" else table["seed_id"]
    dtype = label_dtype(chosen)
    order = np.argsort([_key(o, shape) for o in seg.objects], kind="stable")
    labels = paint([seg.objects[k] for k in order], chosen, shape, dtype)
    return Result(labels, table, seg, seg.n_regions, 1.0, plan.diameter)


def _as_array(image, pad_value):
    """(the image as a NumPy array, pad_value): a torch tensor detached; a masked array's masked
    pixels as NaN, the pad value (they are not data), unless a pad value is given; anything that
    is not an array of numbers, one line."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch, without importing it
        image = image.detach().cpu().numpy()
    if np.ma.isMaskedArray(image) and np.ma.getmaskarray(image).any() and pad_value is None:
        return np.ma.filled(image.astype(np.float64), np.nan), float("nan")
    try:
        return np.asarray(image), pad_value
    except (ValueError, TypeError) as exc:
        raise SpiralrayError(f"image is not an array of numbers: {exc}") from None


def _check_arguments(engine, channel, image_index, diameter, invert) -> None:
    """The arguments' types, before any work (a wrong one would fail after the segmentation,
    or be read as another value: channel=True as channel 1)."""
    from .core.objects import MAX_IMAGES

    def integer(v) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not (hasattr(engine, "cfg") and hasattr(engine, "segment")):
        raise SpiralrayError(f"engine must be what api.load_engine() returns, not {type(engine).__name__}")
    if channel is not None and not integer(channel):
        raise SpiralrayError(f"channel must be an int or None, got {channel!r}")
    if not integer(image_index) or not 0 <= image_index < MAX_IMAGES:
        raise SpiralrayError(f"image_index must be an int in 0-{MAX_IMAGES - 1}, got {image_index!r}")
    if isinstance(diameter, bool):
        raise SpiralrayError(f"diameter must be a number of pixels, a length or 'auto', got {diameter!r}")
    if not isinstance(invert, bool | np.bool_):
        raise SpiralrayError(f"invert must be True or False, got {invert!r}")


def _key(obj, shape) -> int:
    return int(obj.seed[0]) * int(shape[1]) + int(obj.seed[1])
