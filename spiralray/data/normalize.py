"""Per-image intensity normalisation. Statistics are per image (never per tile), so a tiled
run sees the same numbers as a whole-image run.

Percentiles are exact for every dtype and computed by streaming: each value maps to an
order-preserving unsigned key (integers offset, floats by their IEEE bit pattern) and a radix
select reads the chunks once per 16-bit digit (one pass for 8/16-bit data, two for 32-bit
integers and float32, four for 64-bit) with a 65,536-bin histogram, so the statistics of an
image bigger than memory equal ``np.percentile`` of the whole image (linear interpolation
between the two order statistics around ``(n - 1) q / 100``). Nothing is sampled.

Padding: a stitched, registered or cropped-and-padded image can hold blocks of one fill value
(0, or NaN) that are not data. Taken as data, 0 below a camera offset drags the low percentile
down and flattens the nuclei's contrast (HeLa test crops with their top 128 rows at 0: object
F1 0.0). A pad value the user names (``pad``) is left out of the statistics (``without_pad``).
No rule guesses it: a zero background beside uniformly bright objects looks the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Chunks = Callable[[], Iterable[np.ndarray]]  # a fresh iterator over the image's chunks per call


def _keys(a: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys (uint64) of a numeric array, flattened."""
    # native byte order first: the keys reinterpret the bytes (a big-endian zarr's '>u2' would
    # otherwise be read with its bytes swapped)
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")).ravel()
    if a.dtype.kind == "b":
        return a.astype(np.uint64)
    bits = a.dtype.itemsize * 8
    u = a.view(f"u{a.dtype.itemsize}").astype(np.uint64)
    sign = np.uint64(1 << (bits - 1))
    if a.dtype.kind == "u":
        return u
    if a.dtype.kind == "i":
        return u ^ sign
    # floats: negative numbers reverse their order, so flip all their bits; positives flip the sign
    full = np.uint64((1 << bits) - 1)
    return np.where(u & sign, ~u & full, u | sign)


def _value(key: int, dtype: np.dtype) -> float:
    """The value of an order-preserving key (inverse of ``_keys``) as a float."""
    bits = dtype.itemsize * 8
    sign = 1 << (bits - 1)
    if dtype.kind == "b":
        return float(key)
    if dtype.kind == "u":
        raw = key
    elif dtype.kind == "i":
        raw = key ^ sign
    else:
        raw = key ^ sign if key & sign else ~key & ((1 << bits) - 1)
    return float(np.array([raw], f"u{dtype.itemsize}").view(dtype.newbyteorder("="))[0])


def order_statistics(chunks: Chunks, dtype, ranks: list[int]) -> list[float]:
    """The values of rank ``ranks`` (0-based, in sorted order) of all values in ``chunks``."""
    dtype = np.dtype(dtype)
    bits = 1 if dtype.kind == "b" else dtype.itemsize * 8
    digit = min(bits, 16)
    want = sorted(set(ranks))
    state = {k: (0, k) for k in want}  # rank -> (key prefix found so far, rank within it)
    for shift in range(bits - digit, -1, -digit):
        prefixes = sorted({p for p, _ in state.values()})
        hists = {p: np.zeros(1 << digit, np.int64) for p in prefixes}
        for chunk in chunks():
            keys = _keys(chunk)
            high = keys >> np.uint64(shift + digit) if shift + digit < 64 else np.zeros_like(keys)
            low = ((keys >> np.uint64(shift)) & np.uint64((1 << digit) - 1)).astype(np.int64)
            for p in prefixes:
                sel = low if len(prefixes) == 1 and shift + digit >= bits else low[high == np.uint64(p)]
                hists[p] += np.bincount(sel, minlength=1 << digit)
        for k, (p, r) in state.items():
            cum = np.cumsum(hists[p])
            d = int(np.searchsorted(cum, r, side="right"))
            state[k] = ((p << digit) | d, r - (int(cum[d - 1]) if d else 0))
    return [_value(state[k][0], dtype) for k in ranks]


def is_pad(a: np.ndarray, pad: float) -> np.ndarray:
    """Where ``a`` holds the pad value (NaN matches NaN), as a bool array of its shape."""
    a = np.asarray(a)
    if np.isnan(pad):
        return np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    return a == pad


