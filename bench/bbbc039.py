"""The thesis's table on BBBC039 validation: SpiralNet models (each with its calibrated settings)
and the watershed baseline, per-image means with pooled figures beside them, and time per image.

    python bench/bbbc039.py spiralray/weights/spiralnet /tmp/v7 --watershed \\
        --json bench/results/bbbc039_val.json
    python bench/bbbc039.py /tmp/v7/s2 --fields 10        # a quick 10-field subset between stages

Per-image means weight every field alike (the issue's headline figures); pooled figures sum the
counts over fields first, so dense fields weigh more. Merges and splits: per-image mean and total.
``--unet DIR`` adds a U-Net with the post-processing stored with it (``train_baselines.py
--calibrate``), or, for one that stores none, chosen here as calibrate.py chooses SpiralNet's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from spiralray.core.metrics import evaluate, evaluate_many

BBBC039 = "../shared/data/bbbc039"
KEYS = (
    "pixel_f1",
    "pixel_precision",
    "pixel_recall",
    "object_f1_50",
    "object_f1_mean_50_90",
    "merges",
    "splits",
)


def write_json(path: str, result: dict) -> None:
    """A benchmark's result as indented JSON at ``path`` (its folder made if missing)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def add_validation_args(ap: argparse.ArgumentParser, model_default: str | None) -> None:
    """The flags of the scripts that segment HeLa 14-16 and a BBBC039 validation subset."""
    ap.add_argument("--model", default=model_default, help="model directory (default: the shipped model)")
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--bbbc039", default=f"{BBBC039}/val")
    ap.add_argument("--fields", type=int, default=10, help="BBBC039: an evenly spread subset of N fields")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the result here")


def validation_pairs(args) -> tuple[list, list]:
    """(HeLa validation frames 14-16, ``args.fields`` evenly spread BBBC039 validation fields)."""
    from spiralray.data.datasets import HELA_SPLIT, load_pairs

    b = load_pairs(args.bbbc039)
    return load_pairs(args.hela, HELA_SPLIT["validation"]), [b[i] for i in subset(len(b), args.fields)]


def subset(n_total: int, fields: int | None) -> list[int]:
    """``fields`` indices spread evenly over ``n_total`` (all of them when None)."""
    if not fields or fields >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, fields).round()})


def score_labels(preds, truths) -> dict:
    """Per-image means and pooled figures of ``KEYS`` for predicted vs true label images."""
    pairs = list(zip(preds, truths, strict=True))
    per = [evaluate(p, t) for p, t in pairs]
    pooled = evaluate_many(pairs)
    out = {"per_image_mean": {k: round(float(np.mean([r[k] for r in per])), 4) for k in KEYS}}
    out["pooled"] = {k: round(pooled[k], 4) if isinstance(pooled[k], float) else pooled[k] for k in KEYS}
    out["pooled"].update(n_pred=pooled["n_pred"], n_truth=pooled["n_truth"])
    return out


def run_method(fn, pairs) -> dict:
    """Segment every image with ``fn(image) -> labels``; the figures, the median wall-clock
    seconds per image and the median CPU seconds (all threads of this process: on a shared,
    busy machine the wall clock measures the neighbours as much as the method)."""
    preds, times, cpu = [], [], []
    for im, _ in pairs:
        t0, c0 = time.perf_counter(), time.process_time()
        preds.append(np.asarray(fn(im)))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "seconds_per_image": round(statistics.median(times), 3),
        "cpu_seconds_per_image": round(statistics.median(cpu), 3),
        **score_labels(preds, [lb for _, lb in pairs]),
    }


