"""In-process training of both stages for a wall-clock budget each (the shipped model's
recipe; ``ray_trainer`` runs the same steps under Ray Train)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..core.net import SpiralNet
from .sampling import RegionSampler, batches
from .steps import TrainSpec, cosine_lr, scorer_step, segmenter_step


def fit(
    net: SpiralNet,
    sampler: RegionSampler,
    spec: TrainSpec,
    scorer_seconds: float,
    segmenter_seconds: float,
    device="cpu",
    log: Callable[[str, int, float], None] | None = None,
    loader_workers: int = 0,
    clock: Callable[[], float] = time.time,
) -> SpiralNet:
    """Train both stages for a budget of ``clock`` seconds each (the shipped model's recipe).

    ``clock``: ``time.time`` (wall clock), or ``time.process_time`` (this process's CPU time:
    on a shared machine a paused or starved run then still gets the training it was given)."""
    rng = np.random.default_rng(spec.seed)
    net.to(device)
    for name, seconds in (("scorer", scorer_seconds), ("segmenter", segmenter_seconds)):
        if seconds <= 0:
            continue
        module = getattr(net, name)
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=spec.lr)
        if name == "scorer":
            stream = batches(sampler, spec.scorer_batch, net.config.model.score_label, loader_workers)
        else:
            stream = batches(sampler, spec.spiral_regions, None, loader_workers)
        t0, it = clock(), 0
        try:
            while clock() - t0 < seconds:
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(spec, (clock() - t0) / seconds)
                imgs, labs, targets = next(stream)
                if name == "scorer":
                    loss = scorer_step(net, opt, imgs, targets, spec, device)
                else:
                    loss = segmenter_step(net, opt, imgs, labs, spec, device, rng)
                it += 1
                if log:
                    log(name, it, loss)
        finally:
            del stream  # stops the loader workers, also when a step raises
        module.eval()
    return net
