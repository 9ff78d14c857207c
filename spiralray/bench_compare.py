"""``spiralray bench compare``: SpiralNet vs U-Net-64 / U-Net-32 vs watershed on HeLa test frames.

U-Net weights are not shipped (U-Net-64 alone is 124 MB); when ``bench/weights/unet{B}`` is
absent the baseline is trained here on the same data (HeLa 0-13 + synthetic) for
``--baseline-minutes`` and cached, and the JSON says how each model was trained.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from . import modelzoo, storage
from .baselines import fit_unet, unet_segment, watershed_baseline
from .data.datasets import HELA_SPLIT, load_pairs
from .data.normalize import normalize
from .data.synthetic import SyntheticSpec, generate_many
from .engine import Engine
from .errors import SpiralrayError
from .metrics import evaluate_many
from .models import UNet


def _unet(base: int, args, log) -> tuple[UNet, str]:
    path = os.path.join(args.weights, f"unet{base}")
    net = UNet(base=base)
    if os.path.isdir(path):
        tensors, cfg = storage.load_model_dir(path)
        net.load_state_dict(tensors)
        return net.eval(), cfg.get("trained", "cached")
    if args.baseline_minutes <= 0:
        return net.eval(), "untrained (random weights): timing only"
    from .config import SpiralNetConfig
    from .training import RegionSampler

    pairs = load_pairs(args.data, HELA_SPLIT["train"]) + generate_many(24, SyntheticSpec(384, 384), seed=1000)
    sampler = RegionSampler(
        [normalize(i) for i, _ in pairs],
        [lb for _, lb in pairs],
        SpiralNetConfig(),
        scales=(0.75, 1.0, 1.33),
        seed=base,
    )
    t0 = time.time()
    fit_unet(net, sampler, args.baseline_minutes * 60, log=log)
    note = (
        f"trained here: HeLa 0-13 + 24 synthetic, {args.baseline_minutes:g} min on "
        f"{torch.get_num_threads()} threads ({time.time() - t0:.0f} s)"
    )
    storage.save_model_dir(
        path, {k: v.contiguous() for k, v in net.state_dict().items()}, {"base": base, "trained": note}
    )
    return net.eval(), note


def _timed_labels(fn, frames) -> tuple[list[np.ndarray], float]:
    out, times = [], []
    for f in frames:
        t0 = time.perf_counter()
        out.append(np.asarray(fn(f)))
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def bench_compare(args) -> dict:
    if not os.path.exists(os.path.join(args.data, "images.tif")):
        raise SpiralrayError(f"bench compare needs the HeLa data at {args.data}")
    frames = [int(f) for f in args.frames.split(",")]
    pairs = load_pairs(args.data, frames)
    images, truths = [p[0] for p in pairs], [p[1] for p in pairs]
    net = modelzoo.load(args.model)
    card = net.config.model
    results = {}

    def log(name, it, loss):
        if it % 100 == 0:
            print(f"  {name} it {it} loss {loss:.4f}", flush=True)

    engine = Engine(net, device=args.device)
    labels, secs = _timed_labels(lambda im: engine.segment(im).labels, images)
    results["spiralnet"] = {
        "seconds_per_image": secs,
        "weights": args.model or "shipped default",
        **evaluate_many(zip(labels, truths, strict=True)),
    }
    for base in (64, 32):
        unet, note = _unet(base, args, log)
        labels, secs = _timed_labels(
            lambda im, u=unet: unet_segment(u, normalize(im, card.norm, card.norm_low, card.norm_high)),
            images,
        )
        results[f"unet{base}"] = {
            "seconds_per_image": secs,
            "weights": note,
            **evaluate_many(zip(labels, truths, strict=True)),
        }
    labels, secs = _timed_labels(lambda im: watershed_baseline(normalize(im)), images)
    results["watershed"] = {
        "seconds_per_image": secs,
        "weights": "none (Otsu + distance watershed)",
        **evaluate_many(zip(labels, truths, strict=True)),
    }
    for r in results.values():
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 4)
    from .thesis_metrics import plot_scorer_curves, scorer_curves, segmenter_table

    curves = scorer_curves(engine, pairs)
    os.makedirs(args.results, exist_ok=True)
    plot_scorer_curves(curves, os.path.join(args.results, "scorer_threshold.png"))
    t = net.config.candidates.threshold
    at_t = min(range(len(curves["thresholds"])), key=lambda i: abs(curves["thresholds"][i] - t))
    sn, u64 = results["spiralnet"], results["unet64"]
    return {
        "benchmark": "compare",
        "data": f"HeLa frames {frames} (labels are ERR_SEG method output)",
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "object_f1_50": sn["object_f1_50"],
        "pixel_f1": sn["pixel_f1"],
        "time_ratio_spiralnet_over_unet64": round(sn["seconds_per_image"] / u64["seconds_per_image"], 3),
        "models": results,
        "thesis": {
            "scorer_at_threshold": {
                "threshold": curves["thresholds"][at_t],
                **{k: round(curves[k][at_t], 4) for k in ("error_rate", "miss_rate", "stability_error_rate")},
            },
            "scorer_curves": curves,
            "segmenter_per_channel": segmenter_table(engine, pairs),
        },
    }
