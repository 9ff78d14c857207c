"""Training samples: augmented regions (and U-Net tiles) drawn from normalised image/label
pairs, and the batch stream that feeds a training loop (optionally from loader processes)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.transform import rescale

from ..core.config import SpiralNetConfig
from ..core.regions import contact_zone, region_score, score_foreground
from ..data.appearance import autofluorescence

# RegionSampler's options for training aimed at hard cases, as the job and the script carry them.
HARD_CASES = ("contact_fraction", "small_fraction", "small_area", "tissue_fraction")


def hard_case_options(source) -> dict:
    """``RegionSampler`` keyword options ``HARD_CASES`` read off parsed flags or a ``TrainJob``."""
    return {k: getattr(source, k) for k in HARD_CASES}


class RegionSampler:
    """Draws augmented regions and labels from normalised (image, labels) pairs.

    images: list of ``H x W`` float32 (normalised per image); labels: ``H x W`` int instance ids.
    ``sample(B, score_label)`` returns (regions ``B x 1 x h x w`` float32, labels ``B x h x w``
    int64, score targets ``B`` float32 or None).

    Images and labels are mirrored at the border (inference pads images the same way), but a
    mirrored object is another object: its pixels get ids of their own (``_pad_labels``).

    ``contact_fraction``: of the region centres drawn on objects, the share drawn on objects that
    touch another (``contact_zone``): touching pairs are where masks merge, and a few per field.
    ``small_fraction``: of the region centres drawn on objects, the share drawn on objects under
    ``small_area`` px at native size (micronuclei and blebs: BBBC039 labels them as objects).
    ``tissue_fraction``: the share of augmented samples given a tissue section's textured
    autofluorescent background (``data.appearance.autofluorescence``) over the whole crop, labels
    untouched: real frames in a tissue's light, where the synthetic tissue frames alone left the
    scorer passing bright patches of background as nuclei.
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
        contact_fraction: float = 0.0,
        small_fraction: float = 0.0,
        small_area: float = 60.0,
        tissue_fraction: float = 0.0,
    ):
        self.cfg, self.augment, self.object_fraction = cfg, augment, object_fraction
        self.contact_fraction, self.small_fraction = contact_fraction, small_fraction
        self.tissue_fraction = tissue_fraction
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
        self.labels = [_pad_labels(lb, self.half) for lb in labels]
        self.mirror_steps = [int(np.max(lb, initial=0)) + 1 for lb in labels]
        self._score_maps: dict[str, list[np.ndarray]] = {}
        white = np.random.default_rng((seed, 1)).standard_normal((512, 512), np.float32)
        smooth = ndi.gaussian_filter(white, 1.5)
        self._noise_bank = {"white": white, "smooth": smooth / smooth.std()}
        if tissue_fraction > 0:  # only then: older recipes keep their random streams
            af = autofluorescence(np.random.default_rng((seed, 2)), 768, 768, zoom=1.0).astype(np.float32)
            self._noise_bank["tissue"] = af / max(float(np.percentile(af, 99)), 1e-6)
        self._disc_radius = np.hypot(*np.mgrid[-4:5, -4:5]).astype(np.float32)  # for _spots
        self.objects = [_pixels_by_object(lb) for lb in labels]
        # Only for contact sampling: a filter pass over every image copy at start-up otherwise.
        self.touching = (
            [_touching_objects(lb, *objects) for lb, objects in zip(labels, self.objects, strict=True)]
            if contact_fraction > 0
            else None
        )
        # Each zoom equally likely (weighting by zoomed size would starve the small zooms).
        zooms = list(scales) * (len(images) // len(scales))  # the copies cycle through the scales
        # Only for small-object sampling; "small" at native size: the area scales with zoom^2.
        self.small = (
            [
                np.flatnonzero(np.diff(st) < small_area * z**2)
                for (_, st), z in zip(self.objects, zooms, strict=True)
            ]
            if small_fraction > 0
            else None
        )
        self.weights = np.array([im.size / z**2 for im, z in zip(images, zooms, strict=True)])
        self.weights /= self.weights.sum()

    def _centre(self, i: int) -> tuple[int, int]:
        """A random pixel of a random object (small and dim nuclei count as much as big ones),
        or, with probability 1 - object_fraction, any pixel; ``contact_fraction`` of the object
        draws pick an object that touches another, ``small_fraction`` a small one."""
        pts, starts = self.objects[i]
        if len(starts) > 1 and self.rng.random() < self.object_fraction:
            touching = self.touching[i] if self.touching is not None else ()
            small = self.small[i] if self.small is not None else ()
            # No draw without contact or small sampling: older recipes keep their random stream.
            if len(small) and self.rng.random() < self.small_fraction:
                k = small[self.rng.integers(len(small))]
            elif len(touching) and self.rng.random() < self.contact_fraction:
                k = touching[self.rng.integers(len(touching))]
            else:
                k = self.rng.integers(len(starts) - 1)
            return tuple(pts[self.rng.integers(starts[k], starts[k + 1])])
        h, w = self.images[i].shape
        return self.rng.integers(0, h - 2 * self.half), self.rng.integers(0, w - 2 * self.half)

    def score_maps(self, score_label: str) -> list[np.ndarray]:
        """Per image copy, ``score_foreground`` of its whole labels (padded like the images):
        the scorer's target is a property of each object in the image, not of the crop that
        happens to contain it (``steps.score_truth``, the validation truth, reads the same)."""
        if score_label not in self._score_maps:
            s = self.half
            self._score_maps[score_label] = [
                np.pad(score_foreground(lb[s:-s, s:-s], score_label), s, mode="symmetric")
                for lb in self.labels
            ]
        return self._score_maps[score_label]

    def sample(self, batch: int, score_label: str | None = None):
        """(regions ``B x 1 x h x w`` float32, labels ``B x h x w`` int64, score targets ``B``
        float32 of the score label ``score_label``, or None without one)."""
        r, s = self.cfg.region, self.half
        cy, cx = r.centre
        maps = self.score_maps(score_label) if score_label else None
        imgs = np.empty((batch, 1, r.height, r.width), np.float32)
        labs = np.empty((batch, r.height, r.width), np.int64)
        targets = np.empty(batch, np.float32) if maps else None
        crop = (slice(s - cy, s - cy + r.height), slice(s - cx, s - cx + r.width))
        for b in range(batch):
            i = self.rng.choice(len(self.images), p=self.weights)
            y, x = self._centre(i)
            sq = (slice(y, y + 2 * s + 1), slice(x, x + 2 * s + 1))  # centred on (y, x)
            im, lb, fg = self.images[i][sq], self.labels[i][sq], maps[i][sq] if maps else None
            if self.augment:
                im, lb, fg = self._augment(im, lb, fg)
            imgs[b, 0], labs[b] = im[crop], lb[crop]
            if maps:
                targets[b] = region_score(fg[crop], r)
        return imgs, labs, targets

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
            # The plain mirror (one id across the seam): the U-Net never sees a mirror seam at
            # inference, so a boundary drawn along it would only teach it a false edge.
            lb = self.labels[i][y : y + size, x : x + size] % self.mirror_steps[i]
            if self.augment:
                im, lb, _ = self._augment(im, lb)
            imgs[b, 0], labs[b] = im, lb
        return imgs, labs

    def _augment(self, im: np.ndarray, lb: np.ndarray, fg: np.ndarray | None = None):
        """A random 90-degree rotation and flip of a square crop (about its centre pixel when the
        side is odd) and of its labels and score map, then what other specimens show (nucleoli
        and bright foci inside labelled nuclei) and intensity jitter of the image."""
        k = self.rng.integers(4)
        im, lb = np.rot90(im, k), np.rot90(lb, k)
        fg = np.rot90(fg, k) if fg is not None else None
        if self.rng.random() < 0.5:
            im, lb = im[:, ::-1], lb[:, ::-1]
            fg = fg[:, ::-1] if fg is not None else None
        if self.rng.random() < 0.25:
            im = self._spots(im, lb)
        if self.tissue_fraction > 0 and self.rng.random() < self.tissue_fraction:
            # Up to a third of a bright nucleus's level at the texture's 99th percentile (the
            # synthetic tissue frames' range); added light, so nuclei stay where they were.
            im = im + self.rng.uniform(0.05, 0.35) * self._noise("tissue", im.shape)
        return self._jitter(im), lb, fg

    def _spots(self, im: np.ndarray, lb: np.ndarray) -> np.ndarray:
        """Dark nucleoli and bright chromatin foci (1-2.5 px radius) at up to 8 random seats well
        inside labelled nuclei (the same id 4 px away on all four sides), so a hole or a focus
        never moves a nucleus's edge; the labels are untouched (the nucleus is still whole)."""
        rng, R = self.rng, 4
        h, w = lb.shape
        ys, xs = rng.integers(R, h - R, 8), rng.integers(R, w - R, 8)
        ids = lb[ys, xs]
        inside = ids > 0
        for dy, dx in ((-R, 0), (R, 0), (0, -R), (0, R)):
            inside &= lb[ys + dy, xs + dx] == ids
        if not inside.any():
            return im
        im = np.array(im, np.float32)  # a copy: the crop is a view of the training image
        n = int(inside.sum())
        # Discs of radius 1-2.5 px with a 1-px soft rim (inside a convex nucleus: a seat is >= 4
        # / sqrt 2 px from its edge); depth > 0: a nucleolus, < 0: a focus up to 1.6x as bright.
        spots = np.clip(rng.uniform(1.0, 2.5, (n, 1, 1)) + 0.5 - self._disc_radius, 0, 1)
        gains = 1 - rng.uniform(-0.6, 0.8, (n, 1, 1)) * spots
        for y, x, g in zip(ys[inside], xs[inside], gains, strict=True):
            im[y - R : y + R + 1, x - R : x + R + 1] *= g
        return im

    def _noise(self, field: str, shape) -> np.ndarray:
        """Noise ``shape`` float32 cut at a random offset from a pre-drawn field, ~15x cheaper
        than drawing it: "white" or "smooth" (Gaussian-smoothed, sigma 1.5), unit variance;
        "tissue", the autofluorescent texture, 0 to ~1."""
        bank = self._noise_bank[field]
        (H, W), (h, w) = bank.shape, shape
        if h > H or w > W:
            if field != "tissue":
                return self.rng.standard_normal(shape, np.float32)
            bank = np.pad(bank, ((0, max(h - H, 0)), (0, max(w - W, 0))), mode="wrap")
            H, W = bank.shape
        y, x = self.rng.integers(H - h + 1), self.rng.integers(W - w + 1)
        return bank[y : y + h, x : x + w]

    def _jitter(self, im: np.ndarray) -> np.ndarray:
        """Intensity jitter, so other specimens, microscopes and bit depths (other normalisation
        outcomes) look familiar: chromatin texture, contrast, offset, gamma, blur and defocus,
        uneven illumination and background, speckle, read and camera noise, posterisation."""
        rng = self.rng
        if rng.random() < 0.2:  # granular chromatin: multiplicative smooth texture
            im = im * (1 + rng.uniform(0.05, 0.25) * self._noise("smooth", im.shape))
        # Log-uniform contrast down to 0.15: dim nuclei (0.05-0.1 after normalisation) are common.
        im = im * np.exp(rng.uniform(np.log(0.15), np.log(1.5))) + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.5:
            im = np.sign(im) * np.abs(im) ** rng.uniform(0.7, 1.4)
        if rng.random() < 0.35:  # optics; a third of the time out of focus
            sigma = rng.uniform(0.5, 1.5) if rng.random() < 0.7 else rng.uniform(1.5, 3.0)
            im = ndi.gaussian_filter(im, sigma)
        if rng.random() < 0.3:
            # Uneven illumination (multiplicative) and background (additive haze): a crop sees a
            # plane and a curvature of the frame's vignetting.
            h, w = im.shape
            yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
            xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
            gy, gx, gm, c = rng.uniform(-0.3, 0.3, 4)
            im = im * (1 + gm * (yy + xx) + c * (yy * yy + xx * xx)) + (gy * yy + gx * xx) / 2
        if rng.random() < 0.15:  # speckle: noise proportional to the signal
            im = im * (1 + rng.uniform(0.05, 0.2) * self._noise("white", im.shape))
        if rng.random() < 0.5:
            im = im + rng.uniform(0.0, 0.08) * self._noise("white", im.shape)
        if rng.random() < 0.25:
            # Camera noise as recorded, i.e. before per-image percentile normalisation: the 1st
            # percentile falls ~2.3 sigma below the background, which lifts the background, and
            # the 99.8th ~2.9 sigma above the brightest nuclei.
            sigma = rng.uniform(0.03, 0.2)
            im = (im + sigma * self._noise("white", im.shape) + 2.33 * sigma) / (1 + 5.2 * sigma)
        if rng.random() < 0.15:  # few grey levels: 8-bit data of a dim acquisition
            levels = np.exp(rng.uniform(np.log(8), np.log(64)))
            im = np.round(im * levels) / levels
        return im.astype(np.float32)


def _pad_labels(labels: np.ndarray, pad: int) -> np.ndarray:
    """Symmetric padding of instance ids ``H x W`` -> ``(H + 2 pad) x (W + 2 pad)`` int in which
    every mirrored copy is another object: each of the 8 padding zones (4 sides, 4 corners) adds
    ``k * (max id + 1)``, k = 1..8, to the ids it mirrors. With the plain mirror a nucleus cut by
    the border had a twin with its own id, doubled in its central-object target.
    ``ids % (max id + 1)`` gives the plain mirror back."""
    step = int(np.max(labels, initial=0)) + 1
    lb = np.asarray(labels, np.int32 if 9 * step < 2**31 else np.int64)  # int32: half the memory
    h, w = lb.shape
    band_y = np.repeat([0, 1, 2], [pad, h, pad])  # before / inside / after the image
    band_x = np.repeat([0, 1, 2], [pad, w, pad])
    zone = 3 * band_y[:, None] + band_x[None, :]  # 0..8; 4 is the image itself
    k = np.where(zone < 4, zone + 1, np.where(zone == 4, 0, zone)).astype(lb.dtype)  # no int64 upcast
    out = np.pad(lb, pad, mode="symmetric")
    return np.where(out > 0, out + k * step, 0)


def _pixels_by_object(labels: np.ndarray):
    """(pixel coords sorted by object ``P x 2``, start offsets per object ``K + 1``)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    order = order[flat[order] > 0]
    ids = flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True]) if len(ids) else np.zeros(1, int)
    # int32: a quarter of the sampler's memory on 100+ training fields at several zooms.
    coords = np.stack(np.unravel_index(order, labels.shape), 1).astype(np.int32)
    return coords, starts


def _touching_objects(labels: np.ndarray, pts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Indices (into ``_pixels_by_object``'s objects) of the objects that touch another."""
    if len(starts) < 2:
        return np.zeros(0, np.int64)
    ids = labels[pts[starts[:-1], 0], pts[starts[:-1], 1]]  # object k's id, ascending
    zone = contact_zone(labels)
    return np.searchsorted(ids, np.unique(labels[zone & (labels > 0)]))


class _Batches(torch.utils.data.IterableDataset):
    """Endless ``(regions, labels, score targets or None)`` batches from a ``RegionSampler``;
    each loader worker draws from its own seed."""

    def __init__(self, sampler: RegionSampler, batch: int, score_label: str | None, seed: int):
        self.sampler, self.batch, self.score_label, self.seed = sampler, batch, score_label, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:  # a forked copy: give it its own stream of regions
            self.sampler.rng = np.random.default_rng((self.seed, info.id))
        while True:
            yield self.sampler.sample(self.batch, self.score_label)


def _as_is(batch):
    return batch


def batches(sampler: RegionSampler, batch: int, score_label: str | None = None, workers: int = 0):
    """Iterator of ``(regions B x 1 x h x w, labels B x h x w, targets B or None)``, targets of
    the score label ``score_label`` ("thesis" or "centred"; None: no targets). With
    ``workers`` > 0, loader processes draw (and compute the score targets) ahead of the trainer:
    on a GPU the numpy sampling, not the network, otherwise bounds the scorer's rate. The regions
    drawn then depend on the worker count, and the DataLoader draws its base seed from torch's
    global generator."""
    if workers <= 0:
        return iter(_Batches(sampler, batch, score_label, 0))
    seed = int(sampler.rng.integers(2**31))
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, batch, score_label, seed),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        collate_fn=_as_is,  # keep numpy arrays (the default converts them to tensors)
    )
    return iter(loader)
