"""The per-worker loop run by Ray Train's ``TorchTrainer`` (one stage per trainer)."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time

import numpy as np
import torch

from ..core.config import SpiralNetConfig
from ..core.net import SpiralNet
from .steps import TrainSpec, cosine_lr, scorer_step, segmenter_step

TRAIN_STATE = "train_state.pt"  # optimizer state: checkpoints only, never the registry


def _all_reduce_grads(module: torch.nn.Module) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _validate(net: SpiralNet, val, stage: str) -> dict:
    """Validation metrics of the current weights: score MSE against ``score_truth``, and for the
    segmenter the object / pixel F1 of whole-image segmentation with the engine.

    The engine works on a copy: ``Engine`` moves the network it is given to its device and puts
    it in eval mode, which on the live network would move a GPU run's weights under its optimizer.
    The copy stays on the training device (fast where that is a GPU). val: (image, labels) pairs.
    """
    from ..core.engine import Engine
    from ..core.metrics import evaluate_many
    from ..core.regions import crop_pad, pad_image
    from ..data.normalize import normalize
    from .steps import score_truth

    cfg, m = net.config, net.config.model
    engine = Engine(copy.deepcopy(net), device=str(next(net.scorer.parameters()).device))
    errs = []
    for im, lb in val:
        x = normalize(im, m.norm, m.norm_low, m.norm_high)[None]
        pad = crop_pad(cfg.region)
        pred = engine.score_map(pad_image(x, pad), pad, x.shape[1:])
        errs.append(float(np.mean((pred - score_truth(lb, cfg, cfg.candidates.stride)) ** 2)))
    out = {"val_score_mse": float(np.mean(errs))}
    if stage == "segmenter":
        s = evaluate_many((engine.segment(im).labels, lb) for im, lb in val)
        out.update(val_object_f1_50=s["object_f1_50"], val_pixel_f1=s["pixel_f1"])
    return out


def _save(d: str, net: SpiralNet, opt, history: list, init: str | None) -> None:
    from .. import modelzoo

    modelzoo.save(net, d, extra={"init": init})  # what the run started from (``train.resume``)
    torch.save(opt.state_dict(), os.path.join(d, TRAIN_STATE))
    with open(os.path.join(d, "history.json"), "w") as f:
        json.dump(history, f)


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from ..io.storage import load_model_dir

    job, stage = config["job"], config["stage"]
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    net = SpiralNet.build(
        SpiralNetConfig.from_dict(config["spiralnet"]), seed=job["seed"]
    )  # same on all ranks
    # A restarted worker group gets Ray Train's own checkpoint; a user resume names a directory.
    ckpt = ray.train.get_checkpoint()
    if ckpt is None and config.get("resume"):
        ckpt = ray.train.Checkpoint.from_directory(config["resume"])
    init = {k: torch.from_numpy(np.array(v)) for k, v in (config["init"] or {}).items()}
    if init and not ckpt:  # a checkpoint's weights replace them (and may be shaped otherwise)
        net.load_state_dict(init)
    net.to(device)
    module = net.scorer if stage == "scorer" else net.segmenter
    opt = torch.optim.Adam(module.parameters(), lr=job["lr"])
    history: list[dict] = []
    if ckpt:  # resume: weights, optimizer and the metrics so far
        with ckpt.as_directory() as d:
            state = load_model_dir(d)[0]
            if stage == "segmenter":  # the scorer is this run's scorer stage's result (a resume
                # with more epochs trained it on), not the one saved beside the segmenter: this
                # stage never trains the scorer
                state.update({k: v for k, v in init.items() if k.startswith("scorer.")})
            net.load_state_dict(state)
            opt.load_state_dict(torch.load(os.path.join(d, TRAIN_STATE), map_location=device))
            with open(os.path.join(d, "history.json")) as f:
                history = json.load(f)
    spec = TrainSpec(
        lr=job["lr"],
        scorer_batch=job["scorer_batch"],
        spiral_regions=job["spiral_regions"],
        contact_weight=job["contact_weight"],
    )
    batch = spec.scorer_batch if stage == "scorer" else spec.spiral_regions
    shard = ray.train.get_dataset_shard("train")
    val = ray.get(config["val"]) if rank == 0 else None
    rng = np.random.default_rng(job["seed"] * 1000 + rank + len(history))
    module.train()
    for epoch in range(len(history), job["epochs"]):
        for group in opt.param_groups:  # per epoch, so a resumed run continues the same schedule
            group["lr"] = cosine_lr(spec, epoch / job["epochs"])
        t0, losses, seen = time.time(), [], 0
        for b in shard.iter_batches(
            batch_size=batch, batch_format="numpy", drop_last=True, local_shuffle_buffer_size=4 * batch
        ):
            if stage == "scorer":
                loss = scorer_step(net, opt, b["image"], b["score"], spec, device, sync=_all_reduce_grads)
            else:
                loss = segmenter_step(
                    net, opt, b["image"], b["labels"], spec, device, rng, sync=_all_reduce_grads
                )
            losses.append(loss)
            seen += len(b["image"])
        seconds = time.time() - t0
        metrics = {
            "epoch": epoch + 1,
            f"{stage}_loss": float(np.mean(losses)) if losses else float("nan"),
            "samples_per_s": seen * world / max(seconds, 1e-9),
            "workers": world,  # what Ray Train ran, not what was asked for
            "seconds": seconds,
        }
        if rank == 0 and val:  # no validation data: no validation metrics (never a training frame)
            metrics.update(_validate(net, val, stage))
        history.append(metrics)
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                _save(d, net, opt, history, job["init"])
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)
