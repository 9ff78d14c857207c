"""Nucleus size: estimate the typical nucleus diameter of an image and choose the factor to
rescale it by, so nuclei reach the networks at the size they were trained on.

Diameters are equivalent diameters, ``2 sqrt(area / pi)`` in pixels of the image given; the
typical diameter is the median over nuclei (``median_diameter`` computes it from labels).

Method, chosen by measurement on 175 images of BBBC039 train and validation and HeLa 0-13 at
zoom x0.35-x3 and synthetic nuclei 8-150 px across (plain, textured with dark nucleoli, dim beside
bright, dense). Share within 20% / 10% of the labels' median, each rival with its best constant
factor: this method 98% / 95% with none; the LoG energy peak 96% / 84% (but 2.6x on a field with
a bright fibre); the Hessian ``B^3`` peak alone 87% / 65%; granulometry (grey openings by disks)
88% / 77% at ~1 s per 0.3 Mpx (openings stop at nucleoli: -25..-40% on textured nuclei); Otsu +
distance-transform peaks 86% / 73% (-50..-95% on large textured nuclei); the median size of
detected LoG blobs 38% / 14% (chromatin texture and noise blobs outnumber nuclei).
``bench/scale.py`` reports the held-out sets.

1. Candidate scales from a scale space. Blobness ``B = sigma^2 max(0, -lambda_max)`` (the smaller
   curvature of the smoothed image's Hessian: > 0 only where both curvatures are negative, i.e.
   on blobs; ~0 on ridges and edges) at diameters 5.7-256 px, 4 per octave, each on the pyramid
   level where sigma is 1.4-2.8 px. The scales of peak mean ``B^3`` and peak mean ``B`` bracket
   the nuclei: ``B^3`` leans to a few bright specks (mitoses, micronuclei), ``B`` to clumps; the
   measurement starts at their geometric mean. A peak alone is an aggregate, biased by packing
   and brightness (9% log-error spread, misses up to 3x), and with a plain Laplacian of Gaussian
   a bright out-of-focus fibre across a BBBC039 field read 80 px for 28 px nuclei.
2. Each nucleus measured. On a copy halved until nuclei are 16-32 px across: smooth (sigma
   d/16), remove the background with a grey opening (a square of 2 d, which no nucleus fits), mark
   maxima of ``B`` at that scale above the noise and above a quarter of Otsu's split of their log
   strengths, watershed from the markers, and keep each basin's pixels above 0.45 of its plateau
   (the 90th percentile of its pixels above half its maximum), holes filled (nucleoli): a
   half-maximum edge per nucleus, so a dim nucleus beside a bright one keeps its own edge where
   one global threshold would shrink or drop it. The median equivalent diameter is the estimate;
   when it differs from the scale it was measured at by over 20%, it is measured again there (at
   most 3 times). Measured at 0.7-2x the true size, real fields come out within 15% of it (below
   ~0.5x nuclei break into pieces the size measured at; above ~2x touching nuclei fuse).
3. No nuclei, ``diameter=None``: a constant image; no interior scale-space peak (white or photon
   noise peaks at the finest scale); no marker above the noise; or bright blobs no stronger than
   dark ones at the measured scale (mean ``B`` of the image over that of its negative under 1.2:
   smooth random texture reads 0.95-1.06, nuclei on a background 1.4-35).
4. An image whose labelled objects are mostly small fragments (micronuclei, apoptotic blebs) beside
   whole nuclei reads the whole nuclei's size, not the median over all objects.

Cost: a Gaussian filter and a Hessian per scale on a pyramid, and a watershed on at most ~1 Mpx
per measurement; larger images are sampled as evenly spread tiles. ~0.2-0.5 s CPU per 4 Mpx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from ..data.normalize import apply_stats

SQRT2 = float(np.sqrt(2.0))

# The nucleus diameter (px) the shipped networks were trained at: the median equivalent diameter
# of the labels of HeLa frames 0-13 (2,149 nuclei, pooled; per frame 27.5-28.1 px). The model
# also saw those frames zoomed x0.5-x1.33 (14-37 px) and synthetic nuclei (SyntheticSpec's
# default: median 19.6 px, 10-36 px). BBBC039 train labels read 28.3 px: a model trained on
# both is at the same size.
MODEL_DIAMETER = 27.7

MIN_DIAMETER, MAX_DIAMETER = 4 * SQRT2, 256.0  # coarse search range, px
PER_OCTAVE = 4
WORK_DIAMETER = 16.0  # nuclei are measured on a copy halved until they are 16-32 px across
EDGE_FRACTION = 0.45  # a nucleus's edge: this fraction of its own level above the background
MARKER_FACTOR = 0.25  # markers: blobs at least this fraction of Otsu's split of log strengths
NOISE_FACTOR = 1.5  # ... and this many times white noise's largest blobness (~0.8 noise / sigma)
PLATEAU_QUANTILE = 0.9  # a nucleus's level: this quantile of its pixels above half its max
MIN_ASYMMETRY = 1.2  # bright over dark blobness at the nuclei's scale: nuclei 1.4-35, noise ~1
ITERATIONS = 3  # re-measurements at the last median at most
MIN_OBJECTS = 10  # fewer measured nuclei: an estimate, flagged not confident
MAX_PIXELS = 1 << 20  # per pyramid level and for the measurement; larger: spread tiles

# choose_scale: no resampling within +-20% of the model's size; factors clipped to [1/8, 4]
# (nuclei of 3.5-220 px reach the model's 27.7 px; upsampling more than 4x costs 16x the pixels).
DEAD_BAND = 0.2
SCALE_RANGE = (0.125, 4.0)


@dataclass(frozen=True)
class DiameterEstimate:
    """The typical nucleus diameter of an image, in px of the image given.

    diameter: median equivalent diameter of the measured nuclei (px), None when none are found.
    coarse: the scale (px) the nuclei were measured at. objects: nuclei measured. asymmetry: mean
    blobness of bright blobs over that of dark blobs at that scale (nuclei on a background:
    1.4-35 measured; noise or texture: ~1). confident: at least MIN_OBJECTS nuclei. reason: why
    there is no estimate, or why it is not confident ("" when it is).
    """

    diameter: float | None
    coarse: float | None = None
    objects: int = 0
    asymmetry: float = 0.0
    confident: bool = False
    reason: str = ""


def model_diameter(spec: object | None = None) -> float:
    """The nucleus diameter (px) a model was trained at: ``spec.diameter`` when its model
    config carries one, else the shipped networks' MODEL_DIAMETER."""
    d = getattr(spec, "diameter", None)
    return float(d) if d else MODEL_DIAMETER


