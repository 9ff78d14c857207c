"""Outline refinement: peel an object's outline pixels that are dimmer than a fraction of the way
from its local background to its interior.

The segmenter places a nucleus's edge with a blur of about two pixels: on BBBC039 validation 84%
of v10's false-positive pixels lay in the first ring outside the manual outline (docs/training.md,
seventh session). Manual annotations put the edge where the intensity has risen about half way
from the background to the interior (``data.outlines``: BBBC039 0.55, DSB 2018 0.57 at the
outline; 0.29 and 0.38 one pixel outside). So each object's outline pixels whose normalised
intensity ``a = (I - background) / (interior - background)`` is under ``level`` are peeled, once.

Each object is refined on its own, from its own mask and the image around it: the interior is
the median of its pixels at least ``INTERIOR_DEPTH`` px inside, the background the median of the
ring ``BACKGROUND_RING`` px outside it (image pixels only, never the reflection past a border).
So the result is a function of the object and the image alone, wherever it is computed (a tile
or the whole image), and objects are refined before the resolve, where the image is at hand.
The seed pixel is never peeled. An object without a usable ring (fewer than ``MIN_BACKGROUND``
pixels), one not brighter than its surroundings, and one that would lose half its area are left
as they are.

The same reading drops faint small objects (``faint_object``): under an area and standing less
than a contrast above their local background, as textured background that the scorer passes does.

Pure NumPy, SciPy and scikit-image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from .spiral import ObjectMask

INTERIOR_DEPTH = 4  # interior level: median of the object's pixels at least this far inside (px)
BACKGROUND_RING = (5, 9)  # local background: median of this ring outside the mask (px)
MIN_BACKGROUND = 20  # fewer ring pixels (an object filling its surroundings): left as it is
MARGIN = BACKGROUND_RING[1] + 1  # image pixels read around an object's box

# read(y0, y1, x0, x1) -> the image's ``(y1 - y0) x (x1 - x0)`` float pixels (inside the image)
Read = Callable[[int, int, int, int], np.ndarray]


def _levels(
    mask: np.ndarray, image: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[float, float] | None:
    """(interior, background) as ``levels`` reads them, brighter or not; None without a ring."""
    depth = ndi.distance_transform_edt(mask)
    deep = depth >= INTERIOR_DEPTH
    inner = image[deep] if deep.any() else image[mask]
    out = ndi.distance_transform_edt(~mask)
    ring = (out >= BACKGROUND_RING[0]) & (out <= BACKGROUND_RING[1]) & np.isfinite(image)
    if exclude is not None:
        ring &= ~exclude
    if ring.sum() < MIN_BACKGROUND or not np.isfinite(inner).any():
        return None
    return float(np.nanmedian(inner)), float(np.median(image[ring]))


_UNREAD = object()  # levels not read yet (``None`` is a result: no ring)


def levels(
    mask: np.ndarray, image: np.ndarray, exclude: np.ndarray | None = None, raw=_UNREAD
) -> tuple[float, float] | None:
    """(interior, background) intensity of the object ``mask`` (``h x w`` bool) in ``image``
    (``h x w`` float): the median of its pixels at least ``INTERIOR_DEPTH`` px inside (all of
    them for a thin object) and of the ``BACKGROUND_RING`` outside it, less ``exclude`` (other
    objects) and non-finite pixels. None without ``MIN_BACKGROUND`` ring pixels, or when the
    object is not brighter than its surroundings: no outline to place. ``raw``: ``_levels``'s
    answer for these arguments when the caller already has it (two EDTs saved)."""
    got = _levels(mask, image, exclude) if raw is _UNREAD else raw
    return got if got is not None and got[0] > got[1] else None


def contrast(mask: np.ndarray, image: np.ndarray, raw=_UNREAD) -> float | None:
    """How far the object ``mask`` (``h x w`` bool) stands above its local background in
    ``image`` (``h x w`` float, normalised: 1 is the image's bright nuclei): interior less
    background as ``levels`` reads them, negative for a dark object; None without a ring.
    ``raw`` as in ``levels``."""
    got = _levels(mask, image) if raw is _UNREAD else raw
    return None if got is None else got[0] - got[1]


def peel(mask: np.ndarray, image: np.ndarray, level: float, raw=_UNREAD) -> np.ndarray:
    """``mask`` (``h x w`` bool) without its outline pixels whose normalised intensity in
    ``image`` (``h x w`` float, the same pixels) is under ``level``; the mask itself when the
    object's levels cannot be read (``levels``) or the peel would take half of it. ``raw`` as
    in ``levels``."""
    got = levels(mask, image, raw=raw)
    if got is None:
        return mask
    fg, bg = got
    dim = find_boundaries(mask, mode="inner") & ((image - bg) < level * (fg - bg))
    kept = mask & ~dim
    return kept if 2 * int(kept.sum()) >= int(mask.sum()) else mask


def context_box(o: ObjectMask, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Image box ``(y0, y1, x0, x1)`` an object's refinement reads: its mask's own bounding box
    (not empty) grown by ``MARGIN``, clipped to the image (``shape`` H x W)."""
    return _boxes(o, shape)[1]


def _boxes(o: ObjectMask, shape: tuple[int, int]):
    """(the mask's own box as slices of ``o.mask``, ``context_box``)."""
    ((ry, rx),) = ndi.find_objects(o.mask.astype(np.uint8))
    H, W = shape
    return (ry, rx), (
        max(o.y0 + ry.start - MARGIN, 0),
        min(o.y0 + ry.stop + MARGIN, H),
        max(o.x0 + rx.start - MARGIN, 0),
        min(o.x0 + rx.stop + MARGIN, W),
    )


def refine_objects(
    objects: list[ObjectMask | None],
    read: Read,
    shape: tuple[int, int],
    level: float,
    faint: tuple[float, int] = (0.0, 0),
) -> list[ObjectMask | None]:
    """Each object's mask peeled at ``level`` (``peel``) against the image (``shape`` H x W) that
    ``read`` returns around it. ``faint`` = (contrast, area): an object under ``area`` px whose
    ``contrast`` is under ``contrast`` becomes None (dropped; see ``faint_object``). None entries
    stay None; with ``level`` 0 and no faint rule the objects come back as they are."""
    if level <= 0 and not _faint_on(faint):
        return objects
    out: list[ObjectMask | None] = []
    for o in objects:
        if not reads_image(o, level, faint):
            out.append(o)
            continue
        (ry, rx), (y0, y1, x0, x1) = _boxes(o, shape)  # the mask's own box in o.mask, and around
        ty0, tx0 = o.y0 + ry.start, o.x0 + rx.start  # the mask's own box in the image
        h, w = ry.stop - ry.start, rx.stop - rx.start
        big = np.zeros((y1 - y0, x1 - x0), bool)
        inside = (slice(ty0 - y0, ty0 - y0 + h), slice(tx0 - x0, tx0 - x0 + w))
        big[inside] = o.mask[ry, rx]
        image = np.asarray(read(y0, y1, x0, x1), np.float32)
        raw = _levels(big, image)  # read once: the faint rule and the peel share it
        if faint_object(big, image, faint, raw):
            out.append(None)
            continue
        if level <= 0:
            out.append(o)
            continue
        mask = o.mask.copy()
        mask[ry, rx] = peel(big, image, level, raw)[inside]
        if o.holds(o.seed):  # the seed stays: without it the resolve would drop the object
            mask[o.seed[0] - o.y0, o.seed[1] - o.x0] = True
        out.append(ObjectMask(o.seed, o.score, o.y0, o.x0, mask, o.regions))
    return out


def _faint_on(faint: tuple[float, int]) -> bool:
    return faint[0] > 0 and faint[1] > 0


def reads_image(o: ObjectMask | None, level: float, faint: tuple[float, int]) -> bool:
    """Whether ``refine_objects`` reads the image around the object ``o``: to peel it (``level``
    over 0), or to judge it under the faint rule (an object under its area). The tiled path reads
    ahead exactly these objects' ``context_box``es."""
    if o is None or not o.mask.any():
        return False
    return level > 0 or (_faint_on(faint) and o.area < faint[1])


def faint_object(mask: np.ndarray, image: np.ndarray, faint: tuple[float, int], raw=_UNREAD) -> bool:
    """Whether the object ``mask`` (``h x w`` bool, in ``image``'s ``h x w`` normalised pixels)
    is under ``faint[1]`` px and stands less than ``faint[0]`` above its local background
    (``contrast``): a patch of textured background (a tissue section's autofluorescence, uneven
    illumination, noise), not a nucleus. On HeLa validation frames under a tissue's
    autofluorescence such patches have a median contrast of ~0.1; matched nuclei ~0.5, but the
    dimmest 5% of them ~0.1 too (docs/training.md, thirteenth session). Larger faint objects,
    and those without a background ring, stay. ``raw`` as in ``levels``."""
    c, area = faint
    if not _faint_on(faint) or int(mask.sum()) >= area:
        return False
    got = contrast(mask, image, raw)
    return got is not None and got < c
