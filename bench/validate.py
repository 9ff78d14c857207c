"""Choose between trained models on validation data only: BBBC039 validation and the HeLa
validation frames 14-16, native and under the acquisition shifts of ``spiralray.data.shifts``
(test sets stay unseen).

    python bench/validate.py spiralray/weights/spiralnet /tmp/v7cal --json /tmp/validate.json
    python bench/validate.py /tmp/a /tmp/b --bbbc039 ''           # HeLa only, as for v5 / v6

BBBC039 native uses every field (or ``--fields N``, evenly spread); its shifted copies use
``--shift-fields`` of them (segmenting 50 fields four times is slow on a CPU).
"""

from __future__ import annotations

import argparse
import json

import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.core.metrics import evaluate_many
from spiralray.data.datasets import HELA_NOTE, HELA_SPLIT, load_pairs
from spiralray.data.shifts import ALL_SHIFTS, SHIFTS, shifted

KEYS = ("object_f1_50", "object_f1_mean_50_90", "pixel_f1", "merges")


def validation_sets(hela: str, bbbc039: str, fields, shift_fields: int, appearance: bool) -> dict:
    """name -> (image, labels) pairs: each data set native and under each shift."""
    from bbbc039 import subset

    shifts = ALL_SHIFTS if appearance else SHIFTS
    val = load_pairs(hela, HELA_SPLIT["validation"])
    sets = {"hela": val, **{f"hela {k}": v for k, v in shifted(val, shifts=shifts).items()}}
    if bbbc039:
        pairs = load_pairs(bbbc039)
        native = [pairs[i] for i in subset(len(pairs), fields)]
        few = [pairs[i] for i in subset(len(pairs), shift_fields)]
        sets["bbbc039"] = native
        sets.update({f"bbbc039 {k}": v for k, v in shifted(few, shifts=shifts).items()})
    return sets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="model directories (each with its calibrated settings)")
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--bbbc039", default="../shared/data/bbbc039/val", help="'' for HeLa only")
    ap.add_argument("--fields", type=int, default=None, help="BBBC039 native: N fields (default all)")
    ap.add_argument("--shift-fields", type=int, default=10, help="BBBC039 fields under each shift")
    ap.add_argument("--appearance", action="store_true", help="add the appearance shifts too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = validation_sets(args.hela, args.bbbc039, args.fields, args.shift_fields, args.appearance)
    rows = {}
    for path in args.models:
        engine = Engine(modelzoo.load(path))
        rows[path] = {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k in KEYS}
            for name, pairs in sets.items()
            for r in [evaluate_many((engine.segment(im).labels, lb) for im, lb in pairs)]
        }
        print(json.dumps({path: rows[path], "note": HELA_NOTE}), flush=True)
    print("object F1@0.5 / mean F1 / pixel F1 (pooled over images)")
    for name in sets:
        cells = "".join("  " + " / ".join(f"{r[name][k]:.3f}" for k in KEYS[:3]) for r in rows.values())
        print(f"{name:36s}{cells}")
    print("columns: " + ", ".join(rows))
    print(HELA_NOTE)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"sets": {k: len(v) for k, v in sets.items()}, "rows": rows, "note": HELA_NOTE}, f, indent=1
            )


if __name__ == "__main__":
    main()