def median_diameter(labels: np.ndarray | Sequence[np.ndarray]) -> float | None:
    """Median equivalent diameter (px) of the objects of ``H x W`` instance label images (one,
    or several pooled); None without objects."""
    stack = [labels] if isinstance(labels, np.ndarray) else list(labels)
    areas = np.concatenate([np.bincount(np.asarray(lb).ravel().astype(np.int64))[1:] for lb in stack])
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi))) if len(areas) else None


def choose_scale(
    estimated: float | None,
    model: float = MODEL_DIAMETER,
    dead_band: float = DEAD_BAND,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> float:
    """The factor to resize an image by so its nuclei (``estimated`` px across) come out at the
    model's diameter (``model`` px): ``model / estimated``, 1.0 when ``estimated`` is within
    +-``dead_band`` of ``model`` (resampling costs time and sharpness for nothing) or unknown
    (None), clipped to ``scale_range``. > 1 enlarges."""
    if estimated is None or not np.isfinite(estimated) or estimated <= 0:
        return 1.0
    if abs(estimated / model - 1) <= dead_band:
        return 1.0
    return float(np.clip(model / estimated, *scale_range))


def blobness(y: np.ndarray, sigma: float, dark: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``sigma^2 max(0, -lambda_max)`` of the Hessian of ``y`` smoothed at ``sigma`` (px): the
    scale-normalised smaller curvature, > 0 only on bright blobs. ``H x W`` float32 in and out;
    with ``dark``, also ``sigma^2 max(0, lambda_min)`` (the same for dark blobs) as a pair."""
    g = ndi.gaussian_filter(y, sigma, mode="reflect", truncate=3.0)
    p = np.pad(g, 1, mode="edge")
    gyy = p[2:, 1:-1] - 2 * g + p[:-2, 1:-1]
    gxx = p[1:-1, 2:] - 2 * g + p[1:-1, :-2]
    gxy = 0.25 * (p[2:, 2:] - p[2:, :-2] - p[:-2, 2:] + p[:-2, :-2])
    mean, spread = 0.5 * (gxx + gyy), np.sqrt(0.25 * (gxx - gyy) ** 2 + gxy**2)
    s2 = np.float32(sigma * sigma)
    bright = s2 * np.maximum(-(mean + spread), 0)  # lambda_max, lambda_min = mean +- spread
    if not dark:
        return bright
    return bright, s2 * np.maximum(mean - spread, 0)


def _tiles(shape: tuple[int, int], budget: int, side: int) -> list[tuple[slice, slice]]:
    """The whole ``shape`` window, or ``side``-px tiles of about ``budget`` px in all spread
    evenly over it (spread, not central: nuclei may fill only part of an image)."""
    h, w = shape
    if h * w <= budget:
        return [(slice(0, h), slice(0, w))]
    n = max(1, budget // (side * side))
    ny = max(1, min(int(round(np.sqrt(n * h / w))), h // side))
    nx = max(1, min(n // ny, w // side))
    ys = np.linspace(0, max(h - side, 0), ny).round().astype(int)
    xs = np.linspace(0, max(w - side, 0), nx).round().astype(int)
    return [(slice(y, min(y + side, h)), slice(x, min(x + side, w))) for y in ys for x in xs]


def _halve(y: np.ndarray) -> np.ndarray:
    """2 x 2 block mean (an odd last row or column dropped)."""
    y = y[: y.shape[0] // 2 * 2, : y.shape[1] // 2 * 2]
    return 0.25 * (y[0::2, 0::2] + y[1::2, 0::2] + y[0::2, 1::2] + y[1::2, 1::2])


def _energy(windows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(diameters px, mean ``B^3``, mean ``B``) at each scale over all windows, pixel-weighted."""
    n = int(np.floor(np.log2(MAX_DIAMETER / MIN_DIAMETER) * PER_OCTAVE)) + 1
    ds = MIN_DIAMETER * 2 ** (np.arange(n) / PER_OCTAVE)
    sums, counts = np.zeros((2, n)), np.zeros(n)
    for x in windows:
        y, level = x, 0
        for k, d in enumerate(ds):
            sigma = d / (2 * SQRT2)  # a disk of radius r responds most at sigma = r / sqrt(2)
            while sigma / 2**level >= 2 * SQRT2 and min(y.shape) >= 16:
                y, level = _halve(y), level + 1
            sw = sigma / 2**level
            # The margin is left out: a reflected border turns an intensity gradient into a
            # ridge across the edge, and with a second gradient into a false blob.
            m = int(np.ceil(2 * sw))
            if min(y.shape) < 2 * m + 3 * sw:
                break  # the window cannot hold a blob this size
            for sl in _tiles(y.shape, MAX_PIXELS // 2, 256):
                b = blobness(np.ascontiguousarray(y[sl]), sw)[m:-m, m:-m]
                sums[0, k] += float(np.sum(b * b * b, dtype=np.float64)) * 4**level
                sums[1, k] += float(np.sum(b, dtype=np.float64)) * 4**level
                counts[k] += b.size * 4**level
    ok = counts > 0
    return ds[ok], sums[0, ok] / counts[ok], sums[1, ok] / counts[ok]


def _peak(ds: np.ndarray, e: np.ndarray) -> float | None:
    """The diameter of the interior maximum of ``e`` (a parabola in log-log), or None when the
    maximum lies at either end of the range."""
    if len(e) < 3 or not np.any(e > 0):
        return None
    k = int(np.argmax(e))
    if k == 0 or k == len(e) - 1:
        return None
    y0, y1, y2 = np.log(e[k - 1 : k + 2] + 1e-30)
    den = y0 - 2 * y1 + y2
    off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return float(ds[k] * (ds[1] / ds[0]) ** off)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (1-D)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins, (lo, hi))
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    s0 = np.cumsum(hist * mids)[:-1]
    n, total = float(hist.sum()), float(np.sum(hist * mids))
    w1 = n - w0
    ok = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0)
    between[ok] = w0[ok] * w1[ok] * (s0[ok] / w0[ok] - (total - s0[ok]) / w1[ok]) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _noise(y: np.ndarray) -> float:
    """Robust pixel noise std of ``y`` (Immerkaer's mask, median absolute response)."""
    p = np.pad(y, 1, mode="reflect")
    r = (
        4 * y
        - 2 * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:])
        + (p[:-2, :-2] + p[:-2, 2:] + p[2:, :-2] + p[2:, 2:])
    )
    return float(1.4826 * np.median(np.abs(r)) / 6.0)  # the mask's gain on white noise is 6


