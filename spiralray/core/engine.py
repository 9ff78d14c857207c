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
import threading

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpiralrayError
from .config import SpiralNetConfig
from .net import SpiralNet
from .prepare import prepare_image, select_plane
from .regions import crop_pad, crop_regions, grid_centres, grid_shape, pad_image
from .segment import Segmentation, segment_with
from .spiral import SpiralGeometry, geometry_for, reference_region


def on_passing_thread(fn, *args):
    """``fn(*args)`` on a new thread that ends with it; its result, or its exception raised here.

    For building an engine where another thread will run it (a Ray Data actor's ``__init__``
    runs on the main thread, its calls on a pool thread; a Serve replica's model reload): with
    OpenMP, torch work on a thread while another thread's team is alive makes every parallel
    region sleep and wake (libgomp throttles spinning once threads outnumber cores): measured
    x1.4 the time of a 256 x 256 crop's segmentation with 2 threads. A thread that ends takes
    its team with it."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="spiralray-build")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpiralrayError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpiralrayError(f"device {device!r} asked for, but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, meta...: this torch may not have them
        raise SpiralrayError(f"device {device!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev


# Scores are computed in blocks of SCORE_BLOCK x SCORE_BLOCK grid positions fixed on the image's
# global grid, whoever asks: a tile and the whole image then run the same convolutions on the
# same inputs, so their scores are bitwise equal (a convolution over a differently sized input
# may sum in another order: ~3e-7 apart, enough to flip an NMS tie between clipped scores).
SCORE_BLOCK = 16


def block_spans(lo: int, hi: int, n: int, block: int = SCORE_BLOCK) -> list[tuple[int, int]]:
    """Global blocks ``[k block, min((k + 1) block, n))`` that meet grid indices ``[lo, hi)``."""
    return [(k * block, min((k + 1) * block, n)) for k in range(max(lo, 0) // block, -(-min(hi, n) // block))]


def _pad2(pad) -> tuple[int, int]:
    return (pad, pad) if isinstance(pad, int) else (int(pad[0]), int(pad[1]))


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

    def region_masks(self, padded: torch.Tensor, pad, centres: np.ndarray) -> np.ndarray:
        """Central-object masks ``M x h x w`` (bool) of the regions centred on ``centres``."""
        return self.central_masks(self.region_probs(padded, pad, centres))

    def masks_of(self, regions: np.ndarray) -> np.ndarray:
        """Central-object masks ``M x h x w`` (bool) of regions given as pixels ``M x C x h x w``
        (normalised; reflected past the image's borders as a padded image would hold them)."""
        return self.central_masks(self.probs_of(self.as_regions(regions)))

    def as_regions(self, regions: np.ndarray) -> torch.Tensor:
        """Regions ``M x C x h x w`` as float32 on the engine's device."""
        return torch.from_numpy(np.ascontiguousarray(regions, np.float32)).to(self.device)

    def central_masks(self, probs: torch.Tensor) -> np.ndarray:
        """Object masks ``M x 3 x h x w`` (probabilities) -> central-object masks ``M x h x w``
        (bool): the central channel over the spiral's threshold."""
        return (probs[:, 0] > self.cfg.spiral.threshold).cpu().numpy()

    def region_probs(self, padded: torch.Tensor, pad, centres: np.ndarray) -> torch.Tensor:
        """Final object masks ``M x 3 x h x w`` (probabilities) of the regions centred on
        ``centres`` (``M x 2`` image coords); ``padded`` holds image pixel (0, 0) at ``pad``."""
        return self.probs_of(self.regions_at(padded, pad, centres))

    def regions_at(self, padded: torch.Tensor, pad, centres: np.ndarray) -> torch.Tensor:
        """The regions ``M x C x h x w`` (on the engine's device) centred on ``centres``
        (``M x 2`` image coords) of ``padded`` (``C x H' x W'``, image pixel (0, 0) at ``pad``)."""
        (py, px), r = _pad2(pad), self.cfg.region
        cy, cx = r.centre
        c = np.asarray(centres, np.int64).reshape(-1, 2)
        if not len(c):
            return torch.zeros((0, padded.shape[0], r.height, r.width), device=self.device)
        ys = torch.as_tensor(c[:, 0] - cy + py, device=padded.device)
        xs = torch.as_tensor(c[:, 1] - cx + px, device=padded.device)
        rows = ys[:, None] + torch.arange(r.height, device=padded.device)  # M x h
        cols = xs[:, None] + torch.arange(r.width, device=padded.device)  # M x w
        regions = padded[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # M x C x h x w
        return regions.to(self.device)

    def score_grid(self, padded: np.ndarray, pad, rows, cols, shape, stride: int | None = None) -> np.ndarray:
        """Scores (clipped to [0, 1]) of grid positions ``rows = (i0, i1)`` x ``cols = (j0, j1)``
        of an image of ``shape``; ``padded`` (``C x h x w``) holds image pixel (0, 0) at ``pad``
        and every pixel of the global score blocks that meet the range."""
        stride = stride or self.cfg.candidates.stride
        r = self.cfg.region
        gh, gw = grid_shape(*shape, r, stride)
        (py, px), (i0, i1), (j0, j1) = _pad2(pad), rows, cols
        out = np.zeros((max(i1 - i0, 0), max(j1 - j0, 0)), np.float32)
        for b0, b1 in block_spans(i0, i1, gh):
            for c0, c1 in block_spans(j0, j1, gw):
                y0, x0 = b0 * stride - r.pad + py, c0 * stride - r.pad + px
                if y0 < 0 or x0 < 0:
                    raise ValueError(f"score block at grid ({b0}, {c0}) needs pixels outside the window")
                window = padded[
                    :, y0 : y0 + (b1 - b0 - 1) * stride + r.height, x0 : x0 + (c1 - c0 - 1) * stride + r.width
                ]
                s = self._score_window(np.ascontiguousarray(window), stride)
                lo_i, lo_j = max(b0, i0), max(c0, j0)
                hi_i, hi_j = min(b1, i1), min(c1, j1)
                out[lo_i - i0 : hi_i - i0, lo_j - j0 : hi_j - j0] = s[
                    lo_i - b0 : hi_i - b0, lo_j - c0 : hi_j - c0
                ]
        return out

    def score_map(self, padded: np.ndarray, pad, shape, stride: int | None = None) -> np.ndarray:
        """Dense scores ``gh x gw`` (clipped to [0, 1]) of an image padded by ``pad``, on the
        grid of ``stride`` (default: the prediction stride)."""
        gh, gw = grid_shape(*shape, self.cfg.region, stride or self.cfg.candidates.stride)
        return self.score_grid(padded, pad, (0, gh), (0, gw), shape, stride)

    def segment(self, image: np.ndarray, channel: int | None = None) -> Segmentation:
        """Raw image (any numeric dtype) -> ``Segmentation``."""
        plane = select_plane(image, channel)
        x = prepare_image(plane, self.cfg)
        if x is None:
            return _empty(plane.shape, self.cfg)
        return self.segment_normalised(x)

    @torch.inference_mode()
    def segment_normalised(self, x: np.ndarray) -> Segmentation:
        """x: ``C x H x W`` normalised float32."""
        pad = crop_pad(self.cfg.region)
        padded = pad_image(x, pad)
        scores = self.score_map(padded, pad, x.shape[1:])
        padded_t = torch.from_numpy(padded).to(self.device)
        masks = lambda c: self.region_masks(padded_t, pad, c)  # noqa: E731
        return segment_with(x.shape[1:], scores, masks, self.cfg, image=x[0])


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
    def _score_window(self, window: np.ndarray, stride: int) -> np.ndarray:
        """The scorer as a strided convolution over a window ``C x h x w``: ``gh x gw`` scores."""
        t = torch.from_numpy(window).to(self.device)[None]
        return self.net.scorer.dense(t, stride)[0].clamp(0, 1).float().cpu().numpy()

    @torch.inference_mode()
    def probs_of(self, regions: torch.Tensor) -> torch.Tensor:
        """Final object masks ``M x 3 x h x w`` (probabilities) of regions ``M x C x h x w``
        (normalised pixels, on the engine's device); ``batch_size`` regions per forward pass."""
        (my, mx), h, w = self.margin, self.geom.height, self.geom.width
        out = []
        for i in range(0, len(regions), self.batch_size):
            canvas = F.pad(regions[i : i + self.batch_size].to(self.dtype), (mx, mx, my, my))
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
        return torch.cat(out) if out else regions.new_zeros((0, 3, h, w))


def window_margin(geom: SpiralGeometry, radius: int) -> tuple[int, int]:
    """Zero margin around the region that every step's (n + 2r)^2 window needs."""
    ys = [y for y, _ in geom.blocks]
    xs = [x for _, x in geom.blocks]
    n = geom.block
    return (
        max(0, radius - min(ys), max(ys) + n + radius - geom.height),
        max(0, radius - min(xs), max(xs) + n + radius - geom.width),
    )


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

    canvas: ``B x C x Hc x Wc`` regions with zero margins (``Engine.probs_of``). Returns the final
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
    def _score_window(self, window: np.ndarray, stride: int) -> np.ndarray:
        """The per-region MLP at every stride position of a window (chunked to bound memory)."""
        r = self.cfg.region
        gh, gw = (window.shape[1] - r.height) // stride + 1, (window.shape[2] - r.width) // stride + 1
        tops = np.stack(np.meshgrid(np.arange(gh) * stride, np.arange(gw) * stride, indexing="ij"), -1)
        centres = tops.reshape(-1, 2) + np.array(r.centre)
        scores = np.empty(len(centres), np.float32)
        for i in range(0, len(centres), 512):
            regions = crop_regions(window, 0, centres[i : i + 512], r)
            t = torch.from_numpy(regions).to(self.device)
            scores[i : i + 512] = self.net.scorer(t).clamp(0, 1).cpu().numpy()
        return scores.reshape(gh, gw)

    @torch.inference_mode()
    def probs_of(self, regions: torch.Tensor) -> torch.Tensor:
        seg = self.net.segmenter

        def predict(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
            t = seg(torch.from_numpy(img).to(self.device), torch.from_numpy(mask).to(self.device))
            return t.cpu().numpy()

        out = [torch.from_numpy(reference_region(r, predict, self.geom)) for r in regions.cpu().numpy()]
        return torch.stack(out) if out else torch.zeros((0, 3, self.geom.height, self.geom.width))
