"""Training loops in plain PyTorch; ``train.py`` runs them under Ray Train.

The segmenter trains on the recursion it runs at inference: each iteration runs the whole
spiral (``engine.spiral_batch``, no gradients) over a batch of regions with the current weights,
records every step's input windows, and fits the network on those windows against the true
three-channel labels. Feeding back its own predictions removes the exposure bias of pure
teacher forcing (which makes masks "bleed" into neighbours at inference); a fraction of
teacher-forced spirals keeps the clean-history case covered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.transform import rescale

from .config import SpiralNetConfig
from .engine import spiral_batch, window_margin
from .net import SpiralNet
from .regions import centre_slices, reverse_distance_matrix, score_foreground, three_channel_labels
from .spiral import geometry_for


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
    augment: bool = True
    seed: int = 0


class RegionSampler:
    """Draws augmented regions and labels from normalised (image, labels) pairs.

    images: list of ``H x W`` float32 (normalised per image); labels: ``H x W`` int instance ids.
    ``sample(B)`` returns (regions ``B x 1 x h x w`` float32, labels ``B x h x w`` int64).
    """

    def __init__(
        self,
        images,
        labels,
        cfg: SpiralNetConfig,
        augment: bool = True,
        seed: int = 0,
        object_fraction: float = 0.85,
        scales: tuple[float, ...] = (1.0,),
    ):
        self.cfg, self.augment, self.object_fraction = cfg, augment, object_fraction
        self.rng = np.random.default_rng(seed)
        # Zoomed copies: nuclei of other magnifications and cell lines come in other sizes.
        images, labels = zip(
            *[
                (im, lb)
                if sc == 1
                else (
                    rescale(im, sc, order=1, preserve_range=True).astype(np.float32),
                    rescale(lb, sc, order=0, preserve_range=True, anti_aliasing=False).astype(lb.dtype),
                )
                for im, lb in zip(images, labels, strict=True)
                for sc in scales
            ],
            strict=True,
        )
        r = cfg.region
        self.half = max(r.height, r.width) // 2 + 1  # square crops of side 2 half + 1 rotate in place
        self.images = [np.pad(im, self.half, mode="symmetric") for im in images]
        self.labels = [np.pad(lb, self.half, mode="symmetric") for lb in labels]
        self.objects = [_pixels_by_object(lb) for lb in labels]
        # Each zoom equally likely (weighting by zoomed size would starve the small zooms).
        zooms = list(scales) * (len(images) // len(scales))  # the copies cycle through the scales
        self.weights = np.array([im.size / z**2 for im, z in zip(images, zooms, strict=True)])
        self.weights /= self.weights.sum()

    def _centre(self, i: int) -> tuple[int, int]:
        """A random pixel of a random object (small and dim nuclei count as much as big ones),
        or, with probability 1 - object_fraction, any pixel."""
        pts, starts = self.objects[i]
        if len(starts) > 1 and self.rng.random() < self.object_fraction:
            k = self.rng.integers(len(starts) - 1)
            return tuple(pts[self.rng.integers(starts[k], starts[k + 1])])
        h, w = self.images[i].shape
        return self.rng.integers(0, h - 2 * self.half), self.rng.integers(0, w - 2 * self.half)

    def sample(self, batch: int):
        r, s = self.cfg.region, self.half
        cy, cx = r.centre
        imgs = np.empty((batch, 1, r.height, r.width), np.float32)
        labs = np.empty((batch, r.height, r.width), np.int64)
        for b in range(batch):
            i = self.rng.choice(len(self.images), p=self.weights)
            y, x = self._centre(i)
            sq = (slice(y, y + 2 * s + 1), slice(x, x + 2 * s + 1))  # centred on (y, x)
            im, lb = self.images[i][sq], self.labels[i][sq]
            if self.augment:
                im, lb = self._augment(im, lb)
            crop = (slice(s - cy, s - cy + r.height), slice(s - cx, s - cx + r.width))
            imgs[b, 0], labs[b] = im[crop], lb[crop]
        return imgs, labs

    def sample_tiles(self, batch: int, size: int = 128):
        """Square training tiles for the U-Net baseline, the same augmentation:
        (images ``B x 1 x size x size``, labels ``B x size x size``)."""
        imgs = np.empty((batch, 1, size, size), np.float32)
        labs = np.empty((batch, size, size), np.int64)
        for b in range(batch):
            i = self.rng.choice(len(self.images), p=self.weights)
            h, w = self.images[i].shape
            y, x = self.rng.integers(0, h - size + 1), self.rng.integers(0, w - size + 1)
            im = self.images[i][y : y + size, x : x + size]
            lb = self.labels[i][y : y + size, x : x + size]
            if self.augment:
                im, lb = self._augment(im, lb)
            imgs[b, 0], labs[b] = im, lb
        return imgs, labs

    def _augment(self, im: np.ndarray, lb: np.ndarray):
        """A random 90-degree rotation and flip of a square crop (about its centre pixel when the
        side is odd), then intensity jitter."""
        k = self.rng.integers(4)
        im, lb = np.rot90(im, k), np.rot90(lb, k)
        if self.rng.random() < 0.5:
            im, lb = im[:, ::-1], lb[:, ::-1]
        return self._jitter(im), lb

    def _jitter(self, im: np.ndarray) -> np.ndarray:
        """Intensity jitter: contrast, offset, gamma, blur and noise, so other microscopes and
        bit depths (other normalisation outcomes) look familiar."""
        rng = self.rng
        # Log-uniform contrast down to 0.15: dim nuclei (0.05-0.1 after normalisation) are common.
        im = im * np.exp(rng.uniform(np.log(0.15), np.log(1.5))) + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.5:
            im = np.sign(im) * np.abs(im) ** rng.uniform(0.7, 1.4)
        if rng.random() < 0.3:
            im = ndi.gaussian_filter(im, rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            im = im + rng.normal(0, rng.uniform(0.0, 0.08), im.shape)
        if rng.random() < 0.25:
            # Camera noise as recorded, i.e. before per-image percentile normalisation: the 1st
            # percentile falls ~2.3 sigma below the background, which lifts the background, and
            # the 99.8th ~2.9 sigma above the brightest nuclei.
            sigma = rng.uniform(0.03, 0.2)
            im = (im + rng.normal(0, sigma, im.shape) + 2.33 * sigma) / (1 + 5.2 * sigma)
        return im.astype(np.float32)


def _pixels_by_object(labels: np.ndarray):
    """(pixel coords sorted by object ``P x 2``, start offsets per object ``K + 1``)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    order = order[flat[order] > 0]
    ids = flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True]) if len(ids) else np.zeros(1, int)
    coords = np.stack(np.unravel_index(order, labels.shape), 1)
    return coords, starts