class _Window(NamedTuple):
    """One window at the working scale: top-hat of the smoothed image (background removed), the
    smoothed image, bright blobness and its local maxima (all ``H x W``), the window's noise
    std and its sums of bright and of dark blobness."""

    th: np.ndarray
    sm: np.ndarray
    b: np.ndarray
    peaks: np.ndarray
    noise: float
    bright: float
    dark: float


def _prepare(y: np.ndarray, d: float) -> _Window:
    """``y``: a normalised ``H x W`` window with nuclei about ``d`` px across."""
    sm = ndi.gaussian_filter(y, max(0.7, d / 16))
    size = int(2 * d) | 1
    th = sm - ndi.maximum_filter(ndi.minimum_filter(sm, size), size)
    b, dark = blobness(y, d / (2 * SQRT2), dark=True)
    peaks = (b == ndi.maximum_filter(b, size=max(3, int(d / 2) | 1))) & (b > 0)
    return _Window(th, sm, b, peaks, _noise(y), float(b.sum()), float(dark.sum()))


def _measure(w: _Window, d: float, threshold: float, cut) -> np.ndarray:
    """Equivalent diameters (px of the window) of the nuclei of one prepared window.
    threshold: the least blobness of a marker. cut: which sides (top, bottom, left, right) are
    tile cuts inside the image; objects touching them are partial and left out."""
    from skimage.segmentation import watershed  # a heavy import, paid only when measuring

    th, sm, b, peaks = w.th, w.sm, w.b, w.peaks
    markers, n = ndi.label(peaks & (b >= threshold))
    if n == 0:
        return np.zeros(0)
    basins = watershed(-sm, markers, mask=th > 0.1 * float(np.median(th[markers > 0])))
    # Each basin's plateau: a high quantile of its pixels above half its maximum (the nucleus,
    # not the background around it), not the maximum, which chromatin grain and bright speckles
    # inflate (the edge would then cut into a textured nucleus).
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, basins.ravel(), th.ravel())
    core = (th >= 0.5 * peak[basins]) & (basins > 0)
    flat, vals = basins[core], th[core]
    counts = np.bincount(flat, minlength=n + 1)
    rank = np.cumsum(counts) - counts + (PLATEAU_QUANTILE * np.maximum(counts - 1, 0)).astype(np.int64)
    top = np.zeros(n + 1, np.float32)
    top[counts > 0] = vals[np.lexsort((vals, flat))][rank[counts > 0]]
    # Holes filled: dark nucleoli and chromatin gaps are inside the nucleus.
    inside = ndi.binary_fill_holes((th >= EDGE_FRACTION * top[basins]) & (basins > 0))
    lab = np.where(inside, basins, 0)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    keep = area >= (d / 5) ** 2  # specks and debris far below the coarse size
    for side, is_cut in zip((lab[0], lab[-1], lab[:, 0], lab[:, -1]), cut, strict=True):
        if is_cut:
            keep[side[side > 0] - 1] = False
    return 2 * np.sqrt(area[keep] / np.pi)


