"""Pixel and object metrics for instance label images (``H x W`` ints, 0 = background).

Objects are matched one-to-one by IoU with an optimal assignment (Hungarian), as in the
Data Science Bowl / StarDist convention; a match counts at IoU >= the threshold.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import clear_border

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.901, 0.05), 2))


def _f1(tp: float, fp: float, fn: float) -> float:
    return float(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else 1.0


def overlap_table(pred: np.ndarray, truth: np.ndarray):
    """Intersections ``n_truth x n_pred`` and areas of the (consecutive-relabelled) objects."""
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    nt, np_ = len(t_ids), len(p_ids)
    inter = np.bincount(t_inv.ravel() * np_ + p_inv.ravel(), minlength=nt * np_).reshape(nt, np_)
    # Drop background rows/cols (id 0 sorts first when present).
    t0, p0 = int(t_ids[0] == 0), int(p_ids[0] == 0)
    inter = inter[t0:, p0:]
    t_area = np.bincount(t_inv.ravel(), minlength=nt)[t0:]
    p_area = np.bincount(p_inv.ravel(), minlength=np_)[p0:]
    return inter, t_area, p_area


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    inter, t_area, p_area = overlap_table(pred, truth)
    union = t_area[:, None] + p_area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match(iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one matches with IoU >= threshold under the optimal assignment."""
    if iou.size == 0:
        return 0
    cost = -(iou * (iou >= threshold))
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero(iou[rows, cols] >= threshold))


def _counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Raw counts of one pair: matches per IoU threshold, object and pixel counts."""
    inter, t_area, p_area = overlap_table(pred, truth)
    union = t_area[:, None] + p_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    truth_in_pred = inter > 0.5 * t_area[:, None]
    pred_in_truth = inter > 0.5 * p_area[None, :]
    p, t = pred > 0, truth > 0
    return {
        "matches": np.array([match(iou, th) for th in THRESHOLDS]),
        "merges": int(np.count_nonzero(truth_in_pred.sum(0) >= 2)),
        "splits": int(np.count_nonzero(pred_in_truth.sum(1) >= 2)),
        "n_pred": len(p_area),
        "n_truth": len(t_area),
        "px_tp": int(np.count_nonzero(p & t)),
        "px_fp": int(np.count_nonzero(p & ~t)),
        "px_fn": int(np.count_nonzero(~p & t)),
    }


def _scores(c: dict) -> dict:
    n_p, n_t = c["n_pred"], c["n_truth"]
    f1s = [_f1(tp, n_p - tp, n_t - tp) for tp in c["matches"]]
    tp, fp, fn = c["px_tp"], c["px_fp"], c["px_fn"]
    tp50 = int(c["matches"][0])
    return {
        "pixel_precision": tp / (tp + fp) if tp + fp else float(fn == 0),
        "pixel_recall": tp / (tp + fn) if tp + fn else float(fp == 0),
        "pixel_f1": _f1(tp, fp, fn),
        "object_f1_50": f1s[0],
        "object_f1_mean_50_90": float(np.mean(f1s)),
        "tp": tp50,
        "fp": n_p - tp50,
        "fn": n_t - tp50,
        "merges": c["merges"],
        "splits": c["splits"],
        "n_pred": n_p,
        "n_truth": n_t,
    }


def evaluate(pred: np.ndarray, truth: np.ndarray) -> dict:
    """All metrics of one image pair: pixel precision / recall / F1, object F1 at IoU 0.5 and
    its mean over IoU 0.50-0.90, TP / FP / FN at 0.5, merges and splits.

    A merge is a predicted object holding > 50% of the area of each of >= 2 true objects; a
    split is a true object holding > 50% of the area of each of >= 2 predicted objects.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs truth {truth.shape}")
    return _scores(_counts(pred, truth))


def evaluate_many(pairs, exclude_border: bool = False) -> dict:
    """Metrics pooled over images: counts summed, scores computed from the pooled counts.
    ``exclude_border``: objects touching the image border are removed from both sides first
    (for labels that leave cut nuclei unannotated)."""
    total = None
    for pred, truth in pairs:
        if exclude_border:
            pred, truth = clear_border(pred), clear_border(truth)
        c = _counts(pred, truth)
        total = c if total is None else {k: total[k] + c[k] for k in c}
    if total is None:
        raise ValueError("no image pairs to evaluate")
    return _scores(total)


def labels_equal(
    a: np.ndarray, b: np.ndarray, min_iou: float = 0.99, max_pixel_fraction: float = 1e-4
) -> dict:
    """The same answer (DESIGN section 2): the objects match one-to-one with IoU >= 0.99 and
    the foreground differs on fewer than 1 in 10,000 pixels. Ids need not be equal here; tests
    that need equal ids compare arrays directly."""
    iou = iou_matrix(a, b) if a.any() or b.any() else np.zeros((0, 0))
    n_a, n_b = iou.shape[1], iou.shape[0]
    matched = match(iou, min_iou) if iou.size else 0
    differing = int(np.count_nonzero((a > 0) != (b > 0)))
    return {
        "equal": bool(matched == n_a == n_b and differing < max_pixel_fraction * a.size),
        "objects": [n_a, n_b],
        "matched": matched,
        "differing_pixels": differing,
    }


# Separate regions per id beyond which an integer image is not a label image: real label maps
# measure 1.0 (HeLa, all 150 BBBC039 fields), their images 100 or more; a small noisy image has
# fewer grey values to repeat (~2), but its regions are single pixels (SPECKLE).
SCATTER, SPECKLE = 3.0, 4.0


def as_instances(a: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An ``H x W`` integer image read as instance labels: ``(labels, note)``.

    A 0/1 mask (one id, several separate regions) becomes its connected components, and
    ``note`` says so. An image whose ids each scatter over many separate regions (on average
    more than ``SCATTER``, or more than 1.5 of under ``SPECKLE`` px) is an intensity image, not
    labels: ValueError. Label maps whose objects are split in a few pieces (flattened overlaps)
    stay well below that. Negative ids (an "ignore" value) are refused: ValueError."""
    from skimage.measure import label

    ids = np.unique(a)
    if len(ids) and ids[0] < 0:  # -1 "ignore" regions, or overflowed signed ids: not scorable as objects
        raise ValueError(
            f"not a label image: it holds negative ids (as low as {ids[0]}); labels hold 0 for "
            "background and a positive id per object"
        )
    n_ids = int(len(ids) - (ids[0] == 0))
    if n_ids == 0:
        return a, None
    regions = label(a, background=0, connectivity=2)
    n_regions = int(regions.max())
    if n_ids == 1 and n_regions > 1:
        return (
            regions,
            f"one value over {n_regions} separate regions: read as a mask, its regions as the objects",
        )
    speckle = np.count_nonzero(a) < SPECKLE * n_regions
    if n_regions > SCATTER * n_ids or (speckle and n_regions > 1.5 * n_ids):
        raise ValueError(
            f"not a label image: its {n_ids} values repeat over {n_regions} separate regions (an "
            "intensity image, a class map or overflowed uint8 ids? labels hold one id per object, 0 "
            "for background)"
        )
    return a, None
