"""The Ray Data actors of the inference graph: scoring (tiles -> candidates) and segmenting
(fixed-size batches of candidates from any tiles and images -> objects).

Rows flow as NumPy batches with the columns of ``ROW`` (``kind`` says what a row is):
- MARKER: one per scored tile, ``n`` = its candidate count (the driver knows when a tile is done);
- CANDIDATE: a seed and its score, in; an object, out (``h = w = 0``: the seed was not in its mask);
- ERROR: a tile that could not be read (``msg`` names the object); the image is reported failed;
- STAT: a segmenter batch's busy seconds and regions, for the load-balance figures.
Each actor loads the model from the payload the driver put in the object store (resolved once
by the driver, never guessed by a worker) and runs torch with as many threads as CPUs it holds.
"""

from __future__ import annotations

import os
import time

import numpy as np

MARKER, CANDIDATE, ERROR, STAT = 0, 1, 2, 3
ROW = {
    "kind": np.int8,
    "image": np.int64,
    "ty": np.int32,
    "tx": np.int32,
    "n": np.int64,
    "y": np.int64,
    "x": np.int64,
    "score": np.float32,
    "regions": np.int32,
    "y0": np.int64,
    "x0": np.int64,
    "h": np.int32,
    "w": np.int32,
    "bits": object,
    "msg": object,
    "busy": np.float64,
}


def rows(items: list[dict]) -> dict[str, np.ndarray]:
    """Row dicts -> a NumPy batch with every column of ``ROW`` (missing values zero / empty)."""
    out = {}
    for k, dt in ROW.items():
        if dt is object:
            col = np.empty(len(items), object)
            col[:] = [r.get(k, b"" if k == "bits" else "") for r in items]
        else:
            col = np.array([r.get(k, 0) for r in items], dt)
        out[k] = col
    return out


def model_payload(net) -> dict:
    """What actors build the model from: its config and its tensors as NumPy arrays."""
    return {"config": net.config.to_dict(), "tensors": {k: v.numpy() for k, v in net.state_dict().items()}}


class _Worker:
    def __init__(self, model, plans, threads: int, device: str, batch_size: int, channel, plane):
        import ray
        import torch

        from ..core.config import SpiralNetConfig
        from ..core.engine import Engine, on_passing_thread
        from ..core.net import SpiralNet
        from .plan import ImagePlan

        torch.set_num_threads(max(1, int(threads)))
        payload, plans = ray.get(model[0]), ray.get(plans[0])

        def build() -> Engine:
            net = SpiralNet.build(SpiralNetConfig.from_dict(payload["config"]), seed=None)
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in payload["tensors"].items()})
            return Engine(net, device=device, batch_size=batch_size)

        # Ray Data calls the actor on a pool thread: no torch team may stay on this one.
        self.engine = on_passing_thread(build)
        self.cfg = self.engine.cfg
        self.plans = {p["index"]: ImagePlan.from_dict(p) for p in plans}
        self.channel, self.plane = channel, plane
        self.sources: dict = {}
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def source(self, image: int):
        """The image's window source (resampled at its plan's scale), its reader opened once
        per actor."""
        from ..io.readers import open_image
        from .tiles import source_for

        if image not in self.sources:
            plan = self.plans[image]
            self.sources[image] = source_for(open_image(plan.input, self.channel, self.plane), plan, self.cfg)
        return self.sources[image]


class ScoreActor(_Worker):
    """Tiles in (``image``, ``ty``, ``tx``); per tile a MARKER and its CANDIDATE rows out."""

    def __call__(self, batch: dict) -> dict:
        from ..core.tiling import Tile
        from ..errors import SpiralrayError
        from .tiles import score_tile

        out: list[dict] = []
        for image, ty, tx in zip(batch["image"], batch["ty"], batch["tx"], strict=True):
            plan = self.plans[int(image)]
            size, (H, W) = plan.tile_size, plan.scaled_shape
            tile = Tile(
                int(ty), int(tx), ty * size, min((ty + 1) * size, H), tx * size, min((tx + 1) * size, W)
            )
            key = {"image": int(image), "ty": int(ty), "tx": int(tx)}
            try:
                if plan.stats is None:
                    seeds, scores = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
                else:
                    source = self.source(int(image))
                    seeds, scores = score_tile(self.engine, source, tile, plan.scaled_shape, self.cfg)
                    source.clear()
            except SpiralrayError as exc:
                out.append({**key, "kind": ERROR, "msg": str(exc)})
                continue
            out.append({**key, "kind": MARKER, "n": len(seeds)})
            out += [
                {**key, "kind": CANDIDATE, "y": int(s[0]), "x": int(s[1]), "score": float(v)}
                for s, v in zip(seeds, scores, strict=True)
            ]
        return rows(out)


def _fault(name: str) -> None:
    """Test hook: when the folder ``SPIRALRAY_FAULT_DIR`` holds a file ``name``, the first actor
    to claim it (a rename: one winner across processes) dies at once, mid-batch, as one on a
    lost node or killed for memory would."""
    folder = os.environ.get("SPIRALRAY_FAULT_DIR")
    if not folder:
        return
    try:
        os.rename(os.path.join(folder, name), os.path.join(folder, name + ".taken"))
    except OSError:  # not asked for, or another actor took it
        return
    os._exit(137)


class SegmentActor(_Worker):
    """Fixed-size batches of rows in: candidates (of any tiles and images) segmented in one
    batched spiral per image; markers and errors passed through; one STAT row per batch."""

    def __call__(self, batch: dict) -> dict:
        from ..errors import SpiralrayError
        from .tiles import segment_candidates

        t0 = time.perf_counter()
        kind = batch["kind"]
        if (kind == CANDIDATE).any():
            _fault("segment-batch")
        out = [{k: batch[k][i] for k in ROW} for i in np.flatnonzero(kind != CANDIDATE)]
        regions = 0
        for image in np.unique(batch["image"][kind == CANDIDATE]):
            idx = np.flatnonzero((kind == CANDIDATE) & (batch["image"] == image))
            seeds = np.stack([batch["y"][idx], batch["x"][idx]], 1)
            plan = self.plans[int(image)]
            try:
                source = self.source(int(image))
                objects = segment_candidates(
                    self.engine, source, seeds, batch["score"][idx], plan.scaled_shape, self.cfg
                )
                source.clear()
            except SpiralrayError as exc:
                for i in idx:
                    out.append(
                        {
                            "kind": ERROR,
                            "image": image,
                            "ty": batch["ty"][i],
                            "tx": batch["tx"][i],
                            "msg": str(exc),
                        }
                    )
                continue
            for i, o in zip(idx, objects, strict=True):
                row = {k: batch[k][i] for k in ("image", "ty", "tx", "y", "x", "score")}
                row["kind"] = CANDIDATE
                if o is not None:
                    row.update(regions=o.regions, y0=o.y0, x0=o.x0, h=o.mask.shape[0], w=o.mask.shape[1])
                    row["bits"] = np.packbits(o.mask.ravel()).tobytes()
                    regions += o.regions
                out.append(row)
        out.append({"kind": STAT, "msg": self.name, "busy": time.perf_counter() - t0, "regions": regions})
        return rows(out)