def cosine_lr(spec: TrainSpec, progress: float) -> float:
    """Learning rate at ``progress`` (0 = start, 1 = end of the budget): cosine from lr to lr_final."""
    p = min(max(progress, 0.0), 1.0)
    # A Python float: optimizer state is saved with torch.save and read back weights_only.
    return float(spec.lr_final + (spec.lr - spec.lr_final) * 0.5 * (1 + np.cos(np.pi * p)))


def score_targets(labels: np.ndarray, cfg: SpiralNetConfig) -> np.ndarray:
    """Thesis formula (2) per region, over ``score_foreground`` of the model's score label (the
    crop's own centredness for "centred"). labels: ``B x h x w`` -> ``B`` float32."""
    rows, cols = centre_slices(cfg.region)
    w = reverse_distance_matrix(cfg.region)[rows, cols]
    fg = np.stack([score_foreground(lb, cfg.model.score_label)[rows, cols] for lb in labels])
    return (fg * w).sum((1, 2)) / cfg.region.centre_window**2


def scorer_step(net: SpiralNet, opt, imgs, labs, spec: TrainSpec, device, sync=None, targets=None) -> float:
    """One optimiser step on a batch of regions; ``sync(module)`` runs between backward and
    step (the distributed gradient all-reduce). ``targets`` (``B`` float32): precomputed
    ``score_targets(labs)``, e.g. by a loader worker."""
    x = torch.from_numpy(imgs).to(device)
    y = torch.from_numpy(score_targets(labs, net.config) if targets is None else targets).to(device)
    pred = net.scorer(x)
    loss = F.mse_loss(pred, y) if spec.scorer_loss == "mse" else F.l1_loss(pred, y)
    opt.zero_grad()
    loss.backward()
    if sync:
        sync(net.scorer)
    opt.step()
    return float(loss.detach())


