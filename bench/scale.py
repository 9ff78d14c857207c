"""The automatic nucleus-size estimate (``spiralray.core.scale``) against the labels.

Per image: the true median equivalent diameter of the labels, the estimate, the error, and the
factor ``choose_scale`` picks with where it puts the nuclei relative to the model's diameter.
Report sets (nothing is tuned on them): BBBC039 validation (50 fields), HeLa validation frames
14-16, both zoomed x0.5, x2.5 and x3 (skimage rescale, linear; labels nearest), and the DSB 2018
image (generalisation, never tuned on) at the same zooms. ``--tuning`` adds the sets the method
was chosen on: BBBC039 train, HeLa 0-13 (x0.35, x1, x2.5) and synthetic nuclei 8-150 px across.
Also the model diameter: the median equivalent diameter of HeLa 0-13's labels.

    python bench/scale.py [--tuning] [--out bench/results/scale_estimate.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from skimage.transform import rescale

from spiralray.core.scale import (
    MODEL_DIAMETER,
    choose_scale,
    estimate_diameter,
    median_diameter,
)
from spiralray.data.datasets import HELA_NOTE, HELA_SPLIT, load_pairs
from spiralray.data.synthetic import SyntheticSpec, generate

ZOOMS = (0.5, 1.0, 2.5, 3.0)


def zoomed(image: np.ndarray, labels: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    if zoom == 1:
        return image, labels
    im = rescale(image.astype(np.float32), zoom, order=1, preserve_range=True, anti_aliasing=zoom < 1)
    lb = rescale(labels, zoom, order=0, preserve_range=True, anti_aliasing=False)
    return im.astype(np.float32), lb.astype(np.int32)


def synthetic(diameter: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic nuclei ~``diameter`` px across (semi-axes scaled so the median equivalent
    diameter lands near it), ~25% of the area covered, on a frame of ~12 diameters a side."""
    a = diameter / 2 * 1.15
    side = int(np.clip(diameter * 12, 256, 1600))
    spec = SyntheticSpec(
        side, side, density=0.25 / (np.pi * (diameter / 2) ** 2), radius=(0.8 * a, 1.2 * a), max_overlap=0.1
    )
    return generate(spec, seed)


def area_weighted_diameter(labels: np.ndarray) -> float:
    """The equivalent diameter of the object holding the median nucleus pixel (px): the size
    most of the nuclear area comes in, where many tiny fragments pull the plain median down."""
    areas = np.bincount(labels.ravel().astype(np.int64))[1:]
    areas = np.sort(areas[areas > 0])
    median_area = areas[np.searchsorted(np.cumsum(areas), areas.sum() / 2)]
    return float(2 * np.sqrt(median_area / np.pi))


def measure(name: str, pairs, zooms) -> list[dict]:
    rows = []
    for zoom in zooms:
        for index, (image, labels) in pairs:
            im, lb = zoomed(image, labels, zoom)
            truth = median_diameter(lb)
            t0 = time.process_time()
            est = estimate_diameter(im)
            seconds = time.process_time() - t0
            d = est.diameter
            factor = choose_scale(d)
            rows.append(
                {
                    "set": name,
                    "index": index,
                    "zoom": zoom,
                    "shape": list(im.shape),
                    "true_px": round(truth, 2),
                    "true_area_weighted_px": round(area_weighted_diameter(lb), 2),
                    "estimate_px": None if d is None else round(d, 2),
                    "error_pct": None if d is None else round(100 * (d / truth - 1), 1),
                    "objects": est.objects,
                    "confident": est.confident,
                    "reason": est.reason,
                    "scale": round(factor, 3),
                    # where the chosen factor puts the true nuclei, relative to the model's size
                    "rescaled_vs_model_pct": round(100 * (truth * factor / MODEL_DIAMETER - 1), 1),
                    "cpu_s": round(seconds, 3),
                }
            )
        done = [r for r in rows if r["zoom"] == zoom]
        print(name, f"x{zoom}", summary(done), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    errs = np.array([r["error_pct"] if r["error_pct"] is not None else np.nan for r in rows])
    ok = errs[~np.isnan(errs)]
    after = np.abs([r["rescaled_vs_model_pct"] for r in rows])
    return {
        "images": len(rows),
        "no_estimate": int(np.isnan(errs).sum()),
        "median_error_pct": round(float(np.median(ok)), 1) if len(ok) else None,
        "mean_abs_error_pct": round(float(np.mean(np.abs(ok))), 1) if len(ok) else None,
        "max_abs_error_pct": round(float(np.max(np.abs(ok))), 1) if len(ok) else None,
        "within_10pct": round(float(np.mean(np.abs(ok) <= 10)), 3) if len(ok) else None,
        "within_20pct": round(float(np.mean(np.abs(ok) <= 20)), 3) if len(ok) else None,
        "rescaled_within_25pct_of_model": round(float(np.mean(after <= 25)), 3),
        "max_cpu_s": round(max(r["cpu_s"] for r in rows), 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bbbc039", default="../shared/data/bbbc039")
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--dsb", default="bench/data/dsb2018")
    ap.add_argument("--tuning", action="store_true", help="also the sets the method was chosen on")
    ap.add_argument("--out", default="bench/results/scale_estimate.json")
    args = ap.parse_args()

    hela_train = load_pairs(args.hela, HELA_SPLIT["train"])
    model = {
        "hela_0_13_label_median_px": round(median_diameter([lb for _, lb in hela_train]), 2),
        "hela_0_13_estimate_median_px": round(
            float(np.median([estimate_diameter(im).diameter for im, _ in hela_train])), 2
        ),
        "MODEL_DIAMETER": MODEL_DIAMETER,
    }
    print("model", model, flush=True)
    sets = {
        "bbbc039_val": list(enumerate(load_pairs(f"{args.bbbc039}/val"))),
        "hela_14_16": list(
            zip(HELA_SPLIT["validation"], load_pairs(args.hela, HELA_SPLIT["validation"]), strict=True)
        ),
        "dsb2018": list(enumerate(load_pairs(args.dsb))),
    }
    rows = [r for name, pairs in sets.items() for r in measure(name, pairs, ZOOMS)]
    if args.tuning:
        rows += measure("tuning_bbbc039_train", list(enumerate(load_pairs(f"{args.bbbc039}/train"))), (1.0,))
        rows += measure("tuning_hela_0_13", list(enumerate(hela_train)), (0.35, 1.0, 2.5))
        syn = [(int(d), synthetic(d, seed)) for seed, d in enumerate((8, 12, 20, 30, 50, 80, 120, 150))]
        rows += measure("tuning_synthetic", syn, (1.0,))
    groups = sorted({(r["set"], r["zoom"]) for r in rows})
    result = {
        "command": "python bench/scale.py" + (" --tuning" if args.tuning else ""),
        "model_diameter": model,
        "choose_scale": "model / estimate; 1.0 within +-20% of the model's size; clipped to [0.125, 4]",
        "summary": {
            f"{s} x{z}": summary([r for r in rows if (r["set"], r["zoom"]) == (s, z)]) for s, z in groups
        },
        "hela_note": HELA_NOTE + " HeLa's labels are a method's output with generous edges.",
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
