"""The Ray executor: Ray Data streams tiles of any number of images through scoring actors,
rebatches their candidates into fixed-size batches sharded across the segmenter actor pool
(evenly loaded however dense each tile is), and the driver assembles each image's objects by
overlap components into its output chunks (one writer per chunk), as the in-process executor
does: Ray only schedules the work, it does not change the answer.

    tiles --ScoreActor--> markers + candidates --(batches of B rows)--> SegmentActor --> objects
      --> driver: tile done when its marker's count of objects arrived -> tile record (resume)
      --> tile rows in order -> Assembler -> chunk writes (a thread pool) -> finalize

Only this module and ``actors`` import Ray. Memory: the driver holds the tiles that finished
out of row order, the assembler's open components and the in-flight chunk writes; the actors
hold one batch each.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..core.spiral import ObjectMask
from ..errors import SpiralrayError
from ..io.readers import redact
from .actors import CANDIDATE, ERROR, MARKER, STAT, ScoreActor, SegmentActor, model_payload, rows
from .assemble import Assembler
from .plan import VERSION
from .run import ImageRun, Options
from .tiles import decode, encode


@dataclass
class RayOptions:
    """The actor pools (sizes and resources) and batch sizes; from the CLI or a job's config."""

    score_actors: int = 1
    segment_actors: int = 2
    score_cpus: float = 0.25
    segment_cpus: float = 0.75  # fractional on small machines: Ray Data's own tasks need CPU too
    segment_gpus: float = 0.0
    threads: int | None = None  # torch threads per actor (default: the CPUs it holds, at least 1)
    batch_regions: int = 256  # candidates per segmenter batch (a GPU wants thousands)
    engine_batch: int = 256  # regions per forward pass
    device: str = "auto"
    write_threads: int = 4
    segment_resources: dict | None = None  # custom resources per segmenter actor (e.g. a node type)


_EMBEDDED = False  # whether init_ray started this process's Ray itself (embedded: cannot grow)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray; True when this
    process's Ray is an embedded one that ``init_ray`` started (a single node that cannot grow)."""
    import ray

    global _EMBEDDED
    if ray.is_initialized():
        return _EMBEDDED
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, log_to_driver=False, logging_level="warning")
        _EMBEDDED = False
        return False
    # "local": a new embedded cluster, never one that `ray start` left on this machine
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    _EMBEDDED = True
    return True


ACTOR_FLAGS = {"CPU": "--actor-cpus", "GPU": "--actor-gpus"}  # anything else: --actor-resources
WAITS = "it waits until the cluster grows (an autoscaler may add such nodes; `ray job stop` cancels)"


def check_resources(ropts: RayOptions, embedded: bool) -> None:
    """A segmenter actor must fit on some node; on an embedded Ray (one node), beside the one
    scoring actor the pipeline always keeps."""
    want = {"CPU": ropts.segment_cpus, "GPU": ropts.segment_gpus, **(ropts.segment_resources or {})}
    flags = {k: ACTOR_FLAGS.get(k, "--actor-resources") for k in want}
    beside = {"CPU": ropts.score_cpus} if embedded else None
    check_placeable(want, embedded, "segmenter actor", flags, beside, "scoring actor")


def check_placeable(
    want: dict,
    embedded: bool,
    who: str,
    flags: dict[str, str],
    beside: dict | None = None,
    neighbour: str = "",
    waits: str = WAITS,
) -> None:
    """An actor that no node of the cluster can hold (``want``: resource -> amount; on one node
    with ``beside``, another actor's, when given) would wait, silently. An embedded Ray cannot
    grow: refused, naming the ``flags`` of the resources short. A joined cluster may autoscale:
    a warning on stderr that ends with ``waits``."""
    import ray

    want = {k: float(v) for k, v in want.items() if v}
    need = dict(want)
    for k, v in (beside or {}).items():
        need[k] = need.get(k, 0.0) + float(v)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return
    best = {k: max((node.get(k, 0) for node in nodes), default=0) for k in need}
    short = sorted({flags.get(k, k) for k, v in need.items() if best[k] < v})
    asks = ", ".join(f"{v:g} {k}" for k, v in want.items())
    with_ = (
        f" (beside the {neighbour}'s {', '.join(f'{v:g} {k}' for k, v in beside.items())})" if beside else ""
    )
    has = ", ".join(f"{best[k]:g} {k}" for k in need)
    msg = f"each {who} asks for {asks}{with_}, which no node of this Ray cluster has (at most {has})"
    if embedded:
        raise SpiralrayError(f"{msg}: lower {' / '.join(short)}, or join a cluster that has them")
    print(f"spiralray: warning: {msg}; {waits}", file=sys.stderr, flush=True)


