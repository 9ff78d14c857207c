"""``spiralray bench compare``: SpiralNet vs U-Net (``--unets 32,64``) vs watershed on HeLa test frames.

U-Net weights are not shipped (U-Net-64 alone is 124 MB); when ``bench/weights/unet{B}`` is
absent the baseline is trained here on the same data (HeLa 0-13 + synthetic) for
``--baseline-minutes`` and cached, and the JSON says how each model was trained.
``bench/train_baselines.py --calibrate`` trains one on other data and stores its post-processing
chosen on validation, which is then applied here (else ``unet_instances``'s defaults).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from .. import api, modelzoo
from ..api import Result
from ..core.engine import Engine, resolve_device
from ..core.metrics import evaluate_many
from ..core.models import UNet
from ..data.datasets import HELA_NOTE, HELA_SPLIT, load_pairs
from ..data.normalize import normalize
from ..data.shifts import ALL_SHIFTS, inverted, shifted
from ..data.synthetic import SyntheticSpec, generate_many
from ..errors import SpiralrayError
from ..io import storage
from .baselines import fit_unet, unet_instances, unet_logits, watershed_baseline

# The data of the shipped model's later training steps (README recipe: train_default.py with
# --synthetic 48 --scales 0.5,0.75,1.0,1.33; its own defaults are v1's smaller set).
SYNTHETIC, SCALES = 48, (0.5, 0.75, 1.0, 1.33)


def baseline_sampler(
    data: str, seed: int, synthetic: int = SYNTHETIC, scales=SCALES, sources=None, preset: str = "plain"
):
    """The U-Net's training tiles: HeLa 0-13 (or the annotated ``sources``, ``PATH[:FRAMES]``
    each, as ``train_default.py --data`` takes them) + ``synthetic`` frames of ``preset`` at
    ``scales``, with the sampler and augmentation SpiralNet trains with."""
    from ..core.config import SpiralNetConfig
    from ..data.datasets import load_sources, synthetic_pairs
    from ..train.sampling import RegionSampler

    if sources:
        pairs = load_sources(list(sources))
        pairs += synthetic_pairs(synthetic, preset, 384, seed=1000)
    else:
        pairs = load_pairs(data, HELA_SPLIT["train"])
        pairs += generate_many(synthetic, SyntheticSpec(384, 384), seed=1000)
    return RegionSampler(
        [normalize(i) for i, _ in pairs],
        [lb for _, lb in pairs],
        SpiralNetConfig(),
        scales=tuple(scales),
        seed=seed,
    )


def train_unet(
    net: UNet, data: str, minutes: float, device, seed: int, log=None, clock=time.time, **data_options
) -> str:
    """Train ``net`` on ``baseline_sampler`` data for ``minutes`` of ``clock`` on ``device``
    (cosine lr); returns how, for the weight cache's note."""
    steps = [0]

    def counting(name, it, loss):
        steps[0] = it
        if log:
            log(name, it, loss)

    sampler = baseline_sampler(data, seed=seed, **data_options)
    synthetic, scales = data_options.get("synthetic", SYNTHETIC), data_options.get("scales", SCALES)
    device = torch.device(device)
    t0 = time.time()
    fit_unet(net, sampler, minutes * 60, lr_final=3e-5, device=device, log=counting, clock=clock)
    where = (
        f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    )
    kind = "CPU min" if clock is time.process_time else "min"
    data_note = " + ".join(data_options.get("sources") or ["HeLa 0-13"])
    preset = data_options.get("preset", "plain")
    return (
        f"{minutes:g} {kind} on {where}, cosine lr 1e-3 -> 3e-5, {steps[0]} steps of 8 tiles"
        f" ({time.time() - t0:.0f} s wall); data {data_note} + {synthetic} {preset} synthetic at zoom "
        + ",".join(map(str, scales))
    )


