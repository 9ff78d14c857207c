"""Issue 11's scale target: segmentation at other magnifications with the automatic diameter
estimate (the default), against the same images at native size. Validation data only.

    python bench/scale_segment.py --json bench/results/scale_segment.json

Sets: HeLa 14-16 resized x0.5 and x2.5 (issue 11's target) and x0.3 and x5 (nuclei ~8 and ~140 px
across: the ends of the range the product promises), an evenly spread subset of BBBC039
validation resized x0.35 and x3 (bilinear images, nearest-neighbour labels;
``bench/scale.py:zoomed``). Each is segmented by
``api.segment_image`` as a user's call would be (auto diameter) and scored against its resized
labels; pooled object F1@0.5, mean F1 and pixel F1, beside native, with the estimate and scale.
"""

from __future__ import annotations

import argparse
import json

import torch

from spiralray import api
from spiralray.core.metrics import evaluate_many
from spiralray.data.datasets import HELA_NOTE

KEYS = ("object_f1_50", "object_f1_mean_50_90", "pixel_f1")


def main():
    from bbbc039 import add_validation_args, validation_pairs, write_json
    from scale import zoomed

    ap = argparse.ArgumentParser()
    add_validation_args(ap, None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = api.load_engine(args.model)
    hela, bbbc = validation_pairs(args)
    data = {
        "hela 14-16": (hela, (0.3, 0.5, 2.5, 5.0)),
        f"bbbc039 val, {args.fields} fields": (bbbc, (0.35, 3.0)),
    }
    rows = {}
    for name, (pairs, zooms) in data.items():
        for zoom in (1.0, *zooms):
            preds, truths, scales = [], [], []
            for im, lb in pairs:
                zi, zl = zoomed(im, lb, zoom)
                r = api.segment_image(engine, zi)  # diameter "auto": the user's default
                preds.append(r.labels)
                truths.append(zl)
                scales.append(r.scale)
            m = evaluate_many(zip(preds, truths, strict=True))
            rows[f"{name} x{zoom:g}"] = {
                **{k: round(m[k], 4) for k in KEYS},
                "scales_used": [round(float(s), 3) for s in scales],
            }
            print(json.dumps({f"{name} x{zoom:g}": rows[f"{name} x{zoom:g}"]}), flush=True)
        for zoom in zooms:
            key, native = f"{name} x{zoom:g}", rows[f"{name} x1"]
            rows[key]["object_f1_minus_native"] = round(rows[key]["object_f1_50"] - native["object_f1_50"], 4)
    result = {"benchmark": "scale segment", "model": args.model or "shipped", "rows": rows, "note": HELA_NOTE}
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
