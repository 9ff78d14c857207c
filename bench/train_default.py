"""Train the shipped default model (HeLa frames 0-13 + synthetic), calibrate on 14-16.

    python bench/train_default.py --hela ../shared/data/hela --out spiralray/weights/spiralnet

Kept as a script (not the Ray Train job) because it is the exact recipe of the packaged weights.
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
from spiralray.data.datasets import HELA_SPLIT, load_pairs
from spiralray.data.normalize import normalize
from spiralray.data.synthetic import SyntheticSpec, generate_many
from spiralray.train.local import fit
from spiralray.train.sampling import RegionSampler
from spiralray.train.steps import TrainSpec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--out", default="/tmp/spiralnet_default")
    ap.add_argument("--scorer-minutes", type=float, default=4)
    ap.add_argument("--segmenter-minutes", type=float, default=20)
    ap.add_argument("--synthetic", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default=None, help="warm start from this model directory")
    ap.add_argument("--score-label", default=None, help="thesis or centred (default: the model's)")
    ap.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (cosine decay)")
    ap.add_argument("--scales", default="0.75,1.0,1.33", help="zoom factors of the training images")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--loader-workers", type=int, default=0, help="sampling processes (GPU runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SpiralNetConfig()
    pairs = load_pairs(args.hela, HELA_SPLIT["train"])
    pairs += generate_many(args.synthetic, SyntheticSpec(384, 384), seed=1000)
    images = [normalize(im, cfg.model.norm, cfg.model.norm_low, cfg.model.norm_high) for im, _ in pairs]
    labels = [lb for _, lb in pairs]
    sampler = RegionSampler(images, labels, cfg, scales=tuple(float(v) for v in args.scales.split(",")))
    from spiralray import modelzoo

    net = modelzoo.load(args.init) if args.init else SpiralNet.build(cfg, seed=0)
    if args.score_label:  # only the scorer's training targets depend on it
        net.config = net.config.replace(model={"score_label": args.score_label})
    history = {"scorer": [], "segmenter": []}
    t0 = time.time()

    def log(name, it, loss):
        history[name].append(loss)
        if it % 50 == 0:
            mean = np.mean(history[name][-50:])
            print(f"{time.time() - t0:7.1f}s {name} it {it} loss {mean:.4f}", flush=True)

    device = resolve_device(args.device)
    spec = TrainSpec(lr=args.lr)
    fit(
        net,
        sampler,
        spec,
        args.scorer_minutes * 60,
        args.segmenter_minutes * 60,
        device=device,
        log=log,
        loader_workers=args.loader_workers,
    )
    net.to("cpu")
    iters = {k: len(v) for k, v in history.items()}
    modelzoo.save(
        net, args.out, extra={"history": {k: v[-200:] for k, v in history.items()}, "iterations": iters}
    )
    print(
        json.dumps({"out": args.out, "seconds": time.time() - t0, "device": str(device), "iterations": iters})
    )


if __name__ == "__main__":
    main()
