"""Is an image only noise? An empty field (an empty well, a field out of focus) is noise that
per-image percentile normalisation would stretch to full contrast, and the networks would find
"nuclei" in it (~120 in a 512 x 512 field of camera noise). Pure algorithm: NumPy and SciPy.

An image holds only noise when both its brightest 5 x 5 mean stands under ``NOISE_ONLY`` noise
sigmas above its median (sparse nuclei stand far above) and its normalisation range (1st-99.8th
percentiles) spans under ``NOISE_RANGE`` sigmas (a confluent field of even nuclei, whose median
is a nucleus, spans more). Peak and median are taken over the image's 2 x 2 minima: one hot
camera pixel in an empty field stood 37 sigmas above (121 "nuclei"); a nucleus is far wider
than a hot pixel or a hot line.

Uneven illumination (the vignette of an uncorrected widefield objective, a misaligned lamp)
widens an empty field's range: a 10-30% fall-off to the corners spanned 6.0-6.3 sigmas, just
over the bound, and the networks found 47-64 "nuclei" in its stretched noise. So each measure is
also taken above a least-squares polynomial surface (``subtract_surface``), and the lower of the
two counts: the surface can only take a vignette out, never make a peak of a fit gone wild (a
band mostly padding, a band a few rows tall). The surface's degree along an axis grows with the
span of the data along it (one per ``SURFACE_SPAN`` px, up to ``SURFACE_DEGREE``), so it follows
a field's illumination but not a nucleus: a 150 px nucleus in a 512 x 512 field keeps ~2/3 of
its contrast above it, a 28 px one in a 58 px image all of it (the surface is then flat).

Measured (bench/noise_only.py): pure noise, hot pixels or not, under a vignette or not: peak
0.4-1.2, range 2.9-5.7; every image here, real, shifted or synthetic, at 14.9 / 10.4 or more;
three 7-12 px nuclei 4 sigmas bright in an empty field at 3.5.
"""

from __future__ import annotations

import numpy as np

from .normalize import is_pad

NOISE_ONLY = 3.0
NOISE_RANGE = 6.0
PEAK_WINDOW = 5  # px: smaller than a nucleus, large enough to average the noise away (/5)
HOT_PIXELS = 2  # px: the minimum over this square first drops hot pixels and lines
SURFACE_DEGREE = 6  # an off-centre cos^4 fall-off of 60% to within noise (degree 2 did not)
SURFACE_SPAN = 64  # px of data along an axis per degree of the surface along it
SURFACE_GRID = 256  # samples per axis the surface is fitted on
SAMPLES_PER_TERM = 10  # fewer kept samples than this per term: a lower degree


def noise_sigma(windows, pad: float | None = None) -> float:
    """The pixel noise's standard deviation in ``windows`` (``H x W`` arrays): the median
    absolute deviation of horizontally adjacent differences, which nuclei (smooth over a
    pixel) barely touch; pairs holding a pad pixel (``pad``) left out. 0 for quantised images
    whose neighbours are mostly equal."""
    parts = []
    for w in windows:
        d = np.diff(np.asarray(w, np.float64), axis=1)
        if pad is not None:
            padded = is_pad(np.asarray(w), pad)
            d = d[~(padded[:, 1:] | padded[:, :-1])]
        parts.append(d.ravel())
    d = np.concatenate(parts) if parts else np.zeros(0)
    if d.size == 0:
        return 0.0
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2))


def local_peak(chunk: np.ndarray, invert: bool = False, pad: float | None = None) -> tuple[float, float]:
    """(as stored, above its illumination surface): the brightest (``invert``: darkest,
    negated) ``PEAK_WINDOW``-square mean of ``chunk``'s ``HOT_PIXELS``-square minima (a hot
    pixel never makes the peak); pad pixels (``pad``) never make one."""
    from scipy.ndimage import uniform_filter

    a = np.asarray(chunk)
    # float32 (half float64's memory on a wide chunk band) is exact for 8/16-bit data only
    a = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    if invert:
        a = -a
    inner = None
    if pad is not None:
        padded = is_pad(np.asarray(chunk), pad)
        if padded.all():
            return -np.inf, -np.inf
        a[padded] = a[~padded].min()
        inner = _unpadded(padded)
    if a.size == 0:
        return -np.inf, -np.inf
    m = _minima(a)
    del a
    raw = float(uniform_filter(m, PEAK_WINDOW, mode="nearest").max())
    subtract_surface(m, inner)
    if inner is not None and inner.any():
        m[~inner] = m[inner].min()  # the surface's values there are no data
    return raw, float(uniform_filter(m, PEAK_WINDOW, mode="nearest").max())


def _minima(a: np.ndarray) -> np.ndarray:
    """The ``HOT_PIXELS``-square minima of ``a``; mirrored at the edges, so an edge pixel's
    square holds its inner neighbours too (repeated, a hot corner pixel would be its own)."""
    from scipy.ndimage import minimum_filter

    return minimum_filter(a, HOT_PIXELS, mode="mirror")


