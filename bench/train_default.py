"""Train the shipped default model in process, on one or several annotated sets plus synthetic
frames; ``bench/calibrate.py`` then chooses its thresholds on validation data.

    python bench/train_default.py --out /tmp/m                      # v1-v6: HeLa 0-13 + 24 plain
    python bench/train_default.py --init spiralray/weights/spiralnet --out /tmp/m \
        --data ../shared/data/bbbc039/train --data ../shared/data/hela:0-13 \
        --synthetic 64 --synthetic-preset diverse                   # v7's sources
    ... --contact-weight 4 --contact-fraction 0.5 --lr 3e-4          # v8: aimed at touching nuclei
    ... --small-fraction 0.3                                          # aimed at micronuclei too

Kept as a script beside the Ray Train job (``jobs/train.py``, the same sources) because it is the
exact recipe of the packaged weights. Model directories are written at the end of each stage
(``OUT.scorer`` after the scorer) and every ``--checkpoint-minutes`` (``OUT.partial``), so a run
killed mid-stage goes on with ``--init OUT.partial``. ``--clock cpu`` counts budgets in this
process's CPU time: on a shared machine a paused or starved run still gets its training.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from spiralray.core.config import SpiralNetConfig
from spiralray.core.engine import resolve_device
from spiralray.core.net import SpiralNet
from spiralray.data.datasets import HELA_SPLIT, SYNTHETIC_PRESETS, load_sources, synthetic_pairs
from spiralray.data.normalize import normalize
from spiralray.errors import SpiralrayError
from spiralray.train.job_args import (
    add_conform_argument,
    add_growth_argument,
    add_sampling_arguments,
    check_sampling_arguments,
)
from spiralray.train.local import fit
from spiralray.train.sampling import RegionSampler, hard_case_options
from spiralray.train.steps import TrainSpec
from spiralray.train.widen import widen_skips


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hela", default="../shared/data/hela", help="HeLa frames 0-13 when no --data")
    ap.add_argument(
        "--data",
        action="append",
        default=None,
        help="PATH[:FRAMES] of an annotated set, repeatable (e.g. ../shared/data/hela:0-13)",
    )
    ap.add_argument("--out", default="/tmp/spiralnet_default")
    ap.add_argument("--scorer-minutes", type=float, default=4)
    ap.add_argument("--segmenter-minutes", type=float, default=20)
    ap.add_argument("--synthetic", type=int, default=24, help="synthetic frames added")
    ap.add_argument("--synthetic-preset", default="plain", choices=SYNTHETIC_PRESETS)
    ap.add_argument("--synthetic-size", type=int, default=384, help="side of a synthetic frame, px")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default=None, help="warm start from this model directory")
    ap.add_argument("--score-label", default=None, help="thesis or centred (default: the model's)")
    ap.add_argument(
        "--seg-widths",
        default=None,
        help="SEG_WIDTH,SEG_TRUNK: a new segmenter of these widths (with --init: beside its scorer and "
        "rules; the tests' small model is 8,16)",
    )
    add_growth_argument(ap)
    ap.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (cosine decay)")
    ap.add_argument("--scales", default="0.75,1.0,1.33", help="zoom factors of the training images")
    add_sampling_arguments(ap)
    add_conform_argument(ap)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--loader-workers", type=int, default=0, help="sampling processes (GPU runs)")
    ap.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="budgets in wall-clock or in this process's CPU minutes (a shared, busy machine)",
    )
    ap.add_argument("--checkpoint-minutes", type=float, default=10, help="save OUT.partial this often")
    args = ap.parse_args()
    try:
        check_sampling_arguments(args)
    except SpiralrayError as e:
        ap.error(str(e))  # one line, no traceback
    torch.set_num_threads(args.threads)
    cfg = SpiralNetConfig()
    sources = args.data or [f"{args.hela}:{HELA_SPLIT['train'][0]}-{HELA_SPLIT['train'][-1]}"]
    try:
        pairs = load_sources(sources, args.conform_outlines or (), args.conform_level, args.conform_passes)
    except SpiralrayError as e:
        ap.error(str(e))
    pairs += synthetic_pairs(args.synthetic, args.synthetic_preset, args.synthetic_size, seed=1000)
    print(json.dumps({"sources": sources, "pairs": len(pairs), "synthetic": args.synthetic}), flush=True)
    images = [normalize(im, cfg.model.norm, cfg.model.norm_low, cfg.model.norm_high) for im, _ in pairs]
    labels = [lb for _, lb in pairs]
    scales = tuple(float(v) for v in args.scales.split(","))
    sampler = RegionSampler(images, labels, cfg, scales=scales, **hard_case_options(args))
    from spiralray import modelzoo

    if args.init:
        net = modelzoo.load(args.init)
        # the same masks as the model given, with room to learn more (--seg-widths: a new segmenter)
        if args.skip_inner and not args.seg_widths:
            try:
                net = widen_skips(net, args.skip_inner)
            except SpiralrayError as e:
                ap.error(str(e))
    else:  # from scratch: built at that width, as a Ray Train job without --init is
        net = SpiralNet.build(cfg.replace(model={"seg_skip_inner": args.skip_inner}), seed=0)
    if args.seg_widths:  # a fresh segmenter of other widths; the scorer and the rules stay
        width, trunk = map(int, args.seg_widths.split(","))
        shape = {"seg_width": width, "seg_trunk": trunk, "seg_skip_inner": args.skip_inner}
        config = net.config.replace(model=shape)
        net = SpiralNet(config, net.scorer, SpiralNet.build(config, seed=0).segmenter)
    if args.score_label:  # only the scorer's training targets depend on it
        net.config = net.config.replace(model={"score_label": args.score_label})
    history = {"scorer": [], "segmenter": []}
    t0 = last_save = time.time()

    def save(path):
        # state_dict() copies to the CPU: the live network stays where it trains.
        iters = {k: len(v) for k, v in history.items()}
        extra = {"history": {k: v[-200:] for k, v in history.items()}, "iterations": iters}
        modelzoo.save(net, path, extra={**extra, "sources": sources, "args": vars(args)})
        return iters

    def log(name, it, loss):
        nonlocal last_save
        history[name].append(loss)
        if it % 50 == 0:
            mean = np.mean(history[name][-50:])
            print(f"{time.time() - t0:7.1f}s {name} it {it} loss {mean:.4f}", flush=True)
        if args.checkpoint_minutes > 0 and time.time() - last_save > args.checkpoint_minutes * 60:
            # Weights mid-stage (no optimizer state): a killed run goes on with --init OUT.partial.
            save(args.out + ".partial")
            last_save = time.time()

    device = resolve_device(args.device)
    spec = TrainSpec(lr=args.lr, contact_weight=args.contact_weight)

    clock = time.process_time if args.clock == "cpu" else time.time
    stages = {"scorer": args.scorer_minutes * 60, "segmenter": args.segmenter_minutes * 60}
    for name, seconds in stages.items():
        if seconds <= 0:
            continue
        budget = {k: seconds if k == name else 0 for k in stages}
        fit(
            net, sampler, spec, budget["scorer"], budget["segmenter"], device, log, args.loader_workers, clock
        )
        if name == "scorer" and args.segmenter_minutes > 0:
            save(args.out + ".scorer")  # kept if the segmenter stage dies
    iters = save(args.out)
    print(
        json.dumps({"out": args.out, "seconds": time.time() - t0, "device": str(device), "iterations": iters})
    )


if __name__ == "__main__":
    main()