def _measure_at(xs: list[np.ndarray], d0: float) -> tuple[np.ndarray, float, str]:
    """(equivalent diameters px, bright/dark blob asymmetry, why none) of the nuclei of the
    normalised windows ``xs``, measured at diameter ``d0`` (px)."""
    halvings = max(0, int(np.floor(np.log2(d0 / WORK_DIAMETER))))
    f = 2.0**halvings
    d = d0 / f
    # ~800 nuclei are plenty for a median (its standard error ~1%); tiles of 16 nuclei a side keep
    # the loss of nuclei cut by tile edges (which favours small ones) small.
    budget = int(np.clip(800 * (3 * d) ** 2, 1 << 19, MAX_PIXELS))
    windows, cuts = [], []
    for x in xs:
        y = x
        for _ in range(halvings):
            y = _halve(y)
        for sl in _tiles(y.shape, budget // len(xs), max(512, int(16 * d))):
            cuts.append((sl[0].start > 0, sl[0].stop < y.shape[0], sl[1].start > 0, sl[1].stop < y.shape[1]))
            windows.append(_prepare(np.ascontiguousarray(y[sl]), d))
    bright = sum(w.bright for w in windows)
    asymmetry = bright / max(sum(w.dark for w in windows), 1e-12 * bright, 1e-30)
    bound = NOISE_FACTOR * float(np.median([w.noise for w in windows])) / (d / (2 * SQRT2))
    strengths = np.concatenate([w.b[w.peaks] for w in windows])
    strengths = strengths[strengths > bound]
    if len(strengths) == 0:
        return np.zeros(0), asymmetry, "no blob above the noise"
    threshold = max(bound, MARKER_FACTOR * float(np.exp(_otsu(np.log(strengths)))))
    diam = np.concatenate([_measure(w, d, threshold, c) for w, c in zip(windows, cuts, strict=True)]) * f
    return diam, asymmetry, "" if len(diam) else "no nucleus measured"


def estimate_diameter(
    image: np.ndarray | Sequence[np.ndarray], stats: tuple[float, float] | None = None
) -> DiameterEstimate:
    """The typical nucleus diameter (px) of a fluorescence nuclei image.

    image: ``H x W`` raw (any real dtype), or a sequence of ``H x W`` windows of one image (their
    nuclei are pooled; ~1-4 Mpx in all is plenty). The diameter is in px of what is given: for
    an overview downsampled k times, multiply by k. stats: the image's (lo, hi) normalisation
    bounds (``data.normalize.image_stats``, as the plan stores them; percentile bounds suit
    best); by default the 1st-99.8th percentiles of the pixels given. Deterministic: the same
    pixels give the same answer. Returns a DiameterEstimate (diameter None: no nuclei found).
    """
    windows = [np.asarray(image)] if isinstance(image, np.ndarray) else [np.asarray(w) for w in image]
    if not windows or any(w.ndim != 2 or w.size == 0 for w in windows):
        raise ValueError("estimate_diameter takes an H x W image or a sequence of H x W windows")
    if any(w.dtype.kind == "f" and not np.isfinite(w).all() for w in windows):
        raise ValueError("estimate_diameter: the image holds NaN or infinite values")
    if stats is None:
        # The bounds normalize.image_stats computes (1st-99.8th percentiles, linear), by
        # np.percentile: the same numbers without its streaming machinery, ~10x faster in memory.
        pixels = np.concatenate([w.ravel() for w in windows]) if len(windows) > 1 else windows[0]
        stats = tuple(float(v) for v in np.percentile(pixels, (1.0, 99.8)))
    if stats[1] == stats[0]:  # (bounds high first: an inverted image)
        return DiameterEstimate(None, reason="constant image")
    xs = [apply_stats(w, stats) for w in windows]
    ds, e3, e1 = _energy(xs)
    peaks = [d for d in (_peak(ds, e3), _peak(ds, e1)) if d is not None]
    if not peaks:
        return DiameterEstimate(None, reason="no blob scale inside 6-256 px (noise or blank)")
    # Start between the two peaks: mean B^3 leans to bright specks (mitoses, micronuclei), mean B
    # to clumps; measured within ~0.7-2x of the true size the median comes out the same.
    d0 = float(np.sqrt(np.prod(peaks))) if len(peaks) == 2 else peaks[0]
    diam, asym, why = _measure_at(xs, d0)
    for _ in range(ITERATIONS):  # until the median agrees with the scale it was measured at
        if len(diam) == 0 or abs(np.log(np.median(diam) / d0)) <= np.log(1.2):
            break
        d0 = float(np.median(diam))
        diam, asym, why = _measure_at(xs, d0)
    if asym < MIN_ASYMMETRY:
        return DiameterEstimate(None, d0, len(diam), asym, reason="no bright blobs on a dark background")
    if len(diam) == 0:
        return DiameterEstimate(None, d0, 0, asym, reason=why)
    confident = len(diam) >= MIN_OBJECTS
    why = "" if confident else f"only {len(diam)} nuclei measured"
    return DiameterEstimate(float(np.median(diam)), d0, len(diam), asym, confident, why)
