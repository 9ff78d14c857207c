"""The in-process executor: one image of any size through plan -> tiles -> assembly -> output,
in one process, resumable. The Ray executor schedules the same pieces; neither changes the
answer (DESIGN section 2: tiled == whole, whatever the tile size).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..core.objects import in_micrometers, label_dtype
from ..io.output import Output
from ..io.spacing import micrometer_frame
from .assemble import Assembler
from .plan import VERSION, ImagePlan, make_plan
from .run import Options, check_image_run, finish_image_run, start_image_run
from .tiles import encode, score_tile, segment_tiles, source_for


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota when there is one."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


class Progress:
    """Tiles done / total, objects, regions per second on stderr: one updating line on a
    terminal; otherwise (a job's log) a line every ``every`` seconds. ``enabled=False``: silent."""

    def __init__(self, total: int, enabled: bool | None = None, every: float = 30.0):
        self.total, self.done, self.objects, self.regions = total, 0, 0, 0  # total grows per image
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.enabled = True if enabled is None else enabled
        self.every = every

    def line(self) -> str:
        rate = self.regions / max(time.perf_counter() - self.t0, 1e-9)
        # objects as the tiles found them: one cut by a tile seam counts in each until assembly
        return f"tiles {self.done}/{self.total} | {self.objects} objects in tiles | {rate:.0f} regions/s"

    def update(self, tiles: int = 0, objects: int = 0, regions: int = 0) -> None:
        self.done += tiles
        self.objects += objects
        self.regions += regions
        if not self.enabled:
            return
        if self.tty:
            print("\r" + self.line(), end="", file=sys.stderr, flush=True)
        elif time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def run_plan(
    reader, plan: ImagePlan, engine, opts: Options, out: Output | None, done: set, progress=None
) -> dict:
    """Tiles -> objects -> assembly -> output; tiles in ``done`` are reloaded from ``out``."""
    from .tiles import decode

    cfg = engine.cfg
    H, W = plan.shape
    tiles = plan.tiles()
    progress = progress or Progress(0, enabled=False)
    progress.total += len(tiles)
    if out is not None:
        scratch = out.open_scratch(plan.shape, plan.tile_size, resume=bool(done))
        sink = lambda tile, block: out.write_chunk(scratch, tile.y0, tile.x0, block)  # noqa: E731
    else:
        full = np.zeros(plan.shape, np.uint64)

        def sink(tile, block):
            full[tile.y0 : tile.y1, tile.x0 : tile.x1] = block

    asm = Assembler(plan.shape, plan.tile_size, cfg, sink, plan.index, plan.scale)
    source = source_for(reader, plan, cfg)
    stats = {"candidates": 0, "regions": 0, "tiles_reloaded": 0}
    rows = sorted({t.ty for t in tiles})
    for ty in rows:
        row = [t for t in tiles if t.ty == ty]
        objects = []
        todo = []
        for t in row:
            rec = out.get_record(t.key) if (out is not None and t.key in done) else None
            if rec is not None:
                objs = decode(rec)
                stats["candidates"] += int(rec["candidates"][0])
                stats["regions"] += sum(o.regions for o in objs)  # as a run that was not stopped counts
                stats["tiles_reloaded"] += 1
                objects += objs
                progress.update(1, len(objs), 0)
            else:
                todo.append(t)
        for g in range(0, len(todo), opts.group):
            group = todo[g : g + opts.group]
            if source is None:  # a constant image: nothing to find
                found = {t.key: [] for t in group}
                cands = {t.key: 0 for t in group}
            else:
                work = [(t, *score_tile(engine, source, t, plan.scaled_shape, cfg)) for t in group]
                cands = {t.key: len(s) for t, s, _ in work}
                found = segment_tiles(engine, source, work, plan.scaled_shape, cfg)
                source.clear()
            for t in group:
                objs = found[t.key]
                regions = sum(o.regions for o in objs if o is not None)
                stats["candidates"] += cands[t.key]
                stats["regions"] += regions
                if out is not None:
                    out.put_record(t.key, encode(objs, cands[t.key]))
                kept = [o for o in objs if o is not None]
                objects += kept
                progress.update(1, len(kept), regions)
        asm.feed(ty, objects)
    table = finished_table(asm, plan)
    progress.close()
    summary = summarize(plan, asm, table, opts, len(tiles), stats)
    ids = table["id"] if opts.ids == "sequential" else table["seed_id"]
    if out is not None:
        attrs = {"version": VERSION, "manifest": ".spiralray/manifest.json"}
        out.finalize(scratch, table["seed_id"], ids, plan.tile_size, attrs, table, plan.source.get("spacing"))
        return summary
    summary["labels"] = _relabel(full, table["seed_id"], ids, opts.semantic)
    summary["table"] = table
    return summary


def finished_table(asm: Assembler, plan: ImagePlan) -> dict:
    """The image's per-object table once every tile row is fed, with its micrometer columns
    where the input records its pixel size, and the index of the plane it was read from on
    each of the input's other axes (``t``, ``c``, ``z``: tables of a time series' frames or a
    stack's planes concatenate without losing where each object was). Both executors end an
    image with it."""
    table = in_micrometers(asm.finish(), micrometer_frame(plan.source.get("spacing")))
    n, src = len(table["id"]), plan.source
    # only axes longer than 1: the same pixels stored with or without singleton axes (a TIFF, a
    # 5-D OME-Zarr) give the same columns
    at = zip(src.get("axes") or "", src.get("plane") or [], src.get("array_shape") or [], strict=False)
    return {**table, **{a: np.full(n, k, np.int64) for a, k, size in at if a in "tcz" and size > 1}}


def summarize(plan: ImagePlan, asm: Assembler, table: dict, opts: Options, tiles: int, stats: dict) -> dict:
    """One image's summary line (the CLI prints it; the manifest keeps it)."""
    return {
        "shape": list(plan.shape),
        "tiles": tiles,
        "tile_size": plan.tile_size,
        "objects": int(len(table["id"])),
        "candidates": stats["candidates"],
        "regions": stats["regions"],
        "tiles_reloaded": stats.get("tiles_reloaded", 0),
        "missing_chunks": int(plan.source.get("missing_chunks", 0)),
        "largest_component": asm.largest_component,
        "stats": list(plan.stats) if plan.stats is not None else None,
        "scale": plan.scale,
        "diameter": plan.diameter,
        "padded_pixels": plan.padded_pixels,
        "invert": plan.invert,
        "spacing": plan.source.get("spacing"),  # the input's pixel size, None when unrecorded
        "ids": opts.ids,
    }


def segment_image_file(
    input: str,
    output: str,
    engine,
    opts: Options,
    model: str | None = None,
    progress=None,
    storage_options: dict | None = None,
    index: int = 0,
) -> dict:
    """Segment one image on storage into ``output`` (OME-Zarr, or a TIFF for small images), in
    this process. Returns the run's summary (with ``labels`` for a TIFF output)."""
    run = check_image_run(input, output, engine.net, opts, model, storage_options, index)
    if run.finished is not None:
        return run.finished
    start_image_run(
        run,
        None
        if run.plan
        else make_plan(
            run.reader, engine.cfg, opts.tile_size, index, opts.diameter, opts.pad_value, opts.invert
        ),
    )
    summary = run_plan(run.reader, run.plan, engine, opts, run.out, run.done, progress)
    return finish_image_run(run, summary)


def segment_array(image: np.ndarray, engine, opts: Options | None = None) -> dict:
    """The tiled path on an image held in memory (``H x W``, or with ``opts.channel``):
    its summary, with the label image under ``"labels"``."""
    from ..io.planes import choose_plane
    from ..io.readers import ImageReader

    opts = opts or Options()
    a = np.asarray(image)
    reader = ImageReader(
        "memory", a, choose_plane(a.shape, None, opts.channel, opts.plane), a.shape[-2:], True, "memory"
    )
    reader.chunks = reader.shape
    plan = make_plan(
        reader,
        engine.cfg,
        opts.tile_size,
        diameter=opts.diameter,
        pad_value=opts.pad_value,
        invert=opts.invert,
    )
    return run_plan(reader, plan, engine, opts, None, set())


def _relabel(full: np.ndarray, seeds: np.ndarray, ids: np.ndarray, semantic: bool) -> np.ndarray:
    if semantic:
        return (full > 0).astype(np.uint8)
    dtype = label_dtype(ids)
    out = np.zeros(full.shape, dtype)
    fg = full > 0
    out[fg] = np.asarray(ids, dtype)[np.searchsorted(seeds, full[fg])]
    return out
