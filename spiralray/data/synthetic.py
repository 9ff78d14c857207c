"""Synthetic fluorescence nuclei with instance labels: unlimited training and test data.

The plain look (``SyntheticSpec()``, the original generator, unchanged bit for bit): irregular
ellipses with a spread of sizes and brightness, touching and partly overlapping (a later nucleus
occludes an earlier one, as in a projection), internal texture, blur, uneven illumination, a
camera offset, Poisson + Gaussian noise, low-contrast frames and small unlabelled artifacts;
16-bit output.

With an ``Appearance`` (``SyntheticSpec.diverse()``; ``appearance.py``) a frame also mixes what
real nuclei show and HeLa lacks: nucleoli, chromatin grain and bright foci, mitotic figures, dim
nuclei beside bright ones, uneven background, tissue sections, defocus, 8/12/16-bit data and
nuclei ~6-150 px across. Labels always cover whole nuclei (nucleoli and foci are texture).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .appearance import Appearance, render
from .nucleus_shapes import nucleus, place


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
    offset: tuple[float, float] = (100.0, 33000.0)  # camera offset (16-bit)
    noise: tuple[float, float] = (0.01, 0.06)
    artifacts: int = 6
    blur: tuple[float, float] = (0.6, 1.6)
    appearance: Appearance | None = None  # None: the plain look above

    @classmethod
    def diverse(cls, height: int = 256, width: int = 256, **kwargs) -> SyntheticSpec:
        """Every appearance feature mixed in (``Appearance.diverse``): the training preset. Read
        noise down to 0.3% (log-uniform): real backgrounds are often far cleaner than 1%."""
        return cls(height, width, **{"noise": (0.003, 0.05), "appearance": Appearance.diverse(), **kwargs})


def generate(spec: SyntheticSpec = SyntheticSpec(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image ``H x W`` uint16, labels ``H x W`` int32, 0 = background, ids 1..N).

    With an appearance the image holds values of the bit depth drawn for it (an 8-bit frame is
    0..255 in uint16). Deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    if spec.appearance is not None:
        return render(spec, rng)
    H, W = spec.height, spec.width
    signal = np.zeros((H, W), np.float32)

    def shape():
        a = rng.uniform(*spec.radius)
        b = a / rng.uniform(*spec.elongation)
        return nucleus(rng, a, b, rng.uniform(0, np.pi)).astype(np.uint8), None

    def paint(ys, xs, box, sub, _):
        mm = box[sub] > 0
        # Texture: smooth noise inside the nucleus.
        tex = ndi.gaussian_filter(rng.normal(0, 1, mm.shape).astype(np.float32), 1.5)
        level = rng.uniform(*spec.brightness) * (1 + 0.25 * tex)
        signal[ys, xs][mm] = level[mm]

    labels = place(rng, H, W, rng.poisson(spec.density * H * W), shape, paint, spec.max_overlap)
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


def generate_many(n: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0):
    """``n`` independent (image, labels) pairs with seeds ``seed .. seed + n - 1``."""
    return [generate(spec, seed + i) for i in range(n)]