def pad_text(value: float) -> str:
    """A pad value as the user would type it, every digit kept (1234567, not 1.23457e+06): a
    float32 image's pad matches only its float64 value written out whole."""
    return np.format_float_positional(value, trim="-")


def without_pad(chunks: Chunks, pad: float | None) -> Chunks:
    """The chunks' values other than the pad value (flattened), or ``chunks`` itself for None."""
    if pad is None:
        return chunks
    return lambda: (a[~is_pad(a, pad)] for a in (np.asarray(c) for c in chunks()))


# Polarity: the model knows bright nuclei on a darker background. An image's polarity compares
# the tails around its median: (P99.8 - P50 - (P50 - P0.2)) / (P99.8 - P0.2), +1 where objects
# stand above a background (fluorescence), -1 where they sink below one (brightfield, a stain's
# absorbance), near 0 for noise (symmetric percentiles: the noise adds about the same to both
# tails; 8-bit rounding can leave +-0.4). Under DARK_ON_BRIGHT the summary hints at --invert (or,
# read inverted, at leaving it out); an image judged noise only needs twice that. BBBC039, HeLa
# and DSB read +0.81 to +0.98 (shifted HeLa from +0.47), their inversions as far below 0; 198 of
# 200 inverted synthetic training fields fall under -0.3 (bench/polarity.py). Only a hint: a
# confluent field of bright nuclei, its median a nucleus, reads about -0.5, so nothing is
# inverted automatically. Padding nobody named (a block of 0 below a camera offset) makes a dark
# tail of one value far below the rest: the hint then names --pad-value too. A field of low
# counts read inverted (all but a few pixels at its top value) reads -1 and is hinted.
POLARITY_TAIL = 0.2  # percent, at each end
DARK_ON_BRIGHT = -0.3


def polarity(windows, invert: bool = False, pad: float | None = None) -> tuple[float, float | None] | None:
    """(polarity (-1..1, above), floor) of the sample ``windows`` (``H x W`` arrays, the pad
    value's pixels left out), negated first when ``invert``; floor: the value (in the image's
    own units) that alone fills the dark tail, as padding would, else None. None for a constant
    sample."""
    values = np.concatenate([np.asarray(w).ravel() for w in windows])
    if pad is not None:
        values = values[~is_pad(values, pad)]
    values = values.astype(np.float64)
    if invert:
        values = -values
    if values.size == 0:
        return None
    lo, med, hi = np.percentile(values, [POLARITY_TAIL, 50, 100 - POLARITY_TAIL])
    if not hi > lo:
        return None
    return float(((hi - med) - (med - lo)) / (hi - lo)), _floor(values, lo, hi, invert)


def _floor(values: np.ndarray, lo: float, hi: float, invert: bool) -> float | None:
    """The value that fills the dark tail (``lo``, the sample's minimum) as padding would: a
    block of one value far below every other (a gap of over 5% of the tails' span), unlike
    clipped dark pixels or quantised data, whose next values sit right above. In the image's
    own units (negated back when ``invert``); None otherwise."""
    if lo != values.min():
        return None
    rest = values[values > lo]
    if rest.size == 0 or rest.min() - lo <= 0.05 * (hi - lo):
        return None
    return float(-lo if invert else lo)


def looks_inverted(info: dict) -> bool:
    """Whether an image's plan (its ``diameter`` info) says it looks read the wrong way."""
    p = info.get("polarity")
    limit = 2 * DARK_ON_BRIGHT if info.get("reason") == "noise only" else DARK_ON_BRIGHT
    return p is not None and p < limit


def count_values(chunks: Chunks) -> int:
    return sum(int(np.asarray(c).size) for c in chunks())


