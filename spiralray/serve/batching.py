"""Several images through the engine together: their regions share spiral passes.

``api.segment_image`` runs one image; each round of the spiral's border continuation then runs
the segmenter on that image's few regions, which leaves a forward pass mostly empty. Here every
image runs the unchanged per-image code (``api.segment_image``: the whole-image path, or the
resampled one-tile path when its nuclei are far from the model's size) in its own thread, on a
shallow copy of the engine whose mask calls (``region_masks``, ``masks_of``) are a rendezvous:
when every still-running image has asked for its next round, the regions of all of them
(``M_k x C x h x w`` each, cut from their own images) go through the spiral in one
``Engine.probs_of`` call. Candidates, continuation, resolve and ids are therefore exactly the
per-image rules (DESIGN section 2: batching never changes the labels); only the number of
regions per forward pass changes.

Every torch call runs on one thread, the caller's: the image threads only queue them. With
OpenMP, a second thread that runs torch while another thread's team is alive makes every
parallel region pay a sleeping wake-up (libgomp throttles its spinning once more threads than
cores exist): measured x1.6 the time of small convolutions on 2 cores, enough to eat the whole
gain of sharing passes. On a CPU the threads also pass a baton: one of them computes at a
time, so the images' NumPy work never takes a core from a running torch call.
"""

from __future__ import annotations

import copy
import queue
import threading
from concurrent.futures import Future
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
    pad_value: float | None = None  # a fill value that is not data (0, nan)
    pixel_size: float | None = None  # micrometers: what a diameter given as a length is converted by
    invert: bool = False  # nuclei darker than the background: inverted first


def segment_many(
    engine, items: list[Item], stats: dict | None = None, share: bool = True
) -> list[api.Result | Exception]:
    """``api.segment_image`` for every item, with their spiral rounds batched together.

    Returns one ``Result`` per item, or the exception that item raised (a bad image fails alone;
    the others are unaffected). ``stats`` (optional) receives ``requests`` (per-image rounds)
    and ``passes`` (batched segmenter calls that served them). ``share=False`` runs the images
    in turn (the unbatched reference). Every torch call runs on the calling thread.
    """
    if len(items) == 1 or not share:  # the plain per-image path
        return [_guarded(lambda it=it: _segment(engine, it)) for it in items]
    step = _Lockstep(engine, len(items), serial=torch.device(engine.device).type == "cpu")
    out: list = [None] * len(items)

    def work(k: int) -> None:
        step.baton.acquire()
        try:
            view = copy.copy(engine)  # shares the networks; only its torch entry points differ
            view.region_masks = lambda im, pad, c: step.masks(k, lambda: engine.regions_at(im, pad, c))
            view.masks_of = lambda regions: step.masks(k, lambda: engine.as_regions(regions))
            view._score_window = lambda window, stride: step.call(engine._score_window, window, stride)
            view.probs_of = lambda regions: step.call(engine.probs_of, regions)  # any other path
            out[k] = _guarded(lambda: _segment(view, items[k]))
        finally:
            step.done()

    threads = [threading.Thread(target=work, args=(k,), name=f"segment-{k}") for k in range(len(items))]
    for t in threads:
        t.start()
    step.serve()  # this thread runs the torch calls until every image is done
    for t in threads:
        t.join()
    if stats is not None:
        stats.update(requests=step.requests, passes=step.passes)
    return out


def _segment(engine, item: Item) -> api.Result:
    if item.exclude_border:  # as ``spiralray segment --exclude-border`` sets it
        engine = copy.copy(engine)
        engine.cfg = engine.cfg.replace(candidates={"exclude_border": True})
    return api.segment_image(
        engine,
        item.image,
        channel=item.channel,
        ids=item.ids,
        diameter=item.diameter,
        pad_value=item.pad_value,
        pixel_size=item.pixel_size,
        invert=item.invert,
    )


def _guarded(fn):
    try:
        return fn()
    except Exception as exc:
        return exc


class _Lockstep:
    """The rendezvous and the torch queue. Image threads put their rounds (``masks``) and
    other torch calls (``call``) here and wait; the serving thread (``serve``) runs them. A
    round is run when every still-running image has one waiting, as one segmenter call."""

    def __init__(self, engine, running: int, serial: bool):
        self.engine = engine
        # serial (CPU): one thread computes at a time, an image's NumPy or a torch call, as
        # when the images run in turn; an image's own work overlapping a torch call would take
        # a core from its OpenMP team, whose barriers then wait for a preempted thread.
        self.baton = threading.Lock() if serial else _NoLock()
        self.running = running
        self.pending: dict[int, tuple] = {}  # image -> (its regions' maker, its future)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()  # callables; None: every image is done
        self.cond = threading.Condition()
        self.requests = 0  # per-image rounds
        self.passes = 0  # batched segmenter calls (for tests and the benchmark)

    def call(self, fn, *args):
        """``fn(*args)`` run on the serving thread; its result (or exception) here."""
        fut: Future = Future()

        def job():
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self.jobs.put(job)
        return self._wait(fut)

    def masks(self, k: int, regions) -> np.ndarray:
        """Image ``k``'s round: central-object masks ``M x h x w`` (bool) of the regions that
        ``regions()`` makes (``M x C x h x w``, run on the serving thread)."""
        fut: Future = Future()
        with self.cond:
            self.pending[k] = (regions, fut)
            self.requests += 1
            self._dispatch_if_complete()
        return self._wait(fut)

    def _wait(self, fut: Future):
        self.baton.release()
        try:
            return fut.result()
        finally:
            self.baton.acquire()

    def done(self) -> None:
        self.baton.release()
        with self.cond:
            self.running -= 1
            self._dispatch_if_complete()
            if self.running == 0:
                self.jobs.put(None)

    def serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            with self.baton:
                job()

    def _dispatch_if_complete(self) -> None:
        if self.pending and len(self.pending) >= self.running:
            batch, self.pending = self.pending, {}
            self.jobs.put(lambda: self._round(batch))

    def _round(self, batch: dict) -> None:
        keys = sorted(batch)
        try:
            # regions are independent: concatenated, each sees exactly its own pixels
            parts = [batch[k][0]() for k in keys]
            probs = self.engine.probs_of(torch.cat(parts))
            masks = self.engine.central_masks(probs)
            at = np.cumsum([0] + [len(p) for p in parts])
            for i, k in enumerate(keys):
                batch[k][1].set_result(masks[at[i] : at[i + 1]])
        except Exception as exc:  # every waiting image gets the failure, none hangs
            for k in keys:
                if not batch[k][1].done():
                    batch[k][1].set_exception(exc)
        self.passes += 1


class _NoLock:
    """The baton where images may compute side by side (accelerators: their NumPy work runs
    while the device computes)."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass
