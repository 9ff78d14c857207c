"""How the segmenter's outlines and small objects compare with BBBC039's manual labels.

Two diagnoses on BBBC039 validation fields, each from regions centred on true nuclei (at a
nucleus's deepest pixel), so they measure the segmenter alone, not the scorer or the resolve:

- ``profile``: the central channel's probability by signed distance to the true outline, for
  nuclei of at least 200 px (0: the outline's own pixels, inside; 1: the first pixel outside;
  pixels of other nuclei left out). Says whether masks are too wide by a bias (which a
  threshold would fix) or by a blur of the outline (which only a sharper segmenter fixes).
- ``small``: every true nucleus under 60 px (the shipped minimum area), isolated or touching
  another: its best predicted score on a 4 px grid inside it, and the IoU and area of the
  central mask's seed component of a region centred on it.

    python bench/outlines.py --json bench/results/outlines_bbbc039_val_v9.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bbbc039 import BBBC039, write_json
from scipy import ndimage as ndi

from spiralray import api
from spiralray.bench.engine import machine
from spiralray.core.candidates import prepare_object
from spiralray.core.config import CandidateSpec
from spiralray.core.prepare import prepare_image, select_plane
from spiralray.core.regions import crop_pad, grid_centres, inside_image, pad_image
from spiralray.core.spiral import ObjectMask
from spiralray.data.datasets import load_pairs

SMALL = 60  # px: the shipped minimum object area
BIG = 200  # px: nuclei whose outline profile is measured
DISTANCES = range(-3, 5)
BINS = ((0, 20), (20, 40), (40, 60))
NO_FILL = CandidateSpec(fill_holes=False)


def deepest_pixel(mask: np.ndarray, dist: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    k = int(np.argmax(dist[ys, xs]))
    return int(ys[k]), int(xs[k])


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """``h x w`` int: 0 on the mask's outline pixels, -1, -2 ... inward, 1, 2 ... outward."""
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    return np.where(mask, 1 - inside, outside).round().astype(int)


def region_window(centre, shape, r):
    """The region's top-left corner and whether it lies inside the image."""
    oy, ox = centre[0] - r.centre[0], centre[1] - r.centre[1]
    return oy, ox, oy >= 0 and ox >= 0 and oy + r.height <= shape[0] and ox + r.width <= shape[1]


def field(engine, image: np.ndarray, truth: np.ndarray, profile: dict, small: list) -> None:
    cfg = engine.cfg
    r = cfg.region
    x = prepare_image(select_plane(image, None), cfg)
    if x is None:
        return
    pad = crop_pad(r)
    padded = pad_image(x, pad)
    padded_t = torch.from_numpy(padded)
    shape = x.shape[1:]
    dist = ndi.distance_transform_edt(truth > 0)
    area = np.bincount(truth.ravel())
    # Only the nuclei either diagnosis reads: small ones, and big ones for the profile.
    ids = [t for t in range(1, len(area)) if 0 < area[t] < SMALL or area[t] >= BIG]
    centres = np.array([deepest_pixel(truth == t, dist) for t in ids], np.int64).reshape(-1, 2)
    probs = engine.region_probs(padded_t, pad, centres)[:, 0].numpy()
    scores = engine.score_map(padded, pad, shape, stride=4)
    grid = grid_centres(*shape, r, 4)
    valid = inside_image(grid, *shape)
    at = grid[valid]  # K x 2 image coords of the grid positions inside the image
    score_at, grid_truth = scores[valid], truth[at[:, 0], at[:, 1]]
    for t, c, p in zip(ids, centres, probs, strict=True):
        oy, ox, whole = region_window(c, shape, r)
        if area[t] >= BIG and whole:
            window = truth[oy : oy + r.height, ox : ox + r.width]
            sd = signed_distance(window == t)
            ok = (window == t) | (window == 0)
            for d in DISTANCES:
                profile.setdefault(d, []).append(p[(sd == d) & ok])
        if area[t] < SMALL:
            m = truth == t
            touching = bool((ndi.binary_dilation(m, iterations=2) & (truth > 0) & ~m).any())
            mask = p > cfg.spiral.threshold
            # The resolve's seed component (holes kept: the IoU of the mask as predicted).
            obj = prepare_object(ObjectMask(r.centre, 1.0, 0, 0, mask), NO_FILL)
            comp = obj.mask if obj is not None else np.zeros_like(mask)
            true_win = np.zeros_like(mask)
            y0, x0 = max(oy, 0), max(ox, 0)
            y1, x1 = min(oy + r.height, shape[0]), min(ox + r.width, shape[1])
            true_win[y0 - oy : y1 - oy, x0 - ox : x1 - ox] = m[y0:y1, x0:x1]
            iou = (comp & true_win).sum() / max((comp | true_win).sum(), 1)
            best = float(score_at[grid_truth == t].max(initial=0.0))
            small.append((int(area[t]), touching, best, float(iou), int(comp.sum())))


def summaries(profile: dict, small: list, threshold: float, score: float) -> dict:
    out = {"profile": {}, "small": {}}
    for d in DISTANCES:
        a = np.concatenate(profile.get(d, [np.zeros(0)]))
        out["profile"][str(d)] = {
            "pixels": int(a.size),
            f"over_{threshold}": round(float(np.mean(a > threshold)), 3) if a.size else None,
            "over_0.5": round(float(np.mean(a > 0.5)), 3) if a.size else None,
        }
    rows = np.array(small, float).reshape(-1, 5)
    for lo, hi in BINS:
        for touching in (False, True):
            s = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi) & (rows[:, 1] == touching)]
            if not len(s):
                continue
            name = f"{lo}-{hi} px, {'touching' if touching else 'isolated'}"
            empty = s[:, 4] == 0
            grown = s[~empty, 4]
            out["small"][name] = {
                "nuclei": len(s),
                f"score_over_{score}": round(float(np.mean(s[:, 2] >= score)), 2),
                "mask_iou_over_0.5": round(float(np.mean(s[:, 3] > 0.5)), 2),
                "empty_masks": round(float(np.mean(empty)), 2),
                "mean_area": round(float(s[:, 0].mean()), 1),
                "mean_mask_area_when_not_empty": round(float(grown.mean()), 1) if len(grown) else None,
            }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=f"{BBBC039}/val")
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--every", type=int, default=5, help="every Nth field (default 5: 10 of 50)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = api.load_engine(args.model, device="cpu")
    pairs = load_pairs(args.data)[:: args.every]
    profile, small = {}, []
    for image, truth in pairs:
        field(engine, image, truth, profile, small)
    cfg = engine.cfg
    out = {
        "benchmark": "outlines and small nuclei",
        "data": f"{args.data}: every {args.every}th field ({len(pairs)})",
        "model": args.model or "shipped",
        **summaries(profile, small, cfg.spiral.threshold, cfg.candidates.threshold),
        "machine_info": machine(),
    }
    print({k: out[k] for k in ("profile", "small")})
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
