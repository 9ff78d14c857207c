"""Issue 11 item 6: the spiral's block layout, "centred" (63 steps for 52 x 58, n = 8) against
"fewest" (56 steps: the block grid shifted by a column), with the same trained networks and
thresholds, on validation data only (HeLa 14-16, an evenly spread subset of BBBC039 validation).

    python bench/spiral_layout.py --json bench/results/spiral_layout.json

Time: each image segmented with both layouts in turn (interleaved), CPU seconds of this process
(all threads) and wall seconds; the ratio of the sums is the figure, on a shared machine the CPU
one. Accuracy: pooled object F1@0.5, mean F1@0.5-0.9 and pixel F1 per data set.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.core.metrics import evaluate_many
from spiralray.data.datasets import HELA_NOTE

LAYOUTS = ("centred", "fewest")


def main():
    from bbbc039 import add_validation_args, validation_pairs, write_json

    ap = argparse.ArgumentParser()
    add_validation_args(ap, "spiralray/weights/spiralnet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hela, bbbc = validation_pairs(args)
    sets = {"hela 14-16": hela, f"bbbc039 val ({args.fields} fields)": bbbc}
    base = modelzoo.load(args.model)
    engines = {}
    for layout in LAYOUTS:
        net = modelzoo.load(args.model)
        net.config = base.config.replace(spiral={"layout": layout})
        engines[layout] = Engine(net, device="cpu")
    cpu = {k: 0.0 for k in LAYOUTS}
    wall = {k: 0.0 for k in LAYOUTS}
    preds = {k: {s: [] for s in sets} for k in LAYOUTS}
    regions = {k: 0 for k in LAYOUTS}
    for name, pairs in sets.items():
        for im, _ in pairs:
            for layout in LAYOUTS:  # interleaved: both see the same machine load
                t0, c0 = time.perf_counter(), time.process_time()
                seg = engines[layout].segment(im)
                wall[layout] += time.perf_counter() - t0
                cpu[layout] += time.process_time() - c0
                preds[layout][name].append(seg.labels)
                regions[layout] += seg.n_regions
    rows = {}
    for layout in LAYOUTS:
        rows[layout] = {
            "steps_per_region": len(engines[layout].geom.blocks),
            "cpu_seconds": round(cpu[layout], 2),
            "wall_seconds": round(wall[layout], 2),
            "regions": regions[layout],
        }
        for name, pairs in sets.items():
            r = evaluate_many(zip(preds[layout][name], [lb for _, lb in pairs], strict=True))
            keys = ("object_f1_50", "object_f1_mean_50_90", "pixel_f1")
            rows[layout][name] = {k: round(r[k], 4) for k in keys}
        pairs_by_set = (zip(preds["centred"][s], preds[layout][s], strict=True) for s in sets)
        same = all(np.array_equal(a, b) for pairs in pairs_by_set for a, b in pairs)
        rows[layout]["labels_equal_centred"] = same
    result = {
        "benchmark": "spiral layout",
        "model": args.model,
        "threads": args.threads,
        "cpu_ratio_fewest_over_centred": round(cpu["fewest"] / cpu["centred"], 3),
        "wall_ratio_fewest_over_centred": round(wall["fewest"] / wall["centred"], 3),
        "layouts": rows,
        "note": HELA_NOTE,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
