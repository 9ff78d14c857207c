"""What happens to each true nucleus of BBBC039 validation, and what the false positives are:
where object F1@0.5 is lost, by object size (issue 11's remaining gap).

Each true nucleus is matched (IoU >= 0.5, optimal one-to-one assignment) or, if not, classed by
its overlaps: ``missed`` (under 30% of it covered), ``merged`` (its best-overlapping prediction
holds half of two or more true nuclei), ``split`` (two or more predictions each cover a fifth of
it), else ``poor`` (covered, IoU under 0.5). Each unmatched prediction is ``background`` (under
30% of it on nuclei), ``merge`` or ``part``. ``--min-area`` overrides the model's minimum object
area, to see what smaller objects it would let through.

    python bench/misses.py --json bench/results/misses_bbbc039_val.json
    python bench/misses.py --min-area 30 --json /tmp/misses_30.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bbbc039 import BBBC039, write_json
from scipy.optimize import linear_sum_assignment

from spiralray import api
from spiralray.core.metrics import evaluate, overlap_table
from spiralray.data.datasets import load_pairs

SMALL = 60  # px: the shipped model's minimum object area


def classify(pred: np.ndarray, truth: np.ndarray) -> tuple[dict, dict]:
    """({class: areas of the true nuclei in it}, {class: areas of unmatched predictions})."""
    inter, t_area, p_area = overlap_table(pred, truth)
    union = t_area[:, None] + p_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    rows, cols = linear_sum_assignment(-(iou * (iou >= 0.5)))
    good = iou[rows, cols] >= 0.5
    matched_t, matched_p = set(rows[good]), set(cols[good])
    merging = (inter > 0.5 * t_area[:, None]).sum(0) >= 2  # predictions holding 2+ true nuclei
    truths = {k: [] for k in ("matched", "missed", "merged", "split", "poor")}
    for i, area in enumerate(t_area):
        if i in matched_t:
            kind = "matched"
        elif inter[i].sum() < 0.3 * area:
            kind = "missed"
        elif merging[inter[i].argmax()]:
            kind = "merged"
        elif (inter[i] > 0.2 * area).sum() >= 2:
            kind = "split"
        else:
            kind = "poor"
        truths[kind].append(int(area))
    preds = {k: [] for k in ("background", "merge", "part")}
    for j, area in enumerate(p_area):
        if j not in matched_p:
            kind = "background" if inter[:, j].sum() < 0.3 * area else "merge" if merging[j] else "part"
            preds[kind].append(int(area))
    return truths, preds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--bbbc039", default=f"{BBBC039}/val")
    ap.add_argument("--min-area", type=int, default=None, help="override the model's minimum object area")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = api.load_engine(args.model, device="cpu")
    if args.min_area is not None:
        engine.net.config = engine.net.config.replace(candidates={"min_area": args.min_area})
        engine.cfg = engine.net.config
    truths, preds, per = {}, {}, []
    for image, truth in load_pairs(args.bbbc039):
        pred = api.segment_image(engine, image, diameter=None).labels
        per.append(evaluate(pred, truth))
        t, p = classify(pred, truth)
        for out, got in ((truths, t), (preds, p)):
            for k, v in got.items():
                out.setdefault(k, []).extend(v)
    table = {
        k: {
            "n": len(v),
            f"under_{SMALL}px": sum(a < SMALL for a in v),
            "median_area": float(np.median(v or [0])),
        }
        for k, v in {**truths, **{f"false_{k}": v for k, v in preds.items()}}.items()
    }
    for k, row in table.items():
        small, median = row[f"under_{SMALL}px"], row["median_area"]
        print(f"{k:17s} {row['n']:5d}  under {SMALL} px: {small:4d}  median {median:.0f} px")
    means = {k: round(float(np.mean([r[k] for r in per])), 4) for k in ("pixel_f1", "object_f1_50", "splits")}
    print("per-image means:", means)
    if args.json:
        write_json(
            args.json,
            {
                "model": args.model or "shipped",
                "min_area": args.min_area,
                "fields": len(per),
                "per_image_mean": means,
                "classes": table,
            },
        )


if __name__ == "__main__":
    main()