def _quiet_data() -> None:
    """Ray Data's own progress bars and INFO lines would bury ours: one progress line is enough."""
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class _Image:
    """The driver's state of one image: which tiles are done, its assembler and its writes."""

    def __init__(self, run: ImageRun, cfg, opts: Options, pool: ThreadPoolExecutor):
        self.run, self.plan, self.opts = run, run.plan, opts
        self.tiles = {(t.ty, t.tx): t for t in self.plan.tiles()}
        self.expected: dict = {}
        self.got: dict = defaultdict(list)
        self.done: dict = {}  # (ty, tx) -> objects, complete tiles not yet fed
        self.candidates = self.regions = self.reloaded = 0
        self.failed: str | None = None
        self.writes: list = []
        self.pool = pool
        out = run.out
        if out is not None:
            self.scratch = out.open_scratch(self.plan.shape, self.plan.tile_size, resume=bool(run.done))
            write = self._write
        else:
            self.full = np.zeros(self.plan.shape, np.uint64)
            write = self._paint
        self.asm = Assembler(
            self.plan.shape, self.plan.tile_size, cfg, write, self.plan.index, self.plan.scale
        )
        self.rows_left = {ty: sum(1 for t in self.tiles if t[0] == ty) for ty in {t[0] for t in self.tiles}}

    def _write(self, tile, block) -> None:
        while len(self.writes) > 2 * self.pool._max_workers:  # bound the blocks in flight
            self.writes.pop(0).result()
        self.writes.append(self.pool.submit(self.run.out.write_chunk, self.scratch, tile.y0, tile.x0, block))

    def _paint(self, tile, block) -> None:
        self.full[tile.y0 : tile.y1, tile.x0 : tile.x1] = block

    def tile_done(self, key, objects, candidates: int, record: bool = True) -> None:
        self.candidates += candidates
        self.regions += sum(o.regions for o in objects)
        if record and self.run.out is not None:
            self.run.out.put_record(self.tiles[key].key, encode(objects, candidates))
        self.done[key] = objects
        self.rows_left[key[0]] -= 1
        while self.asm.rows_fed in self.rows_left and self.rows_left[self.asm.rows_fed] == 0:
            ty = self.asm.rows_fed
            row = [k for k in sorted(self.done) if k[0] == ty]
            self.asm.feed(ty, [o for k in row for o in self.done.pop(k)])

    def flush(self) -> None:
        for f in self.writes:
            f.result()
        self.writes.clear()


def _object(row: dict) -> ObjectMask | None:
    if row["h"] == 0:
        return None
    h, w = int(row["h"]), int(row["w"])
    mask = np.unpackbits(np.frombuffer(row["bits"], np.uint8), count=h * w).astype(bool).reshape(h, w)
    return ObjectMask(
        (int(row["y"]), int(row["x"])),
        float(row["score"]),
        int(row["y0"]),
        int(row["x0"]),
        mask,
        int(row["regions"]),
    )