def save_unet(path: str, net: UNet, config: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    storage.save_model_dir(path, state, config)


def load_unet(path: str) -> tuple[UNet, dict]:
    """(U-Net in eval mode, its config: ``base``, ``trained``) from a ``save_unet`` directory."""
    tensors, cfg = storage.load_model_dir(path)
    net = UNet(base=int(cfg["base"]))
    net.load_state_dict(tensors)
    return net.eval(), cfg


def postprocessing_note(post: dict) -> str:
    """How a U-Net's chosen post-processing (``min_area``, ``grow``) reads in tables."""
    return f"post-processing chosen on validation: seeds over {post['min_area']} px grown {post['grow']} px"


def _unet(base: int, args, log) -> tuple[UNet, str, dict]:
    """(U-Net, how it was trained, its post-processing: ``unet_instances`` keywords)."""
    path = os.path.join(args.weights, f"unet{base}")
    if os.path.isdir(path):
        net, cfg = load_unet(path)
        post = cfg.get("postprocessing")
        if not post:
            return net, cfg.get("trained", "cached"), {}
        chosen = {"min_area": post["min_area"], "grow": post["grow"]}
        return net, cfg.get("trained", "cached") + "; " + postprocessing_note(chosen), chosen
    net = UNet(base=base)
    if args.baseline_minutes <= 0:
        return net.eval(), "untrained (random weights): timing only", {}
    note = "trained here: " + train_unet(
        net, args.data, args.baseline_minutes, resolve_device(args.device), base, log
    )
    save_unet(path, net, {"base": base, "trained": note})
    return net.eval(), note, {}


def _timed_labels(fn, frames) -> tuple[list[np.ndarray], float, int | None]:
    """(labels per frame, median seconds per frame, regions segmented in all: None unless ``fn``
    returns ``api.Result``s, which count them)."""
    out, times, regions = [], [], []
    for f in frames:
        t0 = time.perf_counter()
        r = fn(f)
        times.append(time.perf_counter() - t0)
        out.append(np.asarray(r.labels if isinstance(r, Result) else r))
        regions.append(r.regions if isinstance(r, Result) else None)
    return out, statistics.median(times), None if None in regions else sum(regions)


def _methods(engine: Engine, spiral_note: str, unets: dict, card) -> dict:
    """name -> (image -> labels, how its weights were made)."""

    def unet_fn(u, post):
        return lambda im: unet_instances(
            unet_logits(u, normalize(im, card.norm, card.norm_low, card.norm_high), engine.device), **post
        )

    # SpiralNet as users run it: the diameter estimated per image (resampled when far from the
    # model's size), regions counted.
    return {
        "spiralnet": (lambda im: api.segment_image(engine, im), spiral_note),
        **{f"unet{b}": (unet_fn(u, post), note) for b, (u, note, post) in unets.items()},
        "watershed": (lambda im: watershed_baseline(normalize(im)), "none (Otsu + distance watershed)"),
    }


BORDER_KEYS = ("object_f1_50", "object_f1_mean_50_90", "pixel_precision", "pixel_recall", "pixel_f1")


def _score(methods: dict, pairs) -> dict:
    """Per method: time per image, the metrics, and the metrics with objects touching the image
    border removed from prediction and truth (HeLa's labels leave most cut nuclei out)."""
    out = {}
    truths = [lb for _, lb in pairs]
    for name, (fn, note) in methods.items():
        labels, secs, regions = _timed_labels(fn, [im for im, _ in pairs])
        cleared = evaluate_many(zip(labels, truths, strict=True), exclude_border=True)
        out[name] = {
            "seconds_per_image": secs,
            "weights": note,
            **evaluate_many(zip(labels, truths, strict=True)),
            "border_excluded": {k: _round(cleared[k]) for k in BORDER_KEYS},
        }
        if regions is not None:  # the recursion's work per object it found (runaway check)
            found = out[name]["n_pred"]
            out[name].update(regions=regions, regions_per_object=regions / found if found else None)
    return out


GENERALISATION_KEYS = ("object_f1_50", "object_f1_mean_50_90", "pixel_f1", "merges", "n_pred", "n_truth")
RUN_KEYS = ("regions", "regions_per_object")
TEST_SHIFT_SEED = 1000  # the shifted test frames' noise and texture, apart from validation's


def generalisation(methods: dict, test_pairs, dsb: str) -> dict:
    """Data nothing was trained or tuned on: the DSB 2018 image (another cell line and
    microscope, manual labels) and the HeLa test frames under acquisition shifts."""
    sets = {}
    if os.path.exists(os.path.join(dsb, "images.tif")):
        sets["DSB 2018 fluorescence (1 image, manual labels)"] = load_pairs(dsb, None)
    shifts = {**ALL_SHIFTS, "inverted (out of domain)": inverted}
    # Seeds of their own: validation's shifted frames (calibrate.py, seed 0) are the same size, so
    # the same seeds would lay the same noise and texture over the test frames as over the frames
    # thresholds were chosen on.
    shifted_test = shifted(test_pairs, seed=TEST_SHIFT_SEED, shifts=shifts)
    sets.update({f"HeLa test, {k}": v for k, v in shifted_test.items()})
    keys = GENERALISATION_KEYS + RUN_KEYS
    return {
        name: {m: {k: _round(r[k]) for k in keys if k in r} for m, r in _score(methods, pairs).items()}
        for name, pairs in sets.items()
    }


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def bench_compare(args) -> dict:
    if not os.path.exists(os.path.join(args.data, "images.tif")):
        raise SpiralrayError(f"bench compare needs the HeLa data at {args.data}")
    frames = [int(f) for f in args.frames.split(",")]
    pairs = load_pairs(args.data, frames)
    net = modelzoo.load(args.model)

    def log(name, it, loss):
        if it % 100 == 0:
            print(f"  {name} it {it} loss {loss:.4f}", flush=True)

    engine = Engine(net, device=args.device)
    unets = {int(b): _unet(int(b), args, log) for b in str(args.unets).split(",") if b}
    methods = _methods(engine, args.model or "shipped default", unets, net.config.model)
    results = _score(methods, pairs)
    for r in results.values():
        r.update({k: _round(v) for k, v in r.items()})
    from .thesis_metrics import plot_scorer_curves, scorer_curves, segmenter_table

    curves = scorer_curves(engine, pairs)
    os.makedirs(args.results, exist_ok=True)
    plot_scorer_curves(curves, os.path.join(args.results, "scorer_threshold.png"))
    t = net.config.candidates.threshold
    at_t = min(range(len(curves["thresholds"])), key=lambda i: abs(curves["thresholds"][i] - t))
    sn = results["spiralnet"]
    return {
        "benchmark": "compare",
        "model_version": args.model_name or args.model or "shipped default",
        "data": f"HeLa frames {frames} (labels are ERR_SEG method output)",
        "note": HELA_NOTE,
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "object_f1_50": sn["object_f1_50"],
        "pixel_f1": sn["pixel_f1"],
        **{
            f"time_ratio_spiralnet_over_unet{b}": round(
                sn["seconds_per_image"] / results[f"unet{b}"]["seconds_per_image"], 3
            )
            for b in unets
        },
        "models": results,
        "generalisation": generalisation(methods, pairs, args.dsb),
        "thesis": {
            "scorer_at_threshold": {
                "threshold": curves["thresholds"][at_t],
                **{k: round(curves[k][at_t], 4) for k in ("error_rate", "miss_rate", "stability_error_rate")},
            },
            "scorer_curves": curves,
            "segmenter_per_channel": segmenter_table(engine, pairs),
        },
    }
