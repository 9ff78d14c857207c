"""Where SpiralNet's merges come from (issue 11's main error), on BBBC039 validation.

A merge: a predicted object that holds at least half of each of two or more true nuclei. For
every true nucleus swallowed by a merge other than the one holding the object's seed, the
cause is one of:
- ``no candidate``: no kept candidate seed lies inside it. Split by why: its best score is
  under the score threshold (``scorer below threshold``), or a candidate above it was
  suppressed by a stronger one within the NMS radius (``suppressed by NMS``);
- ``lost``: a candidate lay inside it, but its object did not survive the resolve; split by
  why (``_why_lost``): its own mask missed its seed, covered the merging nucleus too (a
  duplicate), was under ``min_area``, or the resolve would not carve the merging mask.
The first is the scorer's (or NMS's) error, the second the segmenter's: its mask for the
merging seed spilled over a neighbour that had its own seed. Beside the causes, ``... under
min_area`` counts the true nuclei (all, and swallowed) smaller than the model's minimum object
area: BBBC039 annotates micronuclei and blebs as objects of their own.

    python bench/merges.py --json bench/results/merges_bbbc039_val.json
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from bbbc039 import write_json

from spiralray import api
from spiralray.bench.engine import machine
from spiralray.core import candidates as cand
from spiralray.core.prepare import prepare_image, select_plane
from spiralray.core.regions import crop_pad, grid_centres, inside_image, pad_image
from spiralray.core.segment import candidate_seeds, refined, seed_ids, seed_labels
from spiralray.core.spiral import segment_objects
from spiralray.data.datasets import load_pairs


def swallowed(labels: np.ndarray, truth: np.ndarray) -> dict[int, list[int]]:
    """Predicted id -> true ids with at least half their area inside it (merges: two or more)."""
    t_area = np.bincount(truth.ravel())
    both = (labels > 0) & (truth > 0)
    pairs, counts = np.unique(np.stack([labels[both], truth[both]]), axis=1, return_counts=True)
    out = collections.defaultdict(list)
    for (p, t), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if n >= 0.5 * t_area[t]:
            out[p].append(t)
    return {p: ts for p, ts in out.items() if len(ts) > 1}


def diagnose(engine, image: np.ndarray, truth: np.ndarray) -> collections.Counter:
    """Merge and cause counts of one field (none for a constant image)."""
    cfg = engine.cfg
    x = prepare_image(select_plane(image, None), cfg)
    if x is None:
        return collections.Counter()
    pad = crop_pad(cfg.region)
    padded = pad_image(x, pad)
    shape = x.shape[1:]
    scores = engine.score_map(padded, pad, shape)
    seeds, seed_scores = candidate_seeds(scores, shape, cfg)
    padded_t = torch.from_numpy(padded)
    # segment_with's steps, keeping each candidate's own object from before the resolve
    objects = segment_objects(
        seeds, seed_scores, lambda c: engine.region_masks(padded_t, pad, c), shape, cfg.region, cfg.spiral
    )
    kept = cand.resolve_objects(refined(objects, x[0], cfg), shape, cfg.candidates)
    labels = seed_labels(kept, shape)
    ids = seed_ids(np.array([o.seed for o in kept], np.int64).reshape(-1, 2), shape)
    by_id = dict(zip(ids.tolist(), kept, strict=True))
    own = {tuple(o.seed): o for o in objects}
    seed_truth = truth[seeds[:, 0], seeds[:, 1]] if len(seeds) else np.zeros(0, int)
    centres = grid_centres(*shape, cfg.region, cfg.candidates.stride)
    valid = inside_image(centres, *shape)
    at = centres[valid]  # K x 2 image coords of valid grid positions
    score_at = scores[valid]
    grid_truth = truth[at[:, 0], at[:, 1]]
    counts = collections.Counter()
    small = np.bincount(truth.ravel()) < cfg.candidates.min_area  # by true id
    for p, trues in swallowed(labels, truth).items():
        merging = by_id[p]  # by its id: its seed pixel may have gone to a stronger neighbour
        owner = int(truth[merging.seed[0], merging.seed[1]])  # the nucleus it was seeded in
        counts["merges"] += 1
        for t in trues:
            if t == owner:
                continue
            counts["swallowed nuclei"] += 1
            counts["swallowed nuclei under min_area"] += int(small[t])
            inside = [tuple(s) for s in seeds[seed_truth == t].tolist()]
            if inside:
                counts["lost: " + _why_lost([own[s] for s in inside], merging, cfg)] += 1
            elif score_at[grid_truth == t].max(initial=0.0) < cfg.candidates.threshold:
                counts["no candidate: scorer below threshold"] += 1
            else:
                counts["no candidate: suppressed by NMS"] += 1
    true_ids = np.unique(truth)
    true_ids = true_ids[true_ids > 0]
    counts["true nuclei"] += len(true_ids)
    counts["true nuclei under min_area"] += int(small[true_ids].sum())
    return counts


def _why_lost(candidates, merging, cfg) -> str:
    """Why the swallowed nucleus's own candidates left no object (the first reason that holds
    for all of them, in this order)."""
    prepared = [cand.prepare_object(o, cfg.candidates) for o in candidates]
    if all(p is None for p in prepared):
        return "its mask missed its own seed"
    live = [p for p in prepared if p is not None]
    if all(p.holds(merging.seed) for p in live):
        return "its mask also covered the merging nucleus"
    if all(p.area < cfg.candidates.min_area for p in live):
        return "its mask under min_area"
    return "resolve kept the merging mask (carve refused)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/bbbc039/val")
    ap.add_argument("--model", default=None)
    ap.add_argument("--fields", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    engine = api.load_engine(args.model, device="cpu")
    pairs = load_pairs(args.data)[: args.fields]
    total = collections.Counter()
    for image, truth in pairs:
        total += diagnose(engine, image, truth)
    out = {
        "benchmark": "merge causes",
        "data": f"{args.data}: {len(pairs)} fields",
        "model": args.model or "shipped",
        "counts": dict(total),
        "machine_info": machine(),
    }
    print(out["counts"])
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
