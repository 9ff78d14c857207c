"""Calibrate a trained SpiralNet's thresholds on validation data (BBBC039 validation and the
HeLa validation frames 14-16 at native and half magnification, jointly), then write the model
directory with its card. ``choose`` sees validation data only; with ``--test`` (the chosen model
only) the test sets (HeLa 17-19, the DSB 2018 image) are read and scored once, with the chosen
settings, and only *reported*.

    python bench/calibrate.py --model /tmp/tr/v1 --out /tmp/tr/v1cal
    python bench/calibrate.py --model /tmp/tr/v1 --out spiralray/weights/spiralnet --test --trained "..."
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np
import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.core.metrics import evaluate_many
from spiralray.core.prepare import prepare_image
from spiralray.core.regions import crop_pad, pad_image
from spiralray.core.segment import segment_with
from spiralray.data.datasets import (
    CONFORM_LEVEL,
    CONFORM_PASSES,
    HELA_NOTE,
    HELA_SPLIT,
    conform_pairs,
    load_pairs,
)
from spiralray.data.shifts import ALL_SHIFTS, half_magnification, shifted
from spiralray.errors import SpiralrayError

# --shifts' choices: half magnification is always in (validation_sets' "hela half")
CHOOSABLE = {k: v for k, v in ALL_SHIFTS.items() if k != "half magnification"}


def add_shifts_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--shifts",
        action="append",
        default=[],
        help="a HeLa validation shift to choose on too (a name in spiralray.data.shifts, some hold a"
        " comma; repeatable), or 'all'",
    )


def parse_shifts(values: list[str], prog: str = "calibrate.py") -> list[str]:
    """``--shifts`` values as shift names (``all``: every one in ``CHOOSABLE``); an unknown name
    exits with one line."""
    unknown = [v for v in values if v not in CHOOSABLE and v != "all"]
    if unknown:
        hint = "; one name per --shifts" if "," in unknown[0] else ""
        known = "; ".join(CHOOSABLE)
        raise SystemExit(f"{prog}: unknown shift {unknown[0]!r} (known: {known}; or all{hint})")
    return list(CHOOSABLE) if "all" in values else list(dict.fromkeys(values))


def cached_runner(net):
    """Segment frames under many threshold settings, reusing each region's probabilities."""
    engine = Engine(net)
    cache = {}

    def run(image, cfg):
        x = prepare_image(image, cfg)
        pad = crop_pad(cfg.region)
        padded = pad_image(x, pad)
        key_img = id(image)
        key_scores = (key_img, "scores", cfg.candidates.stride)
        if key_scores not in cache:
            cache[key_scores] = engine.score_map(padded, pad, x.shape[1:], cfg.candidates.stride)
        pt = torch.from_numpy(padded)

        def masks(centres):
            todo = [tuple(c) for c in centres.tolist() if (key_img, tuple(c)) not in cache]
            if todo:
                probs = engine.region_probs(pt, pad, np.array(todo, np.int64))[:, 0].numpy()
                for c, p in zip(todo, probs, strict=True):
                    cache[(key_img, c)] = p
            return (
                np.stack([cache[(key_img, tuple(c))] > cfg.spiral.threshold for c in centres.tolist()])
                if len(centres)
                else np.zeros((0, 52, 58), bool)
            )

        return segment_with(x.shape[1:], cache[key_scores], masks, cfg, image=x[0]).labels

    return run


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"calibrate.py: expected comma-separated numbers, got {text!r}") from None


def weighted_objective(per: dict, weights: dict) -> float:
    """The calibration objective: the ``weights``-weighted mean over validation sets of each
    set's (object F1@0.5 + mean F1@0.5-0.9) / 2; ``per``: set name -> ``evaluate_many`` figures."""
    return sum(
        weights[k] * (p["object_f1_50"] + p["object_f1_mean_50_90"]) / 2 for k, p in per.items()
    ) / sum(weights[k] for k in per)


def configured(config, setting: dict):
    """``config`` with a grid setting's thresholds (``choose``'s trial keys) in place."""
    return config.replace(
        candidates={
            "threshold": setting["score"],
            "nms_radius": setting["nms"],
            "min_area": setting["min_area"],
            "stride": setting["stride"],
            "neck": setting["neck"],
            "outline_level": setting["outline"],
            "faint_contrast": setting["faint_contrast"],
            "faint_area": setting["faint_area"],
        },
        spiral={"threshold": setting["central"]},
    )