def scorer_rates(path: str, pairs) -> dict:
    """The thesis's scorer figures at the model's score threshold t, over every stride-16 region
    centred inside the fields: error rate (regions passing t without an object at the centre
    pixel / regions passing) and stability error rate as the issue defines it (|regions passing
    t on predicted scores - regions passing t on true scores| / regions); true scores are the
    model's own score label (``train.steps.score_truth``)."""
    from spiralray import modelzoo
    from spiralray.core.engine import Engine
    from spiralray.core.prepare import prepare_image
    from spiralray.core.regions import crop_pad, grid_centres, inside_image, pad_image
    from spiralray.train.steps import score_truth

    net = modelzoo.load(path)
    engine, cfg, t = Engine(net, device="cpu"), net.config, net.config.candidates.threshold
    passed = wrong = true_passed = regions = 0
    for im, lb in pairs:
        x = prepare_image(im, cfg)
        pad = crop_pad(cfg.region)
        pred = engine.score_map(pad_image(x, pad), pad, x.shape[1:], stride=16)
        inside = inside_image(grid_centres(*lb.shape, cfg.region, 16), *lb.shape)
        c = grid_centres(*lb.shape, cfg.region, 16)[inside]
        p, truth = pred[inside] >= t, score_truth(lb, cfg, 16)[inside] >= t
        passed, wrong = passed + p.sum(), wrong + (p & (lb[c[:, 0], c[:, 1]] == 0)).sum()
        true_passed, regions = true_passed + truth.sum(), regions + p.size
    return {
        "threshold": t,
        "error_rate": round(float(wrong / max(passed, 1)), 4),
        "stability_error_rate": round(float(abs(int(passed) - int(true_passed)) / max(regions, 1)), 4),
        "regions": int(regions),
    }


def methods(models: list[str], watershed: bool) -> dict:
    """name -> (image -> labels) for each model directory and, optionally, the watershed."""
    from spiralray import modelzoo
    from spiralray.core.engine import Engine

    out = {}
    for path in models:
        engine = Engine(modelzoo.load(path), device="cpu")
        out[path] = lambda im, e=engine: e.segment(im).labels
    if watershed:
        from spiralray.bench.baselines import watershed_baseline
        from spiralray.data.normalize import normalize

        out["watershed"] = lambda im: watershed_baseline(normalize(im))
    return out


def choose_unet_postprocessing(net, hela: str, fields: int, log=print, conform_hela=False, shifts=()) -> dict:
    """The U-Net ``net``'s post-processing (minimum seed area, growth; ``min_area``, ``grow``,
    ``objective``) chosen on the validation sets and objective SpiralNet's thresholds are chosen on
    (``calibrate.validation_sets``, ``calibrate.choose``'s weighted objective; ``conform_hela`` and
    ``shifts`` as ``calibrate.py --conform-hela --shifts``, which chose the shipped model's)."""
    import itertools

    from calibrate import validation_sets, weighted_objective

    from spiralray.bench.baselines import unet_instances, unet_logits
    from spiralray.core.metrics import evaluate_many
    from spiralray.data.normalize import normalize

    sets, weights = validation_sets(hela, f"{BBBC039}/val", fields, conform_hela, shifts)
    cached = {k: [(unet_logits(net, normalize(im)), lb) for im, lb in v] for k, v in sets.items()}
    trials = []
    for min_area, grow in itertools.product((12, 30, 60, 120), (1, 2, 3, 5)):
        per = {
            k: evaluate_many((unet_instances(z, min_area, grow), lb) for z, lb in v)
            for k, v in cached.items()
        }
        trials.append(
            {"min_area": min_area, "grow": grow, "objective": round(weighted_objective(per, weights), 4)}
        )
        log(json.dumps(trials[-1]))
    return max(trials, key=lambda t: t["objective"])


def unet_method(path: str, hela: str, fields: int, log=print, conform_hela: bool = False, shifts=()):
    """(image -> labels, its post-processing) of the U-Net at ``path``: the post-processing stored
    with it (``train_baselines.py --calibrate``), as each SpiralNet model brings its calibrated
    thresholds; chosen here (``choose_unet_postprocessing``, with ``conform_hela`` and ``shifts``)
    only for a directory that stores none."""
    from spiralray.bench.baselines import unet_instances, unet_logits
    from spiralray.bench.compare import load_unet
    from spiralray.data.normalize import normalize

    net, cfg = load_unet(path)
    best = dict(cfg.get("postprocessing") or {})
    if best:
        log(f"{path}: stored post-processing {json.dumps(best)} (--hela, --conform-hela, --shifts unused)")
    else:
        best = choose_unet_postprocessing(net, hela, fields, log, conform_hela, shifts)
        best["shifts"] = list(shifts)
    best["trained"] = cfg.get("trained")
    return (lambda im: unet_instances(unet_logits(net, normalize(im)), best["min_area"], best["grow"])), best


