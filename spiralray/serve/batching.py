"""Several images through the engine together: their regions share spiral passes.

``api.segment_image`` runs one image; the spiral's border continuation then calls
``region_masks(centres)`` once per round with that image's few regions, which leaves a forward
pass mostly empty. Here every image runs the unchanged per-image code (``api.segment_image`` ->
``Engine.segment`` -> ``segment.segment_with`` -> ``spiral.segment_objects`` -> resolve) in its
own thread, on a shallow copy of the engine whose ``region_masks`` is a rendezvous: when every
still-running image has asked for its next round, the rounds of all of them are computed in one
``Engine.region_masks`` call over the images placed side by side. Candidates, continuation,
resolve and ids are therefore exactly the per-image rules (DESIGN section 2: batching never
changes the labels); only the number of regions per forward pass changes.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch

from .. import api


@dataclass(frozen=True)
class Item:
    """One image to segment and its options (as ``api.segment_image`` takes them)."""

    image: np.ndarray  # H x W, or C x H x W / H x W x C with ``channel``
    channel: int | None = None
    ids: str = "sequential"
    exclude_border: bool = False
    diameter: float | str = "auto"  # px, or "auto" (as ``api.segment_image`` takes it)


def segment_many(engine, items: list[Item]) -> list[api.Result | Exception]:
    """``api.segment_image`` for every item, with their spiral rounds batched together.

    Returns one ``Result`` per item, or the exception that item raised (a bad image fails alone;
    the others are unaffected).
    """
    if len(items) == 1:  # nothing to share: the plain per-image path
        return [_guarded(lambda: _segment(engine, items[0]))]
    step = _Lockstep(engine, len(items))
    out: list = [None] * len(items)

    def work(k: int) -> None:
        view = copy.copy(engine)  # shares the networks; only region_masks (and cfg) differ
        view.region_masks = lambda padded, pad, centres: step.submit(k, padded, pad, centres)
        try:
            out[k] = _guarded(lambda: _segment(view, items[k]))
        finally:
            step.done()

    threads = [threading.Thread(target=work, args=(k,), name=f"segment-{k}") for k in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _segment(engine, item: Item) -> api.Result:
    if item.exclude_border:  # as ``spiralray segment --exclude-border`` sets it
        engine = copy.copy(engine)
        engine.cfg = engine.cfg.replace(candidates={"exclude_border": True})
    return api.segment_image(engine, item.image, channel=item.channel, ids=item.ids, diameter=item.diameter)


def _guarded(fn):
    try:
        return fn()
    except Exception as exc:
        return exc


class _Lockstep:
    """The rendezvous: collects one ``region_masks`` request per running image, then computes all
    of them in one call. Every running image is blocked in ``submit`` when the batch runs, so it
    runs under the lock without holding anyone up."""

    def __init__(self, engine, running: int):
        self.engine = engine
        self.running = running
        self.pending: dict[int, tuple] = {}
        self.results: dict[int, object] = {}
        self.cond = threading.Condition()
        self.passes = 0  # batched region_masks calls (for tests and the benchmark)

    def submit(self, k: int, padded: torch.Tensor, pad: int, centres: np.ndarray) -> np.ndarray:
        with self.cond:
            self.pending[k] = (padded, pad, centres)
            self._run_if_complete()
            while k not in self.results:
                self.cond.wait()
            out = self.results.pop(k)
        if isinstance(out, BaseException):
            raise out
        return out

    def done(self) -> None:
        with self.cond:
            self.running -= 1
            self._run_if_complete()

    def _run_if_complete(self) -> None:
        if not self.pending or len(self.pending) < self.running:
            return
        batch, self.pending = self.pending, {}
        try:
            masks = side_by_side_masks(self.engine, [batch[k] for k in sorted(batch)])
            self.results.update(zip(sorted(batch), masks, strict=True))
        except Exception as exc:  # every waiting image gets the failure, none hangs
            self.results.update(dict.fromkeys(batch, exc))
        self.passes += 1
        self.cond.notify_all()


def side_by_side_masks(engine, requests: list[tuple[torch.Tensor, int, np.ndarray]]) -> list[np.ndarray]:
    """``Engine.region_masks`` for several images in one call.

    requests: ``(padded C x Hp x Wp, pad, centres M x 2)`` per image, all with the same ``pad``
    (the engine's). The padded images are placed side by side on one canvas (``C x max Hp x
    sum Wp``) and each image's centres shifted by its column offset: every region is cut from
    inside its own image's padded extent (as it must be for the single image), so each region
    sees exactly the pixels it sees alone. Returns each image's masks ``M x h x w`` (bool).
    """
    pads = {pad for _, pad, _ in requests}
    if len(pads) != 1:
        raise ValueError(f"images padded differently: {sorted(pads)}")
    heights = [p.shape[1] for p, _, _ in requests]
    widths = [p.shape[2] for p, _, _ in requests]
    first = requests[0][0]
    canvas = first.new_zeros((first.shape[0], max(heights), sum(widths)))
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    centres = []
    for (padded, _, c), off in zip(requests, offsets, strict=True):
        canvas[:, : padded.shape[1], off : off + padded.shape[2]] = padded
        centres.append(np.asarray(c, np.int64).reshape(-1, 2) + np.array([0, off], np.int64))
    masks = engine.region_masks(canvas, pads.pop(), np.concatenate(centres))
    bounds = np.cumsum([len(c) for c in centres])[:-1]
    return np.split(masks, bounds)
