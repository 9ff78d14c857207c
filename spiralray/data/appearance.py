"""What real nuclei show and HeLa lacks, for synthetic frames: nucleoli, chromatin grain and
bright speckles, mitotic figures, dim nuclei beside bright ones, uneven background, tissue
sections, defocus, 8/12/16-bit data and a wide range of sizes.

``Appearance`` gives each feature a probability per image and ranges for its strength, so one
``generate`` call mixes them; ``render`` draws one image's choices (``_Scene``) and paints the
frame. Signal is in relative units (a typical bright nucleus ~1) until the camera step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from .nucleus_shapes import MITOTIC_KINDS, mitotic, nucleus, place

# The texture of a plain nucleus, calibrated on whole frames (bench/synthetic_gallery.py prints
# the figures): smoothed intensity inside nuclei varies by 16% (BBBC039) to 18% (HeLa, with
# nucleoli) of their level, 12% here before nucleoli; edge pixels at ~0.63 of the level as in
# BBBC039, from a dome plus the optics' blur.
_TEXTURE = {"dome": (0.05, 0.35), "clumps": (0.1, 0.25), "grain": (0.03, 0.12)}
# Camera offset as a fraction of the range: 8-bit cameras and 12-bit BBBC039 (~120 of 4095) sit
# near 0; 16-bit takes the spec's offset (HeLa's ~33000), at most half the range.
_OFFSETS = {8: (0.0, 0.05), 12: (0.01, 0.06), 16: (0.0, 0.5)}


@dataclass(frozen=True)
class Appearance:
    """Per-image probabilities (``*_p``) and ranges (drawn uniformly, once per image unless
    said otherwise). The defaults are plain textured nuclei: every feature off, 16-bit."""

    zoom: tuple[float, float] = (1.0, 1.0)  # log-uniform factor on the radius; density / zoom^2
    crowding: tuple[float, float] = (1.0, 1.0)  # log-uniform factor on the density
    dome: tuple[float, float] = _TEXTURE["dome"]  # centre brighter than the rim by this fraction
    clumps: tuple[float, float] = _TEXTURE["clumps"]  # coarse chromatin texture (std / level)
    grain: tuple[float, float] = _TEXTURE["grain"]  # fine chromatin grain (std / level)
    nucleoli_p: float = 0.0
    nucleoli: tuple[float, float] = (0.4, 1.0)  # fraction of the nuclei with 1-4 nucleoli
    nucleolus_size: tuple[float, float] = (0.15, 0.32)  # radius / the nucleus's inner radius
    nucleolus_depth: tuple[float, float] = (0.35, 0.8)  # fraction of the signal removed
    speckles_p: float = 0.0
    speckles: tuple[float, float] = (3.0, 15.0)  # bright foci per 1000 px^2 of nucleus
    speckle_gain: tuple[float, float] = (0.3, 1.2)  # a focus's peak over its nucleus's level
    mitotic_p: float = 0.0
    mitotic: tuple[float, float] = (0.02, 0.08)  # fraction of the nuclei in mitosis
    mitotic_gain: tuple[float, float] = (1.8, 4.0)  # condensed chromatin is this much brighter
    dim_p: float = 0.0
    dim: tuple[float, float] = (0.05, 0.35)  # fraction of the nuclei that are dim (HeLa: ~0.1)
    dynamic_range: tuple[float, float] = (4.0, 40.0)  # bright / dimmest (dim: log-uniform 2..this)
    uneven_p: float = 0.0
    gradient: tuple[float, float] = (0.15, 0.6)  # illumination varies by this across the frame
    vignette: tuple[float, float] = (0.1, 0.5)  # corners this much darker
    haze: tuple[float, float] = (0.0, 0.15)  # smooth additive background, in nucleus levels
    tissue_p: float = 0.0
    autofluorescence: tuple[float, float] = (0.08, 0.35)  # textured background of a section
    defocus_p: float = 0.0
    defocus: tuple[float, float] = (0.1, 0.5)  # fraction of the nuclei out of the focal plane
    defocus_sigma: tuple[float, float] = (1.5, 4.0)  # their blur, px (times sqrt zoom)
    blurred_p: float = 0.0  # the whole frame out of focus
    blurred_sigma: tuple[float, float] = (1.5, 3.5)
    bit_depths: tuple[int, ...] = (16,)  # drawn uniformly; repeat one to weight it
    fill: tuple[float, float] = (0.3, 1.0)  # the bright nuclei reach this fraction of the range

    @classmethod
    def diverse(cls) -> Appearance:
        """Every feature mixed in: the training preset (nuclei ~6-150 px across)."""
        return cls(
            zoom=(0.45, 4.2),
            crowding=(0.2, 1.2),  # BBBC039 / HeLa: ~0.2-0.3 of the spec's 0.0012 per px^2
            nucleoli_p=0.6,
            speckles_p=0.35,
            mitotic_p=0.5,
            dim_p=0.6,
            uneven_p=0.5,
            tissue_p=0.2,
            defocus_p=0.35,
            blurred_p=0.12,
            bit_depths=(8, 12, 16),
            fill=(0.15, 1.1),
        )

    @classmethod
    def only(cls, feature: str) -> Appearance:
        """Plain nuclei plus one feature, always on (``FEATURES``): for galleries and tests."""
        if feature not in FEATURES:
            raise ValueError(f"unknown feature {feature!r}; expected one of {sorted(FEATURES)}")
        return replace(cls(), **FEATURES[feature])


FEATURES = {
    "nucleoli": {"nucleoli_p": 1.0, "nucleoli": (1.0, 1.0)},
    "speckles": {"speckles_p": 1.0},
    "mitotic": {"mitotic_p": 1.0, "mitotic": (0.15, 0.25)},
    "dim + bright": {"dim_p": 1.0},
    "uneven background": {"uneven_p": 1.0},
    "tissue": {"tissue_p": 1.0},
    "defocus": {"defocus_p": 1.0},
    "blurred frame": {"blurred_p": 1.0},
    "8-bit": {"bit_depths": (8,), "fill": (0.1, 0.4)},
    "12-bit": {"bit_depths": (12,)},
    "sizes": {"zoom": (0.45, 4.2)},
}


@dataclass
class _Scene:
    """One image's draws from an ``Appearance`` (and the spec's ranges)."""

    zoom: float
    crowding: float
    tissue: bool
    dome: float
    clumps: float
    grain: float
    nucleoli: float
    speckles: float
    mitotic: float
    dim: float
    dynamic_range: float
    defocus: float
    defocus_sigma: float
    blurred: float


def _scene(look: Appearance, rng) -> _Scene:
    def maybe(p, lo_hi, off=0.0):
        return rng.uniform(*lo_hi) if rng.random() < p else off

    return _Scene(
        zoom=_log_uniform(rng, look.zoom),
        crowding=_log_uniform(rng, look.crowding),
        tissue=bool(rng.random() < look.tissue_p),
        dome=rng.uniform(*look.dome),
        clumps=rng.uniform(*look.clumps),
        grain=rng.uniform(*look.grain),
        nucleoli=maybe(look.nucleoli_p, look.nucleoli),
        speckles=maybe(look.speckles_p, look.speckles),
        mitotic=maybe(look.mitotic_p, look.mitotic),
        dim=maybe(look.dim_p, look.dim),
        dynamic_range=rng.uniform(*look.dynamic_range),
        defocus=maybe(look.defocus_p, look.defocus),
        defocus_sigma=rng.uniform(*look.defocus_sigma),
        blurred=maybe(look.blurred_p, look.blurred_sigma),
    )


def _log_uniform(rng, lo_hi) -> float:
    return float(np.exp(rng.uniform(*np.log(lo_hi))))


def smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise of unit standard deviation, ``shape`` float32."""
    n = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def _nucleus_signal(rng, look: Appearance, sc: _Scene, mask: np.ndarray, level: float, mitotic_: bool):
    """Signal of one nucleus over its box (``h x w`` float32, 0 outside ``mask``): a dome, coarse
    and fine chromatin texture, dark nucleoli, bright foci. Texture scales with the nucleus."""
    d = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    inner = max(float(d.max()), 1.0)  # ~ the minor semi-axis
    prof = 1 - (0.2 if mitotic_ else sc.dome) * (1 - np.minimum(d / inner, 1)) ** 2
    clumps = rng.uniform(0.25, 0.45) if mitotic_ else sc.clumps  # condensed chromosomes: blotchy
    tex = clumps * smooth_noise(rng, mask.shape, max(0.15 * inner, 0.8))
    tex += sc.grain * smooth_noise(rng, mask.shape, max(0.05 * inner, 0.5))
    value = level * prof * np.maximum(1 + tex, 0.05)
    if not mitotic_ and rng.random() < sc.nucleoli:
        value *= nucleoli(rng, d, rng.integers(1, 5), look.nucleolus_size, look.nucleolus_depth)
    n = rng.poisson(sc.speckles * mask.sum() / 1000) if sc.speckles else 0
    seats = np.argwhere(d > 1.5)
    if n and len(seats):
        pick = seats[rng.integers(len(seats), size=n)].T
        sigma = max(rng.uniform(0.05, 0.1) * inner, 0.6)
        value += _spots(mask.shape, pick, rng.uniform(*look.speckle_gain, n) * level, sigma)
    return np.where(mask, value, 0).astype(np.float32)


