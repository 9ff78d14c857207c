"""Several images through the engine together: their regions share spiral passes.

``api.segment_image`` runs one image; each round of the spiral's border continuation then runs
``Engine.probs_of`` on that image's few regions, which leaves a forward pass mostly empty. Here
every image runs the unchanged per-image code (``api.segment_image``: the whole-image path, or
the resampled one-tile path when its nuclei are far from the model's size) in its own thread, on
a shallow copy of the engine whose ``probs_of`` is a rendezvous: when every still-running image
has asked for its next round, the regions of all of them (``M_k x C x h x w`` each, cut from
their own images) go through the spiral in one ``Engine.probs_of`` call. Candidates,
continuation, resolve and ids are therefore exactly the per-image rules (DESIGN section 2:
batching never changes the labels); only the number of regions per forward pass changes.
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


def segment_many(
    engine, items: list[Item], stats: dict | None = None, share: bool | None = None
) -> list[api.Result | Exception]:
    """``api.segment_image`` for every item, with their spiral rounds batched together.

    Returns one ``Result`` per item, or the exception that item raised (a bad image fails alone;
    the others are unaffected). ``stats`` (optional) receives ``requests`` (per-image rounds)
    and ``passes`` (batched ``probs_of`` calls that served them).

    ``share``: batch the rounds (default: on accelerators only). On a CPU a pass of ~16 regions
    already costs the same per region as one of 256 (``bench serve``'s pass-cost curve), and a
    single image's rounds mostly hold that many; sharing then only adds the images' waiting for
    each other (measured x0.86-0.95 of one image at a time), so a CPU runs them in turn.
    """
    if share is None:
        share = torch.device(engine.device).type != "cpu"
    if len(items) == 1 or not share:  # the plain per-image path
        return [_guarded(lambda it=it: _segment(engine, it)) for it in items]
    step = _Lockstep(engine, len(items))
    out: list = [None] * len(items)

    def work(k: int) -> None:
        view = copy.copy(engine)  # shares the networks; only probs_of (and cfg) differ
        view.probs_of = lambda regions: step.submit(k, regions)
        view._score_window = step.serialized(engine._score_window)
        try:
            out[k] = _guarded(lambda: _segment(view, items[k]))
        finally:
            step.done()

    threads = [threading.Thread(target=work, args=(k,), name=f"segment-{k}") for k in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if stats is not None:
        stats.update(requests=step.requests, passes=step.passes)
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
    """The rendezvous: collects one ``probs_of`` request per running image, then computes all of
    them in one call. Every running image is blocked in ``submit`` when the batch runs, so it
    runs under the lock without holding anyone up."""

    def __init__(self, engine, running: int):
        self.engine = engine
        self.running = running
        self.pending: dict[int, torch.Tensor] = {}
        self.results: dict[int, object] = {}
        self.cond = threading.Condition()
        # One torch call at a time: concurrent calls from the images' threads would each start
        # a full intra-op thread team (oversubscribed spinning threads on a small CPU).
        self.torch_lock = threading.Lock()
        self.requests = 0  # per-image rounds
        self.passes = 0  # batched probs_of calls (for tests and the benchmark)

    def serialized(self, fn):
        """``fn`` run under the torch lock (the images' scoring)."""

        def call(*args, **kwargs):
            with self.torch_lock:
                return fn(*args, **kwargs)

        return call

    def submit(self, k: int, regions: torch.Tensor) -> torch.Tensor:
        with self.cond:
            self.pending[k] = regions
            self.requests += 1
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
        keys = sorted(batch)
        try:
            # regions are independent: concatenated, each sees exactly its own pixels
            with self.torch_lock:
                probs = self.engine.probs_of(torch.cat([batch[k] for k in keys]))
            self.results.update(zip(keys, torch.split(probs, [len(batch[k]) for k in keys]), strict=True))
        except Exception as exc:  # every waiting image gets the failure, none hangs
            self.results.update(dict.fromkeys(batch, exc))
        self.passes += 1
        self.cond.notify_all()
