"""Stage-1 and stage-2 arithmetic: the batched windowed engine and the one-region reference.

Fast path (``Engine``):
- dense scoring: the scorer as a 52 x 58 convolution with stride s over the padded image;
- the spiral for many regions at once: step k of every region in one forward pass (all regions
  share the spiral, so step k is the same window of every region's canvas: a slice, no gather);
- each step computes only the (n + 2r)^2 window its n x n block depends on, with unpadded
  convolutions (r = the segmenter's receptive radius), and the image branch's first conv runs
  once per region, not per step.
Reference path (``ReferenceEngine``): per-region scorer and the full-FoV recursion of
``spiral.reference_region``; the oracle the fast path is tested against.
Both feed the same candidate, continuation and resolve rules (``segment.segment_with``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..data.normalize import apply_stats, image_stats
from ..errors import SpiralrayError
from .config import SpiralNetConfig
from .net import SpiralNet
from .regions import crop_pad, crop_regions, grid_centres, pad_image
from .segment import Segmentation, segment_with
from .spiral import SpiralGeometry, geometry_for, reference_region


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prepare_image(
    image: np.ndarray,
    cfg: SpiralNetConfig,
    channel: int | None = None,
    stats: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """Validate and normalise one image to ``C x H x W`` float32 (C = model channels).

    Returns None for a constant image (no signal: zero objects is the answer). ``stats`` are
    per-image normalisation bounds computed elsewhere (a tiled run passes the whole image's).
    """
    a = np.asarray(image)
    if a.dtype.kind not in "uifb":
        raise SpiralrayError(f"image has non-numeric dtype {a.dtype}")
    if a.ndim == 3 and channel is not None:
        axis = 0 if a.shape[0] <= min(a.shape[1:]) else a.ndim - 1
        if not 0 <= channel < a.shape[axis]:
            raise SpiralrayError(f"channel {channel} out of range: image has {a.shape[axis]} channels")
        a = np.take(a, channel, axis=axis)
    if a.ndim != 2:
        raise SpiralrayError(
            f"image has shape {a.shape}: expected a 2-D image; choose a channel with --channel"
        )
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise SpiralrayError("image contains NaN or infinite values")
    r = cfg.region
    if a.shape[0] < r.height or a.shape[1] < r.width:
        raise SpiralrayError(
            f"image is {a.shape[0]} x {a.shape[1]} px, smaller than one region ({r.height} x {r.width})"
        )
    m = cfg.model
    stats = stats or image_stats(a, m.norm, m.norm_low, m.norm_high)
    if not stats[1] > stats[0]:
        return None
    x = apply_stats(a, stats)
    return np.repeat(x[None], m.in_channels, axis=0) if m.in_channels > 1 else x[None]


class _Base:
    def __init__(self, net: SpiralNet, device: str = "auto", batch_size: int = 256):
        self.net = net
        self.cfg: SpiralNetConfig = net.config
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.geom: SpiralGeometry = geometry_for(self.cfg.region, self.cfg.spiral)
        net.to(self.device)
        net.scorer.eval()
        net.segmenter.eval()

    def region_masks(self, padded: torch.Tensor, pad: int, centres: np.ndarray) -> np.ndarray:
        """Central-object masks ``M x h x w`` (bool) of the regions centred on ``centres``."""
        probs = self.region_probs(padded, pad, centres)
        return (probs[:, 0] > self.cfg.spiral.threshold).cpu().numpy()

    def segment(self, image: np.ndarray, channel: int | None = None) -> Segmentation:
        """Raw image (any numeric dtype) -> ``Segmentation``."""
        x = prepare_image(image, self.cfg, channel)
        shape = tuple(np.asarray(image).shape[-2:]) if x is None else x.shape[1:]
        if x is None:
            return _empty(shape, self.cfg)
        return self.segment_normalised(x)

    @torch.inference_mode()
    def segment_normalised(self, x: np.ndarray) -> Segmentation:
        """x: ``C x H x W`` normalised float32."""
        pad = crop_pad(self.cfg.region)
        padded = pad_image(x, pad)
        scores = self.score_map(padded, pad, x.shape[1:])
        padded_t = torch.from_numpy(padded).to(self.device)
        return segment_with(x.shape[1:], scores, lambda c: self.region_masks(padded_t, pad, c), self.cfg)


def _empty(shape, cfg: SpiralNetConfig) -> Segmentation:
    gh_gw = grid_centres(shape[0], shape[1], cfg.region, cfg.candidates.stride).shape[:2]
    return Segmentation(np.zeros(shape, np.uint32), [], np.zeros(gh_gw, np.float32), 0, 0)


class Engine(_Base):
    """The fast engine. ``batch_size`` regions per forward pass bound the memory footprint.

    Exact by default. Measured options (``spiralray bench engine`` reports each one's speed and
    label change): ``early_stop`` skips steps without object evidence (approximate);
    ``channels_last`` (default) changes memory layout only (faster convolutions on CPU);
    ``dtype`` "bfloat16"/"float16" runs the network in reduced precision (meant for GPUs).
    The engine runs its own copy of the segmenter, so these never change the caller's model.
    """

    def __init__(
        self,
        net: SpiralNet,
        device: str = "auto",
        batch_size: int = 256,
        early_stop: bool = False,
        channels_last: bool = True,
        dtype: str = "float32",
    ):
        super().__init__(net, device, batch_size)
        self.early_stop, self.channels_last = early_stop, channels_last
        self.dtype = getattr(torch, dtype)
        self.segmenter = copy.deepcopy(net.segmenter).to(self.dtype)
        if channels_last:
            self.segmenter.to(memory_format=torch.channels_last)
        self.radius = net.segmenter.receptive_radius
        self.margin = window_margin(self.geom, self.radius)

    @torch.inference_mode()
    def score_map(self, padded: np.ndarray, pad: int, shape, stride: int | None = None) -> np.ndarray:
        """Dense scores ``gh x gw`` (clipped to [0, 1]) of an image padded by ``pad``, on the
        grid of ``stride`` (default: the prediction stride)."""
        r = self.cfg.region
        d = pad - r.pad  # the grid is defined on the image padded by r.pad
        view = padded[:, d : padded.shape[1] - d, d : padded.shape[2] - d] if d else padded
        t = torch.from_numpy(np.ascontiguousarray(view)).to(self.device)[None]
        s = self.net.scorer.dense(t, stride or self.cfg.candidates.stride)[0]
        return s.clamp(0, 1).float().cpu().numpy()

    @torch.inference_mode()
    def region_probs(self, padded: torch.Tensor, pad: int, centres: np.ndarray) -> torch.Tensor:
        """Final object masks ``M x 3 x h x w`` (probabilities) of the regions centred on
        ``centres`` (``M x 2`` image coords); ``batch_size`` regions per forward pass."""
        (my, mx), h, w = self.margin, self.geom.height, self.geom.width
        out = []
        for i in range(0, len(centres), self.batch_size):
            canvas = region_canvas(
                padded, pad, centres[i : i + self.batch_size], self.cfg.region.centre, self.geom, self.margin
            )
            canvas = canvas.to(self.dtype)
            if self.channels_last:
                canvas = canvas.contiguous(memory_format=torch.channels_last)
            mask = spiral_batch(
                self.segmenter,
                canvas,
                self.geom,
                self.margin,
                self.radius,
                early_stop=self.cfg.spiral.threshold / 2 if self.early_stop else None,
            )
            out.append(mask[:, :, my : my + h, mx : mx + w].float())
        return torch.cat(out) if out else padded.new_zeros((0, 3, h, w))


def window_margin(geom: SpiralGeometry, radius: int) -> tuple[int, int]:
    """Zero margin around the region that every step's (n + 2r)^2 window needs."""
    ys = [y for y, _ in geom.blocks]
    xs = [x for _, x in geom.blocks]
    n = geom.block
    return (
        max(0, radius - min(ys), max(ys) + n + radius - geom.height),
        max(0, radius - min(xs), max(xs) + n + radius - geom.width),
    )


def region_canvas(padded: torch.Tensor, pad: int, centres: np.ndarray, centre, geom, margin):
    """Regions centred on ``centres`` (image coords) zero-padded by ``margin``:
    ``B x C x (h + 2 my) x (w + 2 mx)``. padded: ``C x Hp x Wp``, the image padded by ``pad``."""
    (my, mx), h, w = margin, geom.height, geom.width
    cy, cx = centre
    canvas = padded.new_zeros((len(centres), padded.shape[0], h + 2 * my, w + 2 * mx))
    for b, (y, x) in enumerate(np.asarray(centres).tolist()):
        y0, x0 = y - cy + pad, x - cx + pad
        canvas[b, :, my : my + h, mx : mx + w] = padded[:, y0 : y0 + h, x0 : x0 + w]
    return canvas


def spiral_batch(
    seg,
    canvas: torch.Tensor,
    geom: SpiralGeometry,
    margin,
    radius: int,
    truth: torch.Tensor | None = None,
    record: list | None = None,
    early_stop: float | None = None,
) -> torch.Tensor:
    """The spiral over a batch of regions, one forward pass per step on valid windows.

    canvas: ``B x C x Hc x Wc`` regions with zero margins (``region_canvas``). Returns the final
    object masks ``B x 3 x Hc x Wc`` (probabilities). Training hooks: ``truth`` (same shape as
    the mask) is written instead of the prediction (teacher forcing); ``record`` receives
    ``(k, image window, mask window)`` of every step, the inputs the network saw.

    ``early_stop`` (approximate, off by default): an evidence level; after the first step, a
    region whose window holds no central-object evidence (channel 0 <= early_stop everywhere)
    skips the step and gets "background" (0, 0, 1) written; only the others run the network.
    """
    (my, mx), n, r = margin, geom.block, radius
    # Mask-independent work once per region: the image branch and its half of the merge conv.
    context = seg.image_context(seg.image_features(canvas, padding=0), padding=0)  # canvas px (y+2, x+2)
    mask = canvas.new_zeros((canvas.shape[0], 3, *canvas.shape[2:]))
    side = n + 2 * r
    for k, (by, bx) in enumerate(geom.blocks):
        wy, wx = by + my - r, bx + mx - r
        mask_win = mask[:, :, wy : wy + side, wx : wx + side]
        if record is not None:
            record.append((k, canvas[:, :, wy : wy + side, wx : wx + side], mask_win.clone()))
        rows, cols = geom.clipped(k)
        dst = (
            slice(None),
            slice(None),
            slice(rows.start + my, rows.stop + my),
            slice(cols.start + mx, cols.stop + mx),
        )
        if truth is not None:
            mask[dst] = truth[dst]
            continue
        ctx_win = context[:, :, wy : wy + side - 4, wx : wx + side - 4]
        crop = (
            slice(None),
            slice(None),
            slice(rows.start - by, rows.stop - by),
            slice(cols.start - bx, cols.stop - bx),
        )
        if early_stop is not None and k > 0:
            active = (mask_win[:, 0] > early_stop).flatten(1).any(1).nonzero().squeeze(1)
            block = torch.zeros_like(mask[dst])
            block[:, 2] = 1
            if len(active):
                logits = seg.trunk_from_context(ctx_win[active], mask_win[active], padding=0)
                block[active] = torch.sigmoid(logits[crop])
            mask[dst] = block
            continue
        logits = seg.trunk_from_context(ctx_win, mask_win, padding=0)
        mask[dst] = torch.sigmoid(logits[crop])
    return mask


class ReferenceEngine(_Base):
    """One region at a time, the thesis's arithmetic: the oracle for ``Engine``."""

    @torch.inference_mode()
    def score_map(self, padded: np.ndarray, pad: int, shape, stride: int | None = None) -> np.ndarray:
        H, W = shape
        centres = grid_centres(H, W, self.cfg.region, stride or self.cfg.candidates.stride)
        flat = centres.reshape(-1, 2)
        scores = np.empty(len(flat), np.float32)
        for i in range(0, len(flat), 512):  # the per-region MLP, chunked only to bound memory
            regions = crop_regions(padded, pad, flat[i : i + 512], self.cfg.region)
            t = torch.from_numpy(regions).to(self.device)
            scores[i : i + 512] = self.net.scorer(t).clamp(0, 1).cpu().numpy()
        return scores.reshape(centres.shape[:2])

    @torch.inference_mode()
    def region_probs(self, padded: torch.Tensor, pad: int, centres: np.ndarray) -> torch.Tensor:
        seg = self.net.segmenter
        regions = crop_regions(padded.cpu().numpy(), pad, centres, self.cfg.region)

        def predict(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
            t = seg(torch.from_numpy(img).to(self.device), torch.from_numpy(mask).to(self.device))
            return t.cpu().numpy()

        out = [torch.from_numpy(reference_region(r, predict, self.geom)) for r in regions]
        return torch.stack(out) if out else torch.zeros((0, 3, self.geom.height, self.geom.width))
