"""Synthetic fluorescence nuclei with instance labels: unlimited training and test data.

Irregular ellipses with a spread of sizes and brightness, touching and partly overlapping
(a later nucleus occludes an earlier one, as in a projection), internal texture, blur, uneven
illumination, a camera offset, Poisson + Gaussian noise, low-contrast frames and small
unlabelled artifacts; 16-bit output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class SyntheticSpec:
    height: int = 256
    width: int = 256
    density: float = 0.0012  # nuclei per px^2 (HeLa frames: ~0.0002)
    radius: tuple[float, float] = (7.0, 18.0)  # semi-axis range, px
    elongation: tuple[float, float] = (1.0, 1.8)
    max_overlap: float = 0.25  # fraction of a new nucleus allowed over existing ones
    brightness: tuple[float, float] = (0.35, 1.0)
    contrast: tuple[float, float] = (0.08, 1.0)  # signal amplitude as a fraction of the range
    offset: tuple[float, float] = (100.0, 33000.0)  # camera offset
    noise: tuple[float, float] = (0.01, 0.06)
    artifacts: int = 6
    blur: tuple[float, float] = (0.6, 1.6)


def _nucleus(rng, a: float, b: float, angle: float) -> np.ndarray:
    """A bool mask of an irregular ellipse with semi-axes a, b, centred in its box."""
    r = int(np.ceil(max(a, b) * 1.25)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    theta = np.arctan2(v, u)
    wobble = 1.0
    for k in (2, 3, 5):
        wobble = wobble + rng.uniform(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (u / a) ** 2 + (v / b) ** 2 <= wobble**2


def generate(spec: SyntheticSpec = SyntheticSpec(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image ``H x W`` uint16, labels ``H x W`` int32, 0 = background)."""
    rng = np.random.default_rng(seed)
    H, W = spec.height, spec.width
    labels = np.zeros((H, W), np.int32)
    signal = np.zeros((H, W), np.float32)
    target = rng.poisson(spec.density * H * W)
    placed, tries = 0, 0
    while placed < target and tries < target * 20:
        tries += 1
        a = rng.uniform(*spec.radius)
        b = a / rng.uniform(*spec.elongation)
        m = _nucleus(rng, a, b, rng.uniform(0, np.pi))
        r = m.shape[0] // 2
        cy, cx = rng.integers(-r // 2, H + r // 2), rng.integers(-r // 2, W + r // 2)
        y0, x0 = cy - r, cx - r
        ys, xs = slice(max(y0, 0), min(y0 + m.shape[0], H)), slice(max(x0, 0), min(x0 + m.shape[1], W))
        mm = m[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        if mm.sum() < 20:
            continue
        if (labels[ys, xs][mm] > 0).mean() > spec.max_overlap:
            continue
        placed += 1
        labels[ys, xs][mm] = placed
        # Texture: smooth noise inside the nucleus, brighter rim-to-centre falloff.
        tex = ndi.gaussian_filter(rng.normal(0, 1, mm.shape).astype(np.float32), 1.5)
        level = rng.uniform(*spec.brightness) * (1 + 0.25 * tex)
        signal[ys, xs][mm] = level[mm]
    # Keep only labels that survive occlusion, renumbered 1..N.
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    labels = lut[labels]
    labels = _drop_fragments(labels)
    signal = ndi.gaussian_filter(signal, rng.uniform(*spec.blur))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    illum = 1 + rng.uniform(-0.3, 0.3) * (yy / H - 0.5) + rng.uniform(-0.3, 0.3) * (xx / W - 0.5)
    signal *= illum
    for _ in range(rng.poisson(spec.artifacts * H * W / 256**2)):  # small unlabelled specks
        y, x = rng.integers(0, H), rng.integers(0, W)
        signal[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] += rng.uniform(0.5, 2.0)
    amp = rng.uniform(*spec.contrast) * 20000.0
    counts = np.maximum(signal * amp + rng.uniform(0.02, 0.1) * amp, 0)
    noisy = rng.poisson(counts).astype(np.float32)
    noisy += rng.normal(0, rng.uniform(*spec.noise) * amp, (H, W)).astype(np.float32)
    image = np.clip(noisy + rng.uniform(*spec.offset), 0, 65535).astype(np.uint16)
    return image, labels


def _drop_fragments(labels: np.ndarray, min_area: int = 15) -> np.ndarray:
    """Occlusion can split a nucleus: keep each id's largest piece; drop tiny remnants."""
    out = np.zeros_like(labels)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        cc, n = ndi.label(labels[sl] == i)
        if n == 0:
            continue
        sizes = np.bincount(cc.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if sizes[k - 1] >= min_area:
            out[sl][cc == k] = i
    ids = np.unique(out)
    lut = np.zeros(out.max() + 1, np.int32)
    lut[ids[ids > 0]] = np.arange(1, (ids > 0).sum() + 1)
    return lut[out]


def generate_many(n: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0):
    """``n`` independent (image, labels) pairs with seeds ``seed .. seed + n - 1``."""
    return [generate(spec, seed + i) for i in range(n)]