def run_images(runs: list[ImageRun], net, opts: Options, ropts: RayOptions, progress=None) -> dict:
    """Segment the images of ``runs`` (checked and started: plans fixed, manifests written)."""
    import ray

    from .local import Progress

    t0 = time.perf_counter()
    progress = progress or Progress(0, enabled=False)
    pool = ThreadPoolExecutor(ropts.write_threads)
    images = {r.index: _Image(r, net.config, opts, pool) for r in runs}
    todo = []
    for img in images.values():  # resume: finished tiles come back from their records
        for key, t in img.tiles.items():
            rec = (
                img.run.out.get_record(t.key) if (img.run.out is not None and t.key in img.run.done) else None
            )
            if rec is None:
                todo.append({"image": img.plan.index, "ty": t.ty, "tx": t.tx})
            else:
                objs = decode(rec)
                img.reloaded += 1
                img.tile_done(key, objs, int(rec["candidates"][0]), record=False)
                progress.update(1, len(objs), 0)
    progress.total += len(todo)
    busy: dict[str, float] = defaultdict(float)
    regions: dict[str, int] = defaultdict(int)
    if todo:
        threads = ropts.threads
        common = {
            # refs nested in a tuple: the actors' constructor arguments stay small (inline), and
            # each actor fetches the model once; the driver keeps the objects alive until the end
            "model": (ray.put(model_payload(net)),),
            "plans": (ray.put([img.plan.to_dict() for img in images.values()]),),
            "device": ropts.device,
            "batch_size": ropts.engine_batch,
            "channel": opts.channel,
            "plane": opts.plane,
        }
        from ray.data import ActorPoolStrategy

        _quiet_data()
        # Why: a tile's candidates leave its ScoreActor call as one block, and Ray Data hands a
        # whole block to one segmenter; blocks of ~batch_regions candidates spread a dense tile
        # over the pool. The context is captured by the dataset when it is built, then restored.
        ctx = ray.data.DataContext.get_current()
        saved_block_size = ctx.target_max_block_size
        ctx.target_max_block_size = candidate_block_bytes(ropts.batch_regions)
        try:
            ds = ray.data.from_items(
                todo, override_num_blocks=max(1, min(len(todo), 4 * ropts.score_actors * 4))
            )
            ds = ds.map_batches(
                ScoreActor,
                batch_size=1,
                compute=ActorPoolStrategy(min_size=1, max_size=ropts.score_actors),
                num_cpus=ropts.score_cpus,
                fn_constructor_kwargs={**common, "threads": threads or max(1, round(ropts.score_cpus))},
                batch_format="numpy",
            )
            ds = ds.map_batches(
                SegmentActor,
                batch_size=ropts.batch_regions,
                # a fixed pool: every segmenter is up from the start, so batches spread at once
                compute=ActorPoolStrategy(min_size=ropts.segment_actors, max_size=ropts.segment_actors),
                num_cpus=ropts.segment_cpus,
                num_gpus=ropts.segment_gpus or None,
                **({"resources": ropts.segment_resources} if ropts.segment_resources else {}),
                fn_constructor_kwargs={**common, "threads": threads or max(1, round(ropts.segment_cpus))},
                batch_format="numpy",
            )
            with warnings.catch_warnings():  # global: Ray Data warns from its executor's thread
                # A run with fewer candidate blocks than segmenters (a small image) leaves some of
                # the fixed pool idle, which Ray Data warns about: expected, not the user's to fix.
                warnings.filterwarnings("ignore", "The minimum number of concurrent actors", UserWarning)
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    _consume(batch, images, progress, busy, regions)
        finally:
            ctx.target_max_block_size = saved_block_size
    progress.close()
    out = {"images": [], "failed": []}
    for img in images.values():
        img.flush()
        if img.failed:
            out["failed"].append({"input": redact(img.run.input), "error": img.failed})
            continue
        out["images"].append(_finish(img, opts))
    pool.shutdown()
    out["busy_seconds"] = dict(busy)
    out["regions_by_actor"] = dict(regions)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def candidate_block_bytes(batch_regions: int) -> int:
    """Bytes of a Ray Data block of ``batch_regions`` candidate rows (measured on a sample, as
    Ray Data sizes blocks: Arrow bytes)."""
    from ray.data.block import BlockAccessor

    sample = rows([{"kind": CANDIDATE, "y": i, "x": i, "score": 0.5} for i in range(64)])
    per_row = BlockAccessor.for_block(BlockAccessor.batch_to_block(sample)).size_bytes() / 64
    return max(1024, int(per_row * batch_regions))


def _consume(batch: dict, images: dict, progress, busy: dict, regions: dict) -> None:
    kinds = batch["kind"]
    for i in range(len(kinds)):
        kind = int(kinds[i])
        if kind == STAT:
            busy[str(batch["msg"][i])] += float(batch["busy"][i])
            regions[str(batch["msg"][i])] += int(batch["regions"][i])
            continue
        img = images[int(batch["image"][i])]
        key = (int(batch["ty"][i]), int(batch["tx"][i]))
        if img.failed:
            continue
        if kind == ERROR:
            img.failed = str(batch["msg"][i])
            continue
        if kind == MARKER:
            img.expected[key] = int(batch["n"][i])
        elif kind == CANDIDATE:
            img.got[key].append(_object({k: batch[k][i] for k in batch}))
        if key in img.expected and len(img.got[key]) == img.expected[key]:
            objs = [o for o in img.got.pop(key) if o is not None]
            n = img.expected.pop(key)
            img.tile_done(key, objs, n)
            progress.update(1, len(objs), sum(o.regions for o in objs))


def _finish(img: _Image, opts: Options) -> dict:
    from .local import _relabel, finished_table, summarize
    from .run import finish_image_run

    plan = img.plan
    table = finished_table(img.asm, plan)
    img.flush()
    ids = table["id"] if opts.ids == "sequential" else table["seed_id"]
    stats = {"candidates": img.candidates, "regions": img.regions, "tiles_reloaded": img.reloaded}
    summary = {**summarize(plan, img.asm, table, opts, len(img.tiles), stats), "executor": "ray"}
    if img.run.out is not None:
        attrs = {"version": VERSION, "manifest": ".spiralray/manifest.json"}
        img.run.out.finalize(
            img.scratch, table["seed_id"], ids, plan.tile_size, attrs, table, plan.source.get("spacing")
        )
    else:
        summary["labels"] = _relabel(img.full, table["seed_id"], ids, opts.semantic)
        summary["table"] = table
    return finish_image_run(img.run, summary)
