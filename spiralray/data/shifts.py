"""Acquisition shifts of labelled frames: what another microscope would have recorded.

Each shift maps (image ``H x W``, labels ``H x W``) to a new pair; the benchmark segments the
shifted frames with unchanged settings to measure robustness (``spiralray bench compare``).
Pure NumPy / scikit-image; deterministic given the seed.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import rescale


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


def shifted(pairs, seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Every shift applied to every pair: ``{shift name: [(image, labels), ...]}``."""
    return {name: [fn(im, lb, seed + i) for i, (im, lb) in enumerate(pairs)] for name, fn in SHIFTS.items()}
