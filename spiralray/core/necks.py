"""Lobes of a mask: where one object's mask narrows to a neck, it holds two touching nuclei.

The segmenter's commonest error on dense fields is a mask that floods across the seam of two
touching nuclei (bench/merges.py). Two touching round nuclei make a mask with two distance-
transform peaks and a narrow saddle between them; one nucleus, however irregular, has a ridge
whose saddles stay close to its peaks. ``lobes`` finds the watershed basins of the distance
transform and merges neighbouring basins, weakest separation first, until every remaining
border is a neck: its saddle (the widest point of the border, as an inscribed radius) is at
most ``neck`` times the smaller basin's peak, and both basins are objects (``min_area``).

The measure is a ratio of radii, so it does not depend on the nuclei's size. Pure NumPy, SciPy
and scikit-image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

# Neighbouring pixel pairs (8-connectivity): (slice of one pixel, slice of its neighbour).
_PAIRS = (
    ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
    ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),
)


def distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance ``h x w`` of each mask pixel to the nearest pixel outside the mask
    (the crop's edge counts as outside)."""
    return ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _saddles(basins: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """``(k+1) x (k+1)`` symmetric: the highest min(d) over neighbouring pixel pairs across
    each pair of basins' border (0 where they do not touch)."""
    s = np.zeros((k + 1, k + 1))
    for one, other in _PAIRS:
        a, b = basins[one], basins[other]
        sel = (a != b) & (a > 0) & (b > 0)
        if sel.any():
            v = np.minimum(d[one][sel], d[other][sel])
            np.maximum.at(s, (a[sel], b[sel]), v)
    return np.maximum(s, s.T)


def lobes(mask: np.ndarray, neck: float, min_area: int) -> np.ndarray | None:
    """The lobes of one object's mask, or None when it stays whole.

    mask: ``h x w`` bool. Returns ``h x w`` int32 lobe numbers 1..k (k >= 2; 0 outside the
    mask), numbered by their deepest pixel (distance descending, then row, then column).
    Lobes that touch no other lobe (a mask in pieces) count as separated by a neck of zero.
    """
    d = distance(mask)
    peaks = peak_local_max(d, min_distance=2, labels=mask.astype(np.int32), exclude_border=False)
    if len(peaks) < 2:
        return None
    k = len(peaks)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, k + 1)
    basins = watershed(-d, markers, mask=mask)
    index = np.arange(1, k + 1)
    peak = np.concatenate([[0.0], ndi.maximum(d, basins, index)])
    area = np.concatenate([[0], ndi.sum_labels(mask, basins, index)]).astype(np.int64)
    s = _saddles(basins, d, k)
    parent = np.arange(k + 1)
    alive = np.ones(k + 1, bool)
    alive[0] = False
    while True:
        # The weakest separation: a basin too small to be an object first, then the highest
        # saddle relative to the smaller peak.
        pairs = np.argwhere(np.triu(s > 0, 1) & alive[:, None] & alive[None, :])
        if not len(pairs):
            break
        a, b = pairs[:, 0], pairs[:, 1]
        small = np.minimum(area[a], area[b]) < min_area
        ratio = s[a, b] / np.minimum(peak[a], peak[b])
        worst = np.lexsort((ratio, small))[-1]
        if not small[worst] and ratio[worst] <= neck:
            break
        i, j = int(a[worst]), int(b[worst])  # merge j into i
        s[i] = np.maximum(s[i], s[j])
        s[:, i] = s[i]
        s[i, i] = 0
        s[j] = 0
        s[:, j] = 0
        peak[i] = max(peak[i], peak[j])
        area[i] += area[j]
        alive[j] = False
        parent[parent == j] = i
    # A lobe under min_area that touches no other joins the largest lobe.
    big = np.flatnonzero(alive & (area >= min_area))
    if len(big) < 2:
        return None
    largest = big[np.argmax(area[big])]
    parent = np.where(np.isin(parent, big), parent, largest)
    merged = parent[basins] * mask
    merged[mask & (basins == 0)] = largest  # mask pixels no basin reached
    return _number_by_depth(merged, d)


def _number_by_depth(merged: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Relabel the lobes 1..k by their deepest pixel (distance descending, then row, column)."""
    ys, xs = np.nonzero(merged)
    order = np.lexsort((xs, ys, -d[ys, xs]))
    found, first = np.unique(merged[ys[order], xs[order]], return_index=True)
    lut = np.zeros(int(merged.max()) + 1, np.int32)
    lut[found[np.argsort(first)]] = np.arange(1, len(found) + 1)
    return lut[merged]
