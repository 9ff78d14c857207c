"""Acquisition shifts of labelled frames: what another microscope would have recorded.

Each shift maps (image ``H x W``, labels ``H x W``) to a new pair; the benchmark segments the
shifted frames with unchanged settings to measure robustness (``spiralray bench compare``).
Pure NumPy / scikit-image; deterministic given the seed.

``SHIFTS`` are the committed benchmark's (unchanged: its results depend on them);
``APPEARANCE_SHIFTS`` mirror what the synthetic generator's appearance features grow (nucleoli,
uneven background, tissue autofluorescence, defocus, a dim 8-bit camera), for choosing models:
``shifted(pairs, shifts=APPEARANCE_SHIFTS)``. ``inverted`` is out of the model's domain on
purpose (dark nuclei on a bright field): ``bench compare`` reports how far the recursion runs there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries
from skimage.transform import rescale

from .appearance import autofluorescence, illumination, low_frequency, nucleoli, smooth_noise


def to_8bit(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Another camera: offset removed, requantised to 8 bits (0.1-99.99 percentile -> 0-255)."""
    lo, hi = np.percentile(image, (0.1, 99.99))
    out = np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 255, 0, 255)
    return np.round(out).astype(np.uint8), labels


def half_magnification(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Half the magnification: nuclei a quarter of the area (anti-aliased image, nearest labels)."""
    small = rescale(image.astype(np.float32), 0.5, order=1, anti_aliasing=True, preserve_range=True)
    lab = labels[::2, ::2][: small.shape[0], : small.shape[1]]
    return np.round(small).astype(image.dtype), lab


def dim_noisy(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A dimmer, noisier acquisition: a quarter of the signal above the background, plus Gaussian
    read noise of 3% of the original signal range."""
    rng = np.random.default_rng(seed)
    x = image.astype(np.float64)
    bg, hi = np.percentile(x, (5, 99.8))
    x = bg + (x - bg) * 0.25 + rng.normal(0, 0.03 * (hi - bg), x.shape)
    return np.clip(np.round(x), 0, np.iinfo(np.uint16).max).astype(np.uint16), labels


SHIFTS = {"8-bit": to_8bit, "half magnification": half_magnification, "dim + noisy": dim_noisy}


def _split(image: np.ndarray):
    """(signal above the background ``H x W`` float64, background level, signal range)."""
    x = image.astype(np.float64)
    bg, hi = np.percentile(x, (5, 99.8))
    return x - bg, bg, max(hi - bg, 1e-9)


def _join(signal: np.ndarray, bg: float, dtype) -> np.ndarray:
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else np.inf
    return np.clip(np.round(signal + bg), 0, top).astype(dtype)


def nucleoli_texture(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Nuclei of another cell line: 1-3 dark nucleoli (half the signal removed) in every
    labelled nucleus and a granular chromatin texture (15%); the labels are unchanged."""
    rng = np.random.default_rng(seed)
    sig, bg, _ = _split(image)
    # Distance to the edge of each nucleus (touching nuclei part at their shared boundary).
    d = ndi.distance_transform_edt(~find_boundaries(labels, mode="inner") & (labels > 0))
    factor = 1 + 0.15 * smooth_noise(rng, labels.shape, 1.0)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None:
            factor[sl] *= nucleoli(
                rng, np.where(labels[sl] == i, d[sl], 0), rng.integers(1, 4), depth=(0.5, 0.5)
            )
    return _join(np.where(labels > 0, sig * factor, sig), bg, image.dtype), labels


def uneven_background(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Uneven illumination (a 50% gradient across the frame, corners 40% darker) and a smooth
    additive haze up to 15% of the signal range."""
    rng = np.random.default_rng(seed)
    sig, bg, amp = _split(image)
    h, w = image.shape
    haze = 0.15 * amp * np.abs(low_frequency(rng, h, w, 3))
    return _join(sig * illumination(rng, h, w, 0.5, 0.4) + haze, bg, image.dtype), labels


def autofluorescent(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A tissue section's textured autofluorescent background, ~25% of the signal range."""
    rng = np.random.default_rng(seed)
    sig, bg, amp = _split(image)
    af = autofluorescence(rng, *image.shape, zoom=1.0)
    return _join(sig + 0.25 * amp * af / max(np.percentile(af, 99), 1e-9), bg, image.dtype), labels


def defocus(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The whole frame out of focus: Gaussian blur, sigma 2.5 px."""
    return _join(ndi.gaussian_filter(image.astype(np.float64), 2.5), 0.0, image.dtype), labels


def dim_8bit(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A dim 8-bit camera: offset removed, the brightest nuclei at grey level ~40 of 255 (few
    levels per nucleus, dim nuclei only a handful above the background)."""
    lo, hi = np.percentile(image, (0.1, 99.99))
    out = np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 40, 0, 255)
    return np.round(out).astype(np.uint8), labels


def inverted(image: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The intensities reversed within the frame's own range: dark nuclei on a bright field."""
    lo, hi = image.min(), image.max()
    return (hi - (image - lo)).astype(image.dtype), labels


APPEARANCE_SHIFTS = {
    "nucleoli + texture": nucleoli_texture,
    "uneven background": uneven_background,
    "autofluorescent background": autofluorescent,
    "defocus": defocus,
    "8-bit, dim": dim_8bit,
}
# Every in-domain shift by name: the choices of ``bench/calibrate.py --shifts`` and the rows of
# ``bench compare``'s generalisation table (which adds ``inverted``).
ALL_SHIFTS = {**SHIFTS, **APPEARANCE_SHIFTS}


def shifted(pairs, seed: int = 0, shifts=None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Every shift (``shifts``, a name -> function dict; default ``SHIFTS``) applied to every
    pair: ``{shift name: [(image, labels), ...]}``."""
    shifts = SHIFTS if shifts is None else shifts
    return {name: [fn(im, lb, seed + i) for i, (im, lb) in enumerate(pairs)] for name, fn in shifts.items()}