def choose(
    segment, sets: dict, grid: dict, config, log=print, weights: dict | None = None
) -> tuple[dict, list[dict]]:
    """The grid setting with the best weighted mean, over the validation ``sets`` (name ->
    (image, labels) pairs), of each set's (object F1@0.5 + mean F1@0.5-0.9) / 2; ties by pixel F1
    of the first set. ``weights``: name -> weight (default: equal).

    segment(image, cfg) -> labels; grid: "score", "central", "nms", "min_area" -> values, and
    optionally "stride" (the prediction grid's, px), "neck" (``CandidateSpec.neck``), "outline"
    (``CandidateSpec.outline_level``) and "faint" ((contrast, area) pairs: ``CandidateSpec.faint``),
    each defaulting to the config's.
    Returns (best trial, every trial); each trial's figures are the first set's, plus a summary
    of the others. Give it validation data only: it scores every setting on everything it gets.
    """
    first, *others = sets
    w = {k: (weights or {}).get(k, 1.0) for k in sets}
    trials = []
    strides = grid.get("stride") or [config.candidates.stride]
    necks = grid.get("neck") or [config.candidates.neck]
    outlines = grid.get("outline") or [config.candidates.outline_level]
    faints = grid.get("faint") or [config.candidates.faint]
    keys = ("score", "central", "nms", "min_area")
    for st, nk, ol, (fc, fa), t, c, r, a in itertools.product(
        strides, necks, outlines, faints, *(grid[k] for k in keys)
    ):
        trial = dict(stride=st, neck=nk, outline=ol, faint_contrast=fc, faint_area=fa)
        trial.update(score=t, central=c, nms=r, min_area=a)
        cfg = configured(config, trial)
        per = {k: evaluate_many((segment(im, cfg), lb) for im, lb in v) for k, v in sets.items()}
        trial["objective"] = weighted_objective(per, w)
        trial.update(per[first])
        for k in others:
            trial[k] = {m: per[k][m] for m in ("object_f1_50", "object_f1_mean_50_90", "pixel_f1")}
        trials.append(trial)
        log(trial)
    return max(trials, key=lambda d: (d["objective"], d["pixel_f1"])), trials


def validation_sets(
    hela: str, bbbc039: str | None, fields: int | None = None, conform_hela: bool = False, shifts=()
) -> tuple[dict, dict]:
    """(name -> validation pairs, name -> weight): BBBC039 validation (``fields``: an evenly
    spread subset) and HeLa 14-16 at native and half magnification (same frames, resampled: the
    pixel-sized thresholds, NMS radius and minimum area, must not be tuned to one nucleus size).
    BBBC039 and HeLa weigh alike; HeLa's half splits between its two magnifications.
    ``shifts``: names in ``data.shifts`` whose shifted HeLa frames join, weight 1 each (a model
    chosen on clean frames alone can fail on noisy ones: v7-v12 chose score 0.2, where dim + noisy
    frames lose a third of their object F1).
    ``conform_hela``: HeLa's labels (an algorithm's output, drawn ~1 px wider than the manual
    BBBC039 and DSB labels) conformed to BBBC039's outline convention (``data.outlines``)."""
    val = load_pairs(hela, HELA_SPLIT["validation"])
    if conform_hela:
        val = conform_pairs(val)
    sets = {"hela": val, "hela half": [half_magnification(im, lb) for im, lb in val]}
    weights = {"hela": 1.0, "hela half": 1.0}
    # acquisition shifts of the same frames (data.shifts), weight 1 each
    for name, pairs in shifted(val, shifts={name: CHOOSABLE[name] for name in shifts}).items():
        sets[f"hela {name}"], weights[f"hela {name}"] = pairs, 1.0
    if bbbc039:
        from bbbc039 import subset

        pairs = load_pairs(bbbc039)
        sets = {"bbbc039": [pairs[i] for i in subset(len(pairs), fields)], **sets}
        weights["bbbc039"] = 2.0
    return sets, weights