def spiral_windows(net: SpiralNet, imgs, labs, teacher: bool, device):
    """Run the spiral (no gradients) and return every step's training sample.

    Returns (image windows ``K x 1 x s x s``, mask windows ``K x 3 x s x s``, targets
    ``K x 3 x n x n``, weights ``K x 1 x n x n``), s = n + 2r; weights are 0 outside the region.
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
    inside = torch.zeros((1, 1, h + 2 * my, w + 2 * mx), device=device)
    inside[:, :, my : my + h, mx : mx + w] = 1
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
    ims, masks, targets, weights = spiral_windows(net, imgs, labs, teacher, device)
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


class _Batches(torch.utils.data.IterableDataset):
    """Endless ``(regions, labels, score targets or None)`` batches from a ``RegionSampler``;
    each loader worker draws from its own seed."""

    def __init__(self, sampler: RegionSampler, batch: int, cfg: SpiralNetConfig | None, seed: int):
        self.sampler, self.batch, self.cfg, self.seed = sampler, batch, cfg, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:  # a forked copy: give it its own stream of regions
            self.sampler.rng = np.random.default_rng((self.seed, info.id))
        while True:
            imgs, labs = self.sampler.sample(self.batch)
            yield imgs, labs, (score_targets(labs, self.cfg) if self.cfg is not None else None)


def _as_is(batch):
    return batch


def batches(sampler: RegionSampler, batch: int, cfg: SpiralNetConfig | None = None, workers: int = 0):
    """Iterator of ``(regions B x 1 x h x w, labels B x h x w, targets B or None)``. With
    ``workers`` > 0, loader processes draw (and compute the score targets) ahead of the trainer:
    on a GPU the numpy sampling, not the network, otherwise bounds the scorer's rate. The regions
    drawn then depend on the worker count, and the DataLoader draws its base seed from torch's
    global generator."""
    if workers <= 0:
        return iter(_Batches(sampler, batch, cfg, 0))
    seed = int(sampler.rng.integers(2**31))
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, batch, cfg, seed),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        collate_fn=_as_is,  # keep numpy arrays (the default converts them to tensors)
    )
    return iter(loader)


def fit(
    net: SpiralNet,
    sampler: RegionSampler,
    spec: TrainSpec,
    scorer_seconds: float,
    segmenter_seconds: float,
    device="cpu",
    log: Callable[[str, int, float], None] | None = None,
    loader_workers: int = 0,
) -> SpiralNet:
    """Train both stages for a wall-clock budget each (the shipped model's recipe)."""
    rng = np.random.default_rng(spec.seed)
    net.to(device)
    for name, seconds in (("scorer", scorer_seconds), ("segmenter", segmenter_seconds)):
        if seconds <= 0:
            continue
        module = getattr(net, name)
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=spec.lr)
        if name == "scorer":
            stream = batches(sampler, spec.scorer_batch, net.config, loader_workers)
        else:
            stream = batches(sampler, spec.spiral_regions, None, loader_workers)
        t0, it = time.time(), 0
        try:
            while time.time() - t0 < seconds:
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(spec, (time.time() - t0) / seconds)
                imgs, labs, targets = next(stream)
                if name == "scorer":
                    loss = scorer_step(net, opt, imgs, labs, spec, device, targets=targets)
                else:
                    loss = segmenter_step(net, opt, imgs, labs, spec, device, rng)
                it += 1
                if log:
                    log(name, it, loss)
        finally:
            del stream  # stops the loader workers, also when a step raises
        module.eval()
    return net
