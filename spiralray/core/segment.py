"""One image through both stages, with pluggable arithmetic (reference or fast engine).

image -> per-image normalisation -> score map -> order-free candidates ->
spiral segmentation with border continuation -> resolve -> instance labels
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import candidates as cand
from . import outline
from .config import SpiralNetConfig
from .objects import paint, seed_ids, touches_border
from .regions import grid_centres, inside_image
from .spiral import ObjectMask, RegionMasks, segment_objects


@dataclass
class Segmentation:
    labels: np.ndarray  # H x W seed ids (core.objects; uint32, uint64 past 2^32 px) (0 = background)
    objects: list[ObjectMask]  # resolved objects, disjoint masks
    scores: np.ndarray  # gh x gw score map (clipped to [0, 1])
    n_candidates: int
    n_regions: int  # regions segmented, border continuations included

    @property
    def semantic(self) -> np.ndarray:
        """H x W uint8 foreground mask (the semantic output)."""
        return (self.labels > 0).astype(np.uint8)


def candidate_seeds(scores: np.ndarray, image_shape, cfg: SpiralNetConfig):
    """Kept candidates as (seeds ``K x 2`` image coords, their scores ``K``)."""
    H, W = image_shape
    centres = grid_centres(H, W, cfg.region, cfg.candidates.stride)
    valid = inside_image(centres, H, W)
    idx = cand.select_candidates(scores, valid, cfg.candidates)
    return centres[idx[:, 0], idx[:, 1]].reshape(-1, 2), scores[idx[:, 0], idx[:, 1]]


def segment_with(
    image_shape: tuple[int, int],
    scores: np.ndarray,
    region_masks: RegionMasks,
    cfg: SpiralNetConfig,
    on_progress: Callable[[int], None] | None = None,
    image: np.ndarray | None = None,
) -> Segmentation:
    """Stage 2 and assembly, given the score map and a ``region_masks`` implementation.

    image: the ``H x W`` normalised plane outlines are refined and faint objects read against
    (``cfg.candidates.outline_level``, ``cfg.candidates.faint``; None: neither)."""
    seeds, seed_scores = candidate_seeds(scores, image_shape, cfg)
    counted = [0]

    def counting(centres):
        counted[0] += len(centres)
        if on_progress:
            on_progress(len(centres))
        return region_masks(centres)

    objects = segment_objects(seeds, seed_scores, counting, image_shape, cfg.region, cfg.spiral)
    objects = refined(objects, image, cfg)
    kept = cand.resolve_objects(objects, image_shape, cfg.candidates)
    if cfg.candidates.exclude_border:
        kept = [o for o in kept if not touches_border(o, image_shape)]
    labels = seed_labels(kept, image_shape)
    return Segmentation(labels, kept, scores, len(seeds), counted[0])


def refined(objects: list[ObjectMask], image: np.ndarray | None, cfg: SpiralNetConfig) -> list:
    """Objects prepared for the resolve (``candidates.prepare_object``; those whose seed left
    the mask dropped), their outlines refined and faint objects dropped against ``image``
    (``H x W``) when the config asks (``core.outline``). The tiled path does the same per tile,
    reading the image around each object (``pipeline.tiles.segment_candidates``)."""
    prepared = [p for p in (cand.prepare_object(o, cfg.candidates) for o in objects) if p is not None]
    if image is None:
        return prepared
    read = lambda y0, y1, x0, x1: image[y0:y1, x0:x1]  # noqa: E731
    c = cfg.candidates
    refined = outline.refine_objects(prepared, read, image.shape, c.outline_level, c.faint)
    return [o for o in refined if o is not None]  # faint objects dropped


def seed_labels(objects: list[ObjectMask], image_shape: tuple[int, int]) -> np.ndarray:
    """Label image ``H x W`` of seed ids (image index 0): uint32 while they fit, else uint64."""
    ids = seed_ids(np.array([o.seed for o in objects], np.int64).reshape(-1, 2), image_shape)
    dtype = np.uint32 if image_shape[0] * image_shape[1] < 2**32 else np.uint64
    return paint(objects, ids, image_shape, dtype)