def test_figures(engine, hela: str, dsb: str) -> dict:
    """HeLa 17-19 (pooled; against its labels as given, as given with nuclei cut by the image
    border left out of both sides, which HeLa's labels mostly leave unannotated, and conformed to
    BBBC039's outline convention) and the DSB 2018 image: read and scored once, after choosing."""
    test = load_pairs(hela, HELA_SPLIT["test"])
    found = [engine.segment(im).labels for im, _ in test]
    truth = [lb for _, lb in test]
    out = {
        "hela 17-19": evaluate_many(zip(found, truth, strict=True)),
        "hela 17-19, cut nuclei left out": evaluate_many(zip(found, truth, strict=True), exclude_border=True),
        "hela 17-19 conformed": evaluate_many(zip(found, [lb for _, lb in conform_pairs(test)], strict=True)),
    }
    if os.path.exists(os.path.join(dsb, "images.tif")):
        out["dsb2018"] = evaluate_many((engine.segment(im).labels, lb) for im, lb in load_pairs(dsb))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--bbbc039", default="../shared/data/bbbc039/val", help="'' to calibrate on HeLa only")
    ap.add_argument("--fields", type=int, default=None, help="BBBC039: an evenly spread subset of N")
    ap.add_argument("--trained", default="", help="training data and recipe for the card")
    ap.add_argument("--score", default="0.4,0.5,0.6", help="score thresholds to try")
    ap.add_argument("--central", default="0.2,0.25,0.3", help="central-channel thresholds to try")
    ap.add_argument("--nms", default="8,12", help="NMS radii to try (px)")
    ap.add_argument("--min-area", default="60,120", help="minimum object areas to try (px)")
    ap.add_argument("--stride", default="", help="prediction grid strides to try (px; default: the model's)")
    ap.add_argument("--neck", default="", help="neck ratios to try (0 = no split; default: the model's)")
    ap.add_argument(
        "--outline", default="", help="outline levels to try (0 = no refinement; default: the model's)"
    )
    ap.add_argument(
        "--faint-contrast",
        default="",
        help="faint-object contrasts to try (0 = keep faint objects; default: the model's)",
    )
    ap.add_argument("--faint-area", default="", help="... with these areas (px; default: the model's)")
    ap.add_argument(
        "--conform-hela",
        action="store_true",
        help="score HeLa validation against its labels conformed to BBBC039's outline convention",
    )
    add_shifts_argument(ap)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test", action="store_true", help="score the test sets once (the chosen model only)")
    ap.add_argument("--dsb", default="bench/data/dsb2018")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shifts = parse_shifts(args.shifts)
    try:
        net = modelzoo.load(args.model)
    except SpiralrayError as e:
        raise SystemExit(f"calibrate.py: {e}") from None
    sets, weights = validation_sets(args.hela, args.bbbc039, args.fields, args.conform_hela, shifts)
    grid = {
        "score": _floats(args.score),
        "central": _floats(args.central),
        "nms": _floats(args.nms),
        "min_area": [int(v) for v in _floats(args.min_area)],
        "stride": [int(v) for v in _floats(args.stride)] if args.stride else None,
        "neck": _floats(args.neck) if args.neck else None,
        "outline": _floats(args.outline) if args.outline else None,
        "faint": faint_grid(args.faint_contrast, args.faint_area, net.config.candidates.faint),
    }
    print(json.dumps({"note": HELA_NOTE, "sets": {k: len(v) for k, v in sets.items()}, "weights": weights}))
    keys = (
        "stride",
        "neck",
        "outline",
        "faint_contrast",
        "faint_area",
        "score",
        "central",
        "nms",
        "min_area",
    )
    keys += ("objective", "object_f1_50", "pixel_f1", *tuple(sets)[1:])
    best, _ = choose(
        cached_runner(net),
        sets,
        grid,
        net.config,
        log=lambda t: print(json.dumps({k: t[k] for k in keys}), flush=True),
        weights=weights,
    )
    cfg = net.config = configured(net.config, best)
    # Test sets: read and scored once, with the chosen settings only, and only when asked.
    test = test_figures(Engine(net), args.hela, args.dsb) if args.test else None
    card = model_card(args, cfg, best, test)
    modelzoo.save(net, args.out, card=card, extra={"validation": best, "test": test, "note": HELA_NOTE})
    print(json.dumps({"best": best, "test": test, "note": HELA_NOTE}))