def nucleoli(rng, d: np.ndarray, count: int, size=(0.15, 0.32), depth=(0.35, 0.8)) -> np.ndarray:
    """A multiplicative factor over a nucleus's box (``h x w`` float32, 1 = untouched) with up
    to ``count`` dark discs (radius ``size`` x the nucleus's inner radius, 1-px soft rim,
    ``depth`` of the signal removed), each seated wholly inside the nucleus. ``d``: ``h x w``
    distance of each pixel to the nucleus's edge (0 outside)."""
    factor = np.ones(d.shape, np.float32)
    inner = max(float(d.max()), 1.0)
    yy, xx = np.indices(d.shape)
    for _ in range(count):
        rn = max(rng.uniform(*size) * inner, 1.0)
        seats = np.argwhere(d > rn + 1)
        if len(seats):
            y, x = seats[rng.integers(len(seats))]
            factor *= 1 - rng.uniform(*depth) * np.clip(rn + 0.5 - np.hypot(yy - y, xx - x), 0, 1)
    return factor


def _spots(shape, where: np.ndarray, peaks: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian spots of width ``sigma`` and heights ``peaks`` at pixels ``where`` (2 x n)."""
    deltas = np.zeros(shape, np.float32)
    np.add.at(deltas, tuple(where), peaks * 2 * np.pi * sigma * sigma)
    return ndi.gaussian_filter(deltas, sigma)


def low_frequency(rng, height: int, width: int, cells: int = 4) -> np.ndarray:
    """A smooth random field ``H x W`` of unit-ish amplitude: cubic zoom of a coarse grid."""
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    field_ = ndi.zoom(grid, (height / cells, width / cells), order=3, mode="nearest")
    return field_[:height, :width]


def illumination(rng, height: int, width: int, gradient: float, vignette: float) -> np.ndarray:
    """Multiplicative illumination ``H x W``: a linear gradient of ``gradient`` across the frame
    in a random direction, a smooth field, and vignetting (the corners ``vignette`` darker)
    around a centre near the frame's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / max(height - 1, 1) - 0.5, xx / max(width - 1, 1) - 0.5
    phi = rng.uniform(0, 2 * np.pi)
    illum = 1 + gradient * (np.cos(phi) * yy + np.sin(phi) * xx + 0.3 * low_frequency(rng, height, width))
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    illum *= 1 - vignette * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
    return np.maximum(illum, 0.05)


def autofluorescence(rng, height: int, width: int, zoom: float) -> np.ndarray:
    """Textured background of a tissue section ``H x W`` (0..~1): patchy cytoplasm and matrix
    at three scales, fibres as thin ridges of a smooth field."""
    s = max(np.sqrt(zoom), 0.7)
    cloud = sum(w * smooth_noise(rng, (height, width), sg * s) for w, sg in ((0.5, 2), (0.35, 6), (0.6, 18)))
    ridge = np.exp(-(smooth_noise(rng, (height, width), 4 * s) ** 2) / 0.05)  # zero crossings
    return np.maximum(cloud, 0) ** 1.5 / 2 + 0.4 * ridge


def _camera(rng, spec, look: Appearance, signal: np.ndarray, peak: float) -> np.ndarray:
    """Photon and read noise (log-uniform in the spec's ranges: most frames clean, some very
    noisy), then the bit depth: offset + gain scaled so ``peak`` (the bright
    nuclei) reaches ``fill`` of the range, rounded and clipped; uint16 ``H x W``."""
    amp = _log_uniform(rng, spec.contrast) * 20000.0  # photons for a level-1 nucleus
    counts = rng.poisson(np.maximum(signal, 0) * amp).astype(np.float32)
    counts += rng.normal(0, _log_uniform(rng, spec.noise) * amp, signal.shape).astype(np.float32)
    depth = int(rng.choice(look.bit_depths))
    top = 2**depth - 1
    lo, hi = _OFFSETS[depth]
    offset = min(rng.uniform(*spec.offset), hi * top) if depth == 16 else rng.uniform(lo, hi) * top
    gain = rng.uniform(*look.fill) * (top - offset) / max(peak * amp, 1e-6)
    return np.clip(np.round(offset + gain * counts), 0, top).astype(np.uint16)


def render(spec, seed_rng) -> tuple[np.ndarray, np.ndarray]:
    """One frame of ``spec`` (a ``SyntheticSpec`` with an ``appearance``): (image ``H x W``
    uint16 holding values of the drawn bit depth, labels ``H x W`` int32)."""
    rng, look = seed_rng, spec.appearance
    H, W = spec.height, spec.width
    sc = _scene(look, rng)
    radius = np.array(spec.radius) * sc.zoom
    density, elong = spec.density * sc.crowding / sc.zoom**2, spec.elongation
    # Cultured nuclei: egg and bean shapes (harmonics 2, 3); a 5th harmonic makes large nuclei
    # look polygonal, so only tissue, whose nuclei are squeezed into odd shapes, gets it.
    irregular, harmonics, max_overlap = 0.08, (2, 3), spec.max_overlap
    if sc.tissue:  # dense, crowded, irregular: nuclei of a section touch and overlap
        density *= rng.uniform(2.0, 3.0)
        elong, irregular, harmonics = (1.0, elong[1] + 1.0), 0.15, (2, 3, 5)
        max_overlap = max(max_overlap, 0.35)
    layers = np.zeros((2, H, W), np.float32)  # in focus, out of focus

    def shape():
        a = rng.uniform(*radius)
        if rng.random() < sc.mitotic:
            return mitotic(rng, a, MITOTIC_KINDS[rng.integers(3)]), True
        b = a / rng.uniform(*elong)
        return nucleus(rng, a, b, rng.uniform(0, np.pi), irregular, harmonics).astype(np.uint8), False

    def paint(ys, xs, box, sub, mitotic_):
        level = rng.uniform(*spec.brightness)
        if rng.random() < sc.dim:  # a dim nucleus beside bright ones (HeLa: ~10% below 0.1)
            level /= np.exp(rng.uniform(np.log(2), np.log(max(sc.dynamic_range, 2))))
        level *= rng.uniform(*look.mitotic_gain) if mitotic_ else 1.0
        value = _nucleus_signal(rng, look, sc, box > 0, level, mitotic_)[sub]
        visible = box[sub] > 0
        layers[:, ys, xs][:, visible] = 0  # occludes whatever lay there, in either layer
        layers[int(rng.random() < sc.defocus), ys, xs][visible] = value[visible]

    labels = place(rng, H, W, rng.poisson(density * H * W), shape, paint, max_overlap)
    signal = ndi.gaussian_filter(layers[0], rng.uniform(*spec.blur))
    if layers[1].any():
        signal += ndi.gaussian_filter(layers[1], sc.defocus_sigma * np.sqrt(sc.zoom))
    if sc.tissue:
        signal += rng.uniform(*look.autofluorescence) * autofluorescence(rng, H, W, sc.zoom)
    if sc.blurred:
        signal = ndi.gaussian_filter(signal, sc.blurred * np.sqrt(sc.zoom))
    peak = float(np.percentile(signal[labels > 0], 99.5)) if labels.any() else 1.0
    signal += rng.uniform(0.02, 0.1)  # out-of-focus light and medium: a flat background
    if rng.random() < look.uneven_p:
        signal += rng.uniform(*look.haze) * np.abs(low_frequency(rng, H, W, 3))
        signal *= illumination(rng, H, W, rng.uniform(*look.gradient), rng.uniform(*look.vignette))
    n = rng.poisson(spec.artifacts * H * W / 256**2)  # small unlabelled debris, soft spots
    if n:
        where = np.stack([rng.integers(0, H, n), rng.integers(0, W, n)])
        signal += _spots((H, W), where, rng.uniform(0.3, 1.5, n), rng.uniform(0.5, 1.5))
    return _camera(rng, spec, look, signal, peak), labels
