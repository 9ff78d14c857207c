"""Baselines the thesis compares against: a 3-class U-Net (+ connected components) and a
classical Otsu + distance-transform watershed. Pure NumPy / scikit-image / torch."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label as cc_label
from skimage.morphology import remove_small_objects
from skimage.segmentation import expand_labels, find_boundaries, watershed

from ..core.models import UNet
from ..train.steps import TrainSpec, cosine_lr


def watershed_baseline(image: np.ndarray, min_distance: int = 7, min_area: int = 30) -> np.ndarray:
    """Otsu foreground, then a watershed on the distance transform seeded by its maxima.

    image: ``H x W`` normalised float. Returns ``H x W`` int32 labels.
    """
    from skimage.feature import peak_local_max

    smooth = gaussian(image, 1.0)
    fg = smooth > threshold_otsu(smooth)
    fg = remove_small_objects(fg, max_size=min_area)
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=cc_label(fg), exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def unet_targets(labels: np.ndarray) -> np.ndarray:
    """Per-pixel classes ``H x W`` int64: 0 background, 1 interior, 2 boundary (inner boundaries
    separate touching nuclei)."""
    out = (labels > 0).astype(np.int64)
    out[find_boundaries(labels, mode="inner") & (labels > 0)] = 2
    return out


def unet_instances(logits: torch.Tensor, min_area: int = 12, grow: int = 3) -> np.ndarray:
    """logits ``3 x H x W`` -> instance labels: components of the interior (those over
    ``min_area`` px), grown by up to ``grow`` px back over the predicted foreground (interior +
    boundary). ``bench/train_baselines.py --calibrate`` chooses both on validation data (and
    ``bench/bbbc039.py --unet`` for a U-Net that stores no choice)."""
    cls = logits.argmax(0).cpu().numpy()
    seeds = cc_label(cls == 1, connectivity=1)
    seeds = remove_small_objects(seeds, max_size=min_area)
    grown = expand_labels(seeds, distance=grow)
    return (grown * (cls > 0)).astype(np.int32)


@torch.inference_mode()
def unet_logits(net: UNet, image: np.ndarray, device="cpu") -> torch.Tensor:
    """image: ``H x W`` normalised float32 -> logits ``3 x H x W``."""
    net.eval().to(device)
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None].to(device)
    return net(x)[0]


def unet_step(net: UNet, opt, images: np.ndarray, classes: np.ndarray, device="cpu") -> float:
    """One optimiser step. images ``B x 1 x h x w`` float32, classes ``B x h x w`` int64."""
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(classes).to(device)
    # Boundaries are thin and rare: weight them up so touching nuclei get separated.
    loss = F.cross_entropy(net(x), y, weight=torch.tensor([1.0, 1.0, 3.0], device=device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def fit_unet(
    net: UNet,
    sampler,
    seconds: float,
    batch: int = 8,
    lr: float = 1e-3,
    lr_final: float | None = None,
    device="cpu",
    log=None,
    clock=time.time,
) -> UNet:
    """Train on ``sampler.sample_tiles(batch)`` patches for a budget of ``clock`` seconds
    (``time.time``: wall clock; ``time.process_time``: this process's CPU time, as SpiralNet's
    ``--clock cpu``); with ``lr_final`` the rate decays on SpiralNet's cosine schedule."""
    net.train().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    spec = TrainSpec(lr=lr, lr_final=lr if lr_final is None else lr_final)
    t0, it = clock(), 0
    while clock() - t0 < seconds:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(spec, (clock() - t0) / seconds)
        images, labels = sampler.sample_tiles(batch)
        classes = np.stack([unet_targets(lb) for lb in labels])
        loss = unet_step(net, opt, images, classes, device)
        it += 1
        if log:
            log("unet", it, loss)
    return net.eval()
