"""An in-memory image made ready for the networks: its 2-D plane chosen (singleton leading axes
dropped, a channel of C x H x W or H x W x C taken), checked, normalised by its per-image
bounds and repeated to the model's channels. Pure NumPy: no torch, so a server's decoder and the
tile readers use the same rules without loading the networks.
"""

from __future__ import annotations

import numpy as np

from ..data.normalize import apply_stats, image_stats
from ..errors import SpiralrayError
from .config import SpiralNetConfig


def squeezed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without its singleton leading axes (T, Z, C of size 1): a 1 x 1 x H x W array
    is an H x W image."""
    return tuple(n for n in shape[:-2] if n != 1) + tuple(shape[-2:])


def channel_axis(shape: tuple[int, ...]) -> int:
    """Which end axis of a 3-D in-memory image holds its channels: the smaller (the first on a
    tie), so C x H x W and H x W x C both read."""
    return 0 if shape[0] <= shape[-1] else len(shape) - 1


def select_plane(image: np.ndarray, channel: int | None = None) -> np.ndarray:
    """Validate an in-memory image and pick its 2-D plane: ``H x W`` (a channel of ``C x H x W``
    or ``H x W x C`` with ``channel``; the smaller end axis is taken as the channel axis)."""
    a = np.asarray(image)
    if a.dtype.kind not in "uifb":
        raise SpiralrayError(f"image has non-numeric dtype {a.dtype}")
    if a.ndim > 2:
        a = a.reshape(squeezed_shape(a.shape))
    if a.ndim == 3 and a.shape[-1] == 1:  # H x W x 1: one channel, saved last
        a = a[..., 0]
    if a.ndim == 2 and channel not in (None, 0):
        raise SpiralrayError(f"channel {channel} out of range: the image is 2-D (one channel)")
    if a.ndim == 3 and channel is not None:
        axis = channel_axis(a.shape)
        if not 0 <= channel < a.shape[axis]:
            raise SpiralrayError(f"channel {channel} out of range: image has {a.shape[axis]} channels")
        a = np.take(a, channel, axis=axis)
    if a.ndim != 2:
        raise SpiralrayError(
            f"image has shape {a.shape}: expected a 2-D image; choose a channel (--channel, channel=)"
        )
    return a


def prepare_image(
    image: np.ndarray,
    cfg: SpiralNetConfig,
    channel: int | None = None,
    stats: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """Validate and normalise one image to ``C x H x W`` float32 (C = model channels).

    Returns None for a constant image (no signal: zero objects is the answer). ``stats`` are
    per-image normalisation bounds computed elsewhere (a tiled run passes the whole image's).
    """
    a = select_plane(image, channel)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise SpiralrayError("image contains NaN or infinite values")
    r = cfg.region
    if a.shape[0] < r.height or a.shape[1] < r.width:
        raise SpiralrayError(
            f"image is {a.shape[0]} x {a.shape[1]} px, smaller than one region ({r.height} x {r.width})"
        )
    m = cfg.model
    stats = stats or image_stats(a, m.norm, m.norm_low, m.norm_high)
    if stats[1] == stats[0]:  # (bounds high first: an inverted image)
        return None
    return to_channels(apply_stats(a, stats), m.in_channels)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``H x W`` normalised -> ``C x H x W`` (a grayscale image repeated for C > 1 models)."""
    return np.repeat(x[None], channels, axis=0) if channels > 1 else x[None]