def faint_grid(contrasts: str, areas: str, model: tuple[float, int]) -> list[tuple[float, int]]:
    """(contrast, area) pairs to try: ``contrasts`` x ``areas`` (comma-separated; either empty:
    the ``model``'s), a contrast or area of 0 (no faint rule) once."""
    cs = _floats(contrasts) if contrasts else [model[0]]
    areas_ = _floats(areas) if areas else [model[1]]
    if any(c < 0 for c in cs) or any(a < 0 or a != int(a) for a in areas_):
        raise SystemExit(
            f"calibrate.py: --faint-contrast must be >= 0 and --faint-area whole px >= 0, got {cs} / {areas_}"
        )
    if areas and not any(c > 0 for c in cs):
        raise SystemExit(
            "calibrate.py: --faint-area needs a --faint-contrast over 0 (none given, and the model's is 0)"
        )
    areas_ = [int(a) for a in areas_]
    pairs = [(c, a) if c > 0 and a > 0 else (0.0, 0) for c in cs for a in areas_]
    return list(dict.fromkeys(pairs))


def best_shifts(best: dict) -> list[str]:
    """The acquisition shifts (besides half magnification) a choice was scored on."""
    return [k.removeprefix("hela ") for k in best if k.startswith("hela ") and k != "hela half"]


def model_card(args, cfg, best: dict, test: dict | None) -> str:
    """The model directory's card.md: data, recipe, thresholds, validation and test figures."""
    first = "BBBC039 validation" if args.bbbc039 else "HeLa validation frames 14-16"
    lines = [
        "# SpiralNet default model",
        "",
        f"Trained on: {args.trained or 'see bench/train_default.py'}",
        "",
        f"Scorer label: {cfg.model.score_label}. Thresholds chosen on validation only"
        f" ({'BBBC039 validation, ' if args.bbbc039 else ''}HeLa frames 14-16 at native and half"
        f" magnification{''.join(f'; {v}' for v in best_shifts(best))}): score >= {best['score']},"
        f" central channel > {best['central']}, NMS radius"
        f" {best['nms']} px (prediction stride {cfg.candidates.stride}), objects under"
        f" {best['min_area']} px dropped"
        + (
            f", objects split where their mask narrows to a neck of {best['neck']} (core.necks)"
            if best["neck"]
            else ""
        )
        + (
            f", outline pixels under {best['outline']} of the way from an object's local background"
            " to its interior peeled (core.outline)"
            if best.get("outline")
            else ""
        )
        + (
            f", objects under {best['faint_area']} px standing less than {best['faint_contrast']} above"
            " their local background (normalised intensity) dropped as faint (core.outline)."
            if best.get("faint_contrast")
            else "."
        ),
        "",
        "Validation, pooled over images (object F1@0.5 / mean F1@0.5-0.9 / pixel F1):",
    ]
    if args.conform_hela:
        lines[-1:-1] = [
            "HeLa validation was scored against its labels conformed to BBBC039's outline convention"
            f" (level {CONFORM_LEVEL}, {CONFORM_PASSES} pass; spiralray.data.outlines: HeLa's labels are an"
            " algorithm's output,"
            " drawn ~1 px wider than the manual BBBC039 and DSB 2018 labels).",
            "",
        ]
    figures = {first: best, **{k: v for k, v in best.items() if isinstance(v, dict)}}
    lines += [
        f"- {k}: {v['object_f1_50']:.3f} / {v['object_f1_mean_50_90']:.3f} / {v['pixel_f1']:.3f}"
        for k, v in figures.items()
    ]
    if test:
        lines += ["", "Test, scored once after choosing (pooled):"]
        for k, v in test.items():
            lines.append(
                f"- {k}: object F1@0.5 {v['object_f1_50']:.3f}, mean F1 {v['object_f1_mean_50_90']:.3f},"
                f" pixel F1 {v['pixel_f1']:.3f} (precision {v['pixel_precision']:.3f}, recall"
                f" {v['pixel_recall']:.3f}); {v['n_pred']} objects for {v['n_truth']} true,"
                f" {v['merges']} merges, {v['splits']} splits"
            )
    return "\n".join(lines + ["", HELA_NOTE, ""])


if __name__ == "__main__":
    main()
