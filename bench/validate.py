"""Choose between trained models on the HeLa validation frames (14-16) only: native and under
the acquisition shifts of ``spiralray.data.shifts`` (test frames stay unseen).

    python bench/validate.py spiralray/weights/spiralnet /tmp/v6a /tmp/v6b
"""

from __future__ import annotations

import argparse
import json

import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.core.metrics import evaluate_many
from spiralray.data.datasets import HELA_NOTE, HELA_SPLIT, load_pairs
from spiralray.data.shifts import shifted

KEYS = ("object_f1_50", "object_f1_mean_50_90", "pixel_f1", "merges")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="model directories (each with its calibrated settings)")
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_pairs(args.hela, HELA_SPLIT["validation"])
    sets = {"native": val, **shifted(val)}
    rows = {}
    for path in args.models:
        engine = Engine(modelzoo.load(path))
        rows[path] = {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k in KEYS}
            for name, pairs in sets.items()
            for r in [evaluate_many((engine.segment(im).labels, lb) for im, lb in pairs)]
        }
        print(json.dumps({path: rows[path], "note": HELA_NOTE}), flush=True)
    print(f"{'object F1@0.5 / mean F1 / pixel F1':40s}" + "".join(f"{n:>24s}" for n in sets))
    for path, r in rows.items():
        cells = "".join(
            f"{r[n]['object_f1_50']:>8.3f}{r[n]['object_f1_mean_50_90']:>8.3f}{r[n]['pixel_f1']:>8.3f}"
            for n in sets
        )
        print(f"{path[-40:]:40s}{cells}")
    print(HELA_NOTE)


if __name__ == "__main__":
    main()
