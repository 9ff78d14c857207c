"""Shapes of synthetic nuclei and their placement in a frame: irregular ellipses, mitotic
figures (condensed clumps, metaphase rods, pairs of daughter nuclei), occlusion and renumbering.

A shape is a small ``h x w`` uint8 box holding 0 outside and 1..k for its k objects (k = 2 for
a pair of daughters, 1 otherwise), centred in the box. Pure NumPy / SciPy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

MITOTIC_KINDS = ("clump", "rod", "pair")


def nucleus(
    rng, a: float, b: float, angle: float, irregular: float = 0.06, harmonics=(2, 3, 5)
) -> np.ndarray:
    """A bool ``(2r + 1) x (2r + 1)`` mask of an ellipse with semi-axes a, b whose radius wobbles
    by up to ``irregular`` per harmonic of the polar angle, centred in its box."""
    r = int(np.ceil(max(a, b) * 1.25)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    theta = np.arctan2(v, u)
    wobble = 1.0
    for k in harmonics:
        wobble = wobble + rng.uniform(0, irregular) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (u / a) ** 2 + (v / b) ** 2 <= wobble**2


def mitotic(rng, a: float, kind: str) -> np.ndarray:
    """A mitotic figure of a cell whose interphase nucleus has semi-axis ``a`` (uint8 box).

    clump: prometaphase chromatin, condensed to half the size, ragged outline; rod: a metaphase
    plate seen edge-on, 3-5x longer than wide; pair: anaphase / telophase, two small daughters
    (ids 1 and 2) side by side across a gap, separated along their short axis.
    """
    angle = rng.uniform(0, np.pi)
    if kind == "clump":
        aa = max(a * rng.uniform(0.45, 0.7), 2.5)
        m = nucleus(rng, aa, aa / rng.uniform(1.0, 1.4), angle, rng.uniform(0.12, 0.25), (3, 4, 5, 7))
        return m.astype(np.uint8)
    if kind == "rod":
        aa = max(a * rng.uniform(0.6, 1.0), 4.0)
        return nucleus(rng, aa, max(aa / rng.uniform(2.5, 4.5), 1.6), angle, 0.1).astype(np.uint8)
    if kind != "pair":
        raise ValueError(f"unknown mitotic kind {kind!r}; expected one of {MITOTIC_KINDS}")
    aa = max(a * rng.uniform(0.4, 0.6), 2.5)
    bb = max(aa / rng.uniform(1.0, 2.5), 1.6)
    gap = rng.uniform(1.0, max(a, 2.0))
    halves = [nucleus(rng, aa, bb, angle, 0.08) for _ in range(2)]
    r = halves[0].shape[0] // 2
    # The daughters move apart along the plate's normal (the ellipse's minor axis).
    dy, dx = (bb + gap / 2) * np.cos(angle), -(bb + gap / 2) * np.sin(angle)
    R = r + int(np.ceil(max(abs(dy), abs(dx)))) + 1
    box = np.zeros((2 * R + 1, 2 * R + 1), np.uint8)
    for sign, (half, k) in zip((-1, 1), zip(halves, (1, 2), strict=True), strict=True):
        y0, x0 = R + int(round(sign * dy)) - r, R + int(round(sign * dx)) - r
        view = box[y0 : y0 + half.shape[0], x0 : x0 + half.shape[1]]
        view[half & (view == 0)] = k
    return box


def place(
    rng,
    height: int,
    width: int,
    target: int,
    shape: Callable[[], tuple[np.ndarray, object]],
    paint: Callable[..., None],
    max_overlap: float,
) -> np.ndarray:
    """Drops up to ``target`` objects from ``shape()`` at random positions (a box may hang half
    out of the frame); a later object occludes earlier ones where it overlaps them by at most
    ``max_overlap`` of its visible area. ``paint(ys, xs, box, sub, info)`` renders each placed
    shape: ``ys, xs`` the frame window, ``box`` the whole shape, ``sub`` the window's part of it
    (``box[sub] > 0`` is what shows). Returns labels ``H x W`` int32, ids 1..N, each id one
    connected piece (occlusion can cut one; tiny remnants are dropped)."""
    labels = np.zeros((height, width), np.int32)
    placed, tries = 0, 0
    while placed < target and tries < target * 20:
        tries += 1
        box, info = shape()
        ry, rx = box.shape[0] // 2, box.shape[1] // 2
        cy, cx = rng.integers(-ry // 2, height + ry // 2), rng.integers(-rx // 2, width + rx // 2)
        y0, x0 = cy - ry, cx - rx
        ys = slice(max(y0, 0), min(y0 + box.shape[0], height))
        xs = slice(max(x0, 0), min(x0 + box.shape[1], width))
        sub = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        part = box[sub]
        visible = part > 0
        if visible.sum() < 20:
            continue
        if (labels[ys, xs][visible] > 0).mean() > max_overlap:
            continue
        labels[ys, xs][visible] = placed + part[visible].astype(np.int32)
        placed += int(box.max())
        paint(ys, xs, box, sub, info)
    # Keep only labels that survive occlusion, renumbered 1..N.
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return drop_fragments(lut[labels])


def drop_fragments(labels: np.ndarray, min_area: int = 15) -> np.ndarray:
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
