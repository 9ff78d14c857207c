"""Training samples: augmented regions (and U-Net tiles) drawn from normalised image/label
pairs, and the batch stream that feeds a training loop (optionally from loader processes)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.transform import rescale

from ..core.config import SpiralNetConfig
from .steps import score_targets


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