def percentiles(chunks: Chunks, dtype, qs: tuple[float, ...], n: int | None = None) -> list[float]:
    """Exact ``np.percentile(image, qs)`` (linear method) of the values in ``chunks``."""
    n = count_values(chunks) if n is None else n
    if n == 0:
        raise ValueError("no values")
    spots = []
    for q in qs:
        virtual = (n - 1) * (q / 100.0)
        lo = int(np.floor(virtual))
        spots.append((lo, min(lo + 1, n - 1), virtual - lo))
    ranks = [r for lo, hi, _ in spots for r in (lo, hi)]
    values = dict(zip(ranks, order_statistics(chunks, dtype, ranks), strict=True))
    out = []
    for lo, hi, t in spots:
        a, b = values[lo], values[hi]
        # numpy's _lerp: from the nearer end, so the result is exact at both ends
        out.append(float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t))
    return out


def streaming_stats(
    chunks: Chunks,
    dtype,
    method: str = "percentile",
    low: float = 1.0,
    high: float = 99.8,
    n: int | None = None,
) -> tuple[float, float]:
    """(lo, hi) normalisation bounds of an image given as chunks (any dtype, exact); ``n``: the
    number of values, when known (saves a pass)."""
    if method == "minmax":
        lo, hi = np.inf, -np.inf
        for c in chunks():
            if np.asarray(c).size:
                lo, hi = min(lo, float(np.min(c))), max(hi, float(np.max(c)))
        return float(lo), float(hi)
    if method == "percentile":
        lo, hi = percentiles(chunks, dtype, (low, high), n)
        return lo, hi
    raise ValueError(f"unknown normalisation '{method}' (use 'percentile' or 'minmax')")


def image_stats(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> tuple[float, float]:
    """(lo, hi) intensity bounds: min-max (the thesis) or percentiles (robust across microscopes)."""
    a = np.asarray(image)
    return streaming_stats(lambda: [a], a.dtype, method, low, high)


def apply_stats(image: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
    """Map ``lo`` to 0 and ``hi`` to 1, as float32 (NumPy 2 would otherwise promote to float64).
    Bounds given high first (``lo > hi``) invert the image: dark nuclei on a bright background
    come out bright on dark. A constant image maps to zeros."""
    lo, hi = stats
    a = np.asarray(image)
    # every dtype the same way, in float64, the offset first: the same values as uint16 or as
    # float32 give the same labels (a user test saw 1-3 px differ, from float32 rounding in one
    # path and not the other); float32 holds 24 bits (16-bit data 2^40 above zero lost every
    # level), and float32 data near its limits (1e-38, 3e38) overflowed the scale to inf
    d = a.astype(np.float64) - lo
    return (d * (1.0 / (hi - lo) if hi != lo else 0.0)).astype(np.float32)


def normalize(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> np.ndarray:
    return apply_stats(image, image_stats(image, method, low, high))


def working_dtype(dtype) -> np.dtype:
    """The float type an image's pixels are read in before normalisation: float32, which holds
    8/16-bit data and float32 exactly; float64 for 32/64-bit integers and float64 (float32 holds
    24 bits: uint64 data 2^40 above zero would lose every level before its offset goes)."""
    dtype = np.dtype(dtype)
    wide = dtype.itemsize > 2 and not (dtype.kind == "f" and dtype.itemsize <= 4)
    return np.dtype(np.float64 if wide else np.float32)


class FilledReader:
    """A reader whose pad pixels read as ``fill`` (the bound that maps to 0, i.e. background: the
    low one, or the high one of an inverted image's bounds), in the ``working_dtype``: the
    networks see no edge where padding meets the image. Other pixels keep their values."""

    def __init__(self, reader, pad: float, fill: float):
        self.reader, self.pad, self.fill = reader, pad, fill
        self.shape = reader.shape
        self.dtype = working_dtype(reader.dtype)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return fill_pad(self.reader.read(y0, y1, x0, x1), self.pad, self.fill)


def fill_pad(a: np.ndarray, pad: float, fill: float) -> np.ndarray:
    """``a`` in its ``working_dtype`` with its pad pixels set to ``fill``."""
    out = np.array(a, working_dtype(np.asarray(a).dtype))  # a copy: the array may be the caller's
    out[is_pad(a, pad)] = fill
    return out


def filled(reader, pad: float | None, stats: tuple[float, float] | None):
    """``reader`` with its pad pixels read as background, or itself when there is no pad value."""
    if pad is None or stats is None:
        return reader
    return FilledReader(reader, pad, stats[0])
