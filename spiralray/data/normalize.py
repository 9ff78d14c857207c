"""Per-image intensity normalisation. Statistics are per image (never per tile), so a tiled
run sees the same numbers as a whole-image run."""

from __future__ import annotations

import numpy as np


def image_stats(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> tuple[float, float]:
    """(lo, hi) intensity bounds: min-max (the thesis) or percentiles (robust across microscopes)."""
    data = np.asarray(image, dtype=np.float32)
    if method == "minmax":
        return float(data.min()), float(data.max())
    if method == "percentile":
        lo, hi = np.percentile(data, [low, high])
        return float(lo), float(hi)
    raise ValueError(f"unknown normalisation '{method}' (use 'percentile' or 'minmax')")


def apply_stats(image: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
    """Map [lo, hi] to [0, 1] as float32 (NumPy 2 would otherwise promote to float64).
    A constant image maps to zeros."""
    lo, hi = stats
    scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
    return ((np.asarray(image, dtype=np.float32) - np.float32(lo)) * scale).astype(np.float32)


def normalize(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> np.ndarray:
    return apply_stats(image, image_stats(image, method, low, high))