def _unpadded(padded: np.ndarray) -> np.ndarray:
    """Where ``_minima``'s squares hold no pad pixel (``padded``: H x W bool)."""
    from scipy.ndimage import maximum_filter

    return ~maximum_filter(padded, HOT_PIXELS, mode="mirror")


def _terms(span_y: int, span_x: int, samples: int) -> list[tuple[int, int]]:
    """The surface's monomials y^i x^j: a degree along each axis by the data's span along it,
    the total degree at most ``SURFACE_DEGREE``, lowered until every term has
    ``SAMPLES_PER_TERM`` samples."""
    dy, dx = (min(SURFACE_DEGREE, span // SURFACE_SPAN) for span in (span_y, span_x))
    for total in range(SURFACE_DEGREE, -1, -1):
        terms = [(i, j) for i in range(dy + 1) for j in range(dx + 1) if i + j <= total]
        if samples >= SAMPLES_PER_TERM * len(terms):
            return terms
    return [(0, 0)]


def subtract_surface(a: np.ndarray, keep: np.ndarray | None = None) -> None:
    """Subtract from ``a`` (``H x W`` float, in place) its least-squares polynomial surface
    (``_terms``), fitted on a grid of up to ``SURFACE_GRID``^2 of its pixels, the edges
    included (``keep``: those that count; none kept: nothing done)."""
    H, W = a.shape
    iy = np.unique(np.linspace(0, H - 1, min(H, SURFACE_GRID)).round().astype(np.int64))
    ix = np.unique(np.linspace(0, W - 1, min(W, SURFACE_GRID)).round().astype(np.int64))
    ok = np.ones((len(iy), len(ix)), bool) if keep is None else keep[np.ix_(iy, ix)]
    if not ok.any():
        return
    rows, cols = iy[ok.any(axis=1)], ix[ok.any(axis=0)]
    terms = _terms(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1, int(ok.sum()))
    ys, xs = np.linspace(-1, 1, H), np.linspace(-1, 1, W)
    gy, gx = np.meshgrid(ys[iy], xs[ix], indexing="ij")
    basis = np.stack([gy[ok] ** i * gx[ok] ** j for i, j in terms], axis=1)
    coef = np.linalg.lstsq(basis, a[np.ix_(iy, ix)][ok].astype(np.float64), rcond=None)[0]
    rows_x = {}  # per power of y: its polynomial in x, over the whole width
    for c, (i, j) in zip(coef, terms, strict=True):
        rows_x[i] = rows_x.get(i, 0.0) + c * xs**j
    step = max(1, (1 << 20) // max(W, 1))  # row blocks of ~1 Mpx: one block's surface at a time
    for y0 in range(0, H, step):
        yb = ys[y0 : y0 + step]
        a[y0 : y0 + step] -= sum(np.multiply.outer(yb**i, r) for i, r in rows_x.items()).astype(a.dtype)


def flatten(a: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """``a`` minus its illumination surface (``subtract_surface``), as a new float array."""
    out = np.array(a, dtype=np.result_type(a.dtype, np.float32))
    subtract_surface(out, keep)
    return out


def above_noise(windows, peak, invert: bool, pad: float | None = None) -> tuple[float, float] | None:
    """In noise sigmas: how far the image's brightest local mean (``peak``: ``local_peak``'s
    pair, its maximum over the image) stands above the median of the sample ``windows``' 2 x 2
    minima (as the peak is taken: the minimum of four noisy pixels sits ~1 sigma below their
    median), and how wide the windows' normalisation range (1st-99.8th percentiles) is; each
    the lower of as stored and above the illumination surface; negated when ``invert``. None
    where the noise is not measurable (a quantised image whose neighbours are mostly equal).
    Pad pixels (``pad``) are left out."""
    sigma = noise_sigma(windows, pad)
    if not sigma > 0:
        return None
    sign = -1.0 if invert else 1.0
    parts: dict[str, list] = {"minima": [], "pixels": [], "flat minima": [], "flat pixels": []}
    for w in windows:
        a = sign * np.asarray(w, np.float64)
        keep = np.ones(a.shape, bool) if pad is None else ~is_pad(np.asarray(w), pad)
        if not keep.any():
            continue
        a[~keep] = a[keep].min()  # a NaN pad never reaches the minima
        inner = _unpadded(~keep)  # minima of squares holding no pad pixel
        m = _minima(a)
        parts["minima"].append(m[inner])
        parts["pixels"].append(a[keep])
        flat = flatten(m, inner)
        parts["flat minima"].append(flat[inner])
        parts["flat pixels"].append((a - m + flat)[keep])  # the pixels above the same surface
    if not parts["minima"] or not sum(v.size for v in parts["minima"]):
        return None
    above, spans = [], []
    for key, p in ((0, ""), (1, "flat ")):
        above.append((peak[key] - np.median(np.concatenate(parts[p + "minima"]))) / sigma)
        lo, hi = np.percentile(np.concatenate(parts[p + "pixels"]), [1.0, 99.8])
        spans.append((hi - lo) / sigma)
    return float(min(above)), float(min(spans))