def print_table(rows: dict) -> None:
    head = "pixel F1 / P / R | obj F1@0.5 | mean F1 | merges | splits | s/image (CPU s)"
    print(f"per-image mean (pooled) of {'method':30s} {head}")
    for name, r in rows.items():
        m, p = r["per_image_mean"], r["pooled"]
        cells = " ".join(f"{m[k]:.3f} ({p[k]:.3f})" for k in KEYS[:5])
        ms = f"{m['merges']:.2f} ({p['merges']}) {m['splits']:.2f} ({p['splits']})"
        secs = f"{r['seconds_per_image']:6.2f} ({r.get('cpu_seconds_per_image', float('nan')):.2f} CPU)"
        print(f"{name[-40:]:40s} {cells} {ms} {secs}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", help="model directories (each with its calibrated settings)")
    ap.add_argument("--data", default=f"{BBBC039}/val")
    ap.add_argument("--watershed", action="store_true", help="add the Otsu + distance watershed")
    ap.add_argument("--fields", type=int, default=None, help="an evenly spread subset of N fields")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the table here")
    ap.add_argument("--names", default=None, help="display names of the models, comma-separated")
    ap.add_argument("--note", default=None, help="how the models were trained (stored as 'budget')")
    ap.add_argument("--unet", default=None, help="a U-Net model directory (train_baselines.py --out)")
    ap.add_argument("--unet-name", default=None, help="the U-Net's display name (default: its folder's)")
    ap.add_argument(
        "--hela", default="../shared/data/hela", help="HeLa, for a U-Net with no stored post-processing"
    )
    ap.add_argument(
        "--calibration-fields",
        type=int,
        default=20,
        help="BBBC039 fields, as calibrate.py (a U-Net with no stored post-processing)",
    )
    ap.add_argument("--conform-hela", action="store_true", help="U-Net calibration as calibrate.py's")
    from calibrate import add_shifts_argument, parse_shifts

    add_shifts_argument(ap)  # a U-Net with no stored post-processing: chosen as calibrate.py's
    args = ap.parse_args()
    shifts = parse_shifts(args.shifts, "bbbc039.py")
    names = args.names.split(",") if args.names else []
    if names and len(names) != len(args.models):
        ap.error(f"--names gives {len(names)} names for {len(args.models)} models")
    from spiralray.data.datasets import load_pairs

    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    idx = subset(len(pairs), args.fields)
    pairs = [pairs[i] for i in idx]
    rows = {}
    todo = methods(args.models, args.watershed)
    if args.unet:
        fn, chosen = unet_method(
            args.unet, args.hela, args.calibration_fields, conform_hela=args.conform_hela, shifts=shifts
        )
        todo[args.unet] = fn
        rows[args.unet] = {"postprocessing": chosen}
    for name, fn in todo.items():
        rows[name] = {**rows.get(name, {}), **run_method(fn, pairs)}
        if name not in ("watershed", args.unet):
            rows[name]["scorer"] = scorer_rates(name, pairs)
        print(json.dumps({name: rows[name]}), flush=True)
    print_table(rows)
    result = {
        "benchmark": "bbbc039 validation",
        "data": f"{args.data}: {len(idx)} fields" + ("" if len(idx) > 49 else f" {idx}"),
        "threads": args.threads,
        "device": "cpu",
        "figures": "per-image means, pooled counts beside them",
        "methods": rows,
        "names": dict(zip(args.models, names, strict=True)) if names else {},
    }
    if args.unet:
        default = f"U-Net ({os.path.basename(os.path.normpath(args.unet))})"
        result["names"].setdefault(args.unet, args.unet_name or default)
    if args.note:
        result["budget"] = args.note
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
