"""One optimiser step of each stage, the learning-rate schedule and the training targets.

The segmenter trains on the recursion it runs at inference: each step runs the whole spiral
(``engine.spiral_batch``, no gradients) over a batch of regions with the current weights,
records every step's input windows, and fits the network on those windows against the true
three-channel labels. Feeding back its own predictions removes the exposure bias of pure
teacher forcing (which makes masks "bleed" into neighbours at inference); a fraction of
teacher-forced spirals keeps the clean-history case covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import SpiralNetConfig
from ..core.engine import spiral_batch, window_margin
from ..core.net import SpiralNet
from ..core.regions import contact_zone, score_foreground, score_map_truth, three_channel_labels
from ..core.spiral import geometry_for


@dataclass(frozen=True)
class TrainSpec:
    lr: float = 1e-3  # the thesis's 1e-4 is too slow for a minutes budget
    lr_final: float = 3e-5  # the learning rate decays on a cosine to this over the budget
    scorer_batch: int = 256
    scorer_loss: str = "mse"  # "mse" (our reading of the thesis) or "mae"
    spiral_regions: int = 48  # regions per on-policy spiral run
    window_fraction: float = 0.35  # recorded step windows trained on per spiral run
    window_batch: int = 384
    teacher_fraction: float = 0.25  # spiral runs that write the truth (teacher forcing)
    object_fraction: float = 0.85  # region centres drawn on objects (the rest anywhere)
    # Segmenter loss weight 1 + contact_weight where touching objects meet (``contact_zone``):
    # v7's merges were masks crossing that band (bench/merges.py); 0 keeps the plain loss.
    contact_weight: float = 0.0
    augment: bool = True
    seed: int = 0


def cosine_lr(spec: TrainSpec, progress: float) -> float:
    """Learning rate at ``progress`` (0 = start, 1 = end of the budget): cosine from lr to lr_final."""
    p = min(max(progress, 0.0), 1.0)
    # A Python float: optimizer state is saved with torch.save and read back weights_only.
    return float(spec.lr_final + (spec.lr - spec.lr_final) * 0.5 * (1 + np.cos(np.pi * p)))


def score_truth(labels: np.ndarray, cfg: SpiralNetConfig, stride: int) -> np.ndarray:
    """The scorer's true score on the grid of ``stride``, ``gh x gw`` float32, from an image's
    instance ids ``H x W``: thesis formula (2) over ``score_foreground`` of the whole image.

    Training reads the same numbers (``RegionSampler.sample`` takes formula (2) of crops of the
    whole image's ``score_foreground``). Whole image, because "centred" is a property of an
    object: computed on a crop, an object the crop cuts has its centre and its peak distance
    moved, a target no inference-time truth has.
    """
    return score_map_truth(score_foreground(labels, cfg.model.score_label), cfg.region, stride)


def scorer_step(net: SpiralNet, opt, imgs, targets, spec: TrainSpec, device, sync=None) -> float:
    """One optimiser step on regions ``B x C x h x w`` against score targets ``B`` float32 (from
    ``RegionSampler.sample``); ``sync(module)`` runs between backward and step (the distributed
    gradient all-reduce)."""
    x = torch.from_numpy(imgs).to(device)
    y = torch.from_numpy(np.array(targets, np.float32)).to(device)  # a copy: Ray Data's are read-only
    pred = net.scorer(x)
    loss = F.mse_loss(pred, y) if spec.scorer_loss == "mse" else F.l1_loss(pred, y)
    opt.zero_grad()
    loss.backward()
    if sync:
        sync(net.scorer)
    opt.step()
    return float(loss.detach())


def spiral_windows(net: SpiralNet, imgs, labs, teacher: bool, device, contact_weight: float = 0.0):
    """Run the spiral (no gradients) and return every step's training sample.

    imgs: regions ``B x 1 x h x w``; labs: their instance ids ``B x h x w``.
    Returns (image windows ``K x 1 x s x s``, mask windows ``K x 3 x s x s``, targets
    ``K x 3 x n x n``, weights ``K x 1 x n x n``), s = n + 2r; weights are 0 outside the region
    and ``1 + contact_weight`` in its contact zone, 1 elsewhere.
    """
    seg, cfg = net.segmenter, net.config
    geom = geometry_for(cfg.region, cfg.spiral)
    r = seg.receptive_radius
    (my, mx), n = window_margin(geom, r), geom.block
    h, w = geom.height, geom.width
    x = torch.from_numpy(imgs).to(device)
    canvas = x.new_zeros((len(imgs), x.shape[1], h + 2 * my, w + 2 * mx))
    canvas[:, :, my : my + h, mx : mx + w] = x
    truth = torch.zeros((len(imgs), 3, h + 2 * my, w + 2 * mx), device=device)
    truth[:, :, my : my + h, mx : mx + w] = torch.from_numpy(
        np.stack([three_channel_labels(lb) for lb in labs])
    ).to(device)
    per_region = len(imgs) if contact_weight else 1
    inside = torch.zeros((per_region, 1, h + 2 * my, w + 2 * mx), device=device)
    inside[:, :, my : my + h, mx : mx + w] = 1
    if contact_weight:
        zone = torch.from_numpy(contact_zone(np.asarray(labs))[:, None].astype(np.float32)).to(device)
        inside[:, :, my : my + h, mx : mx + w] += contact_weight * zone
    record: list = []
    was_training = seg.training
    seg.eval()
    with torch.no_grad():
        spiral_batch(seg, canvas, geom, (my, mx), r, truth=truth if teacher else None, record=record)
    seg.train(was_training)
    ims, masks, targets, weights = [], [], [], []
    for k, img_win, mask_win in record:
        by, bx = geom.blocks[k]
        blk = (slice(by + my, by + my + n), slice(bx + mx, bx + mx + n))
        ims.append(img_win)
        masks.append(mask_win)
        targets.append(truth[:, :, blk[0], blk[1]])
        weights.append(inside[:, :, blk[0], blk[1]].expand(len(imgs), 1, n, n))
    return torch.cat(ims), torch.cat(masks), torch.cat(targets), torch.cat(weights)


def segmenter_step(net: SpiralNet, opt, imgs, labs, spec: TrainSpec, device, rng, sync=None) -> float:
    """One on-policy (or teacher-forced) spiral run, then a pass over a sample of its windows."""
    teacher = rng.random() < spec.teacher_fraction
    ims, masks, targets, weights = spiral_windows(net, imgs, labs, teacher, device, spec.contact_weight)
    keep = torch.from_numpy(rng.permutation(len(ims))[: max(1, int(len(ims) * spec.window_fraction))])
    losses = []
    for i in range(0, len(keep), spec.window_batch):
        j = keep[i : i + spec.window_batch].to(device)
        logits = net.segmenter.logits(ims[j], masks[j], padding=0)
        wt = weights[j]
        loss = (F.binary_cross_entropy_with_logits(logits, targets[j], reduction="none") * wt).sum()
        loss = loss / (wt.sum() * 3).clamp_min(1)
        opt.zero_grad()
        loss.backward()
        if sync:
            sync(net.segmenter)
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))
