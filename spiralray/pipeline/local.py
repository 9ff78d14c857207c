"""The in-process executor: one image of any size through plan -> tiles -> assembly -> output,
in one process, resumable. The Ray executor schedules the same pieces; neither changes the
answer (DESIGN section 2: tiled == whole, whatever the tile size).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import SpiralrayError
from ..io.output import Output
from ..io.readers import TIFF, is_url, local, open_image, redact
from .assemble import Assembler
from .plan import VERSION, ImagePlan, check_tile_size, make_plan, mismatch, weights_hash
from .tiles import WindowSource, encode, score_tile, segment_tiles

TIFF_MAX_PIXELS = 2**28  # a TIFF output is assembled in memory: beyond this, write .zarr


@dataclass
class Options:
    """What a user chooses for a run; ``params()`` is what a resumed run must match."""

    tile_size: int = 1024
    channel: int | None = None
    plane: object = None
    ids: str = "sequential"
    exclude_border: bool = False
    overwrite: bool = False
    strict: bool = False
    semantic: bool = False  # TIFF output only: the foreground mask instead of ids
    group: int = 8  # tiles segmented in one batched spiral

    def params(self, cfg) -> dict:
        return {
            "tile_size": self.tile_size,
            "ids": self.ids,
            "exclude_border": self.exclude_border,
            "candidates": asdict(cfg.candidates),
            "spiral": asdict(cfg.spiral),
        }


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
    """Tiles done / total, objects, regions per second on one updating stderr line (a terminal only)."""

    def __init__(self, total: int, enabled: bool | None = None):
        self.total, self.done, self.objects, self.regions = total, 0, 0, 0
        self.t0 = time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, tiles: int = 0, objects: int = 0, regions: int = 0) -> None:
        self.done += tiles
        self.objects += objects
        self.regions += regions
        if self.enabled:
            rate = self.regions / max(time.perf_counter() - self.t0, 1e-9)
            print(
                f"\rtiles {self.done}/{self.total} | {self.objects} objects | {rate:.0f} regions/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def _same_place(a: str, b: str) -> bool:
    """Whether two paths/URLs are the same location or one lies inside the other."""
    if is_url(a) != is_url(b):
        return False
    pa = redact(a).rstrip("/") if is_url(a) else os.path.realpath(local(a))
    pb = redact(b).rstrip("/") if is_url(b) else os.path.realpath(local(b))
    return pa == pb or pa.startswith(pb + "/") or pb.startswith(pa + "/")


def output_kind(output: str) -> str:
    s = local(output).rstrip("/").lower()
    if s.endswith(TIFF):
        return "tiff"
    if s.endswith(".zarr") or is_url(output):
        return "zarr"
    suffix = os.path.splitext(s)[1]
    raise SpiralrayError(
        f"unsupported output format '{suffix or 'none'}' for {output} (use .zarr, a URL or .tif)"
    )


def check_tiff_output(path: str) -> None:
    """Fail before any work on a TIFF output that cannot be written."""
    p = local(path)
    if os.path.isdir(p):
        raise SpiralrayError(f"output {p} is a directory")
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise SpiralrayError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise SpiralrayError(f"output directory is not writable: {parent}")


def preflight(input: str, output: str, opts: Options) -> str:
    """The checks that need no model and no pixels, made before anything is loaded; returns
    the output kind ("zarr" or "tiff")."""
    check_tile_size(opts.tile_size)
    kind = output_kind(output)
    if _same_place(input, output):
        raise SpiralrayError(f"output {output} is the input (or inside it): choose another output")
    if kind == "tiff":
        check_tiff_output(output)
    return kind


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
    """Segment one image on storage into ``output`` (OME-Zarr, or a TIFF for small images).
    Returns the run's summary."""
    t0 = time.perf_counter()
    kind = preflight(input, output, opts)
    reader = open_image(input, opts.channel, opts.plane, storage_options)
    if opts.strict and reader.missing_chunks:
        raise SpiralrayError(
            f"{redact(input)} has {reader.missing_chunks} missing chunks "
            "(read as the fill value); --strict refuses"
        )
    cfg = engine.cfg
    manifest = {
        "version": VERSION,
        "model": {"source": model or "shipped", "weights_sha256": weights_hash(engine.net)},
        "params": opts.params(cfg),
        "images": [
            {"input": reader.describe()["url"], "shape": list(reader.shape), "source": reader.describe()}
        ],
    }
    out, plan, done = None, None, set()
    if kind == "tiff":
        if reader.shape[0] * reader.shape[1] > TIFF_MAX_PIXELS:
            raise SpiralrayError(
                f"image is {reader.shape[0]} x {reader.shape[1]} px: too large for a TIFF output, write .zarr"
            )
    else:
        out = Output(output, storage_options)
        old = out.manifest() if out.exists() else None
        if old is None and out.exists() and _nonempty(out):
            raise SpiralrayError(
                f"output {redact(output)} exists and is not a spiralray output: choose another path"
            )
        if old is not None:
            differs = mismatch(old, manifest)
            if differs and not opts.overwrite:
                raise SpiralrayError(
                    f"output {redact(output)} holds another run ({differs} differ): "
                    "use --overwrite to replace it"
                )
            if differs or opts.overwrite:
                out.remove()
            else:
                plan = ImagePlan.from_dict(old["images"][0])
                done = out.done_tiles()
                if old.get("complete"):
                    return {**old.get("summary", {}), "resumed": "already complete"}
    if plan is None:
        plan = make_plan(reader, cfg, opts.tile_size, index)
    manifest["images"] = [plan.to_dict()]
    manifest["complete"] = False
    if out is not None:
        out.write_manifest(manifest)  # the writability check, before any work
        out.mark({"version": VERSION, "complete": False, "manifest": ".spiralray/manifest.json"})
    summary = run_plan(reader, plan, engine, opts, out, done, progress)
    summary.update(
        input=redact(input) if is_url(input) else input,
        output=output,
        seconds=round(time.perf_counter() - t0, 3),
    )
    if out is None:
        return summary
    manifest.update(complete=True, summary=summary)
    out.write_manifest(manifest)
    out.drop_scratch()
    return summary


def _nonempty(out: Output) -> bool:
    try:
        return bool(out.fs.ls(out.root, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def run_plan(
    reader, plan: ImagePlan, engine, opts: Options, out: Output | None, done: set, progress=None
) -> dict:
    """Tiles -> objects -> assembly -> output; tiles in ``done`` are reloaded from ``out``."""
    from .tiles import decode

    cfg = engine.cfg
    H, W = plan.shape
    tiles = plan.tiles()
    progress = progress or Progress(len(tiles), enabled=False)
    if out is not None:
        scratch = out.open_scratch(plan.shape, plan.tile_size, resume=bool(done))
        sink = lambda tile, block: out.write_chunk(scratch, tile.y0, tile.x0, block)  # noqa: E731
    else:
        full = np.zeros(plan.shape, np.uint64)

        def sink(tile, block):
            full[tile.y0 : tile.y1, tile.x0 : tile.x1] = block

    asm = Assembler(plan.shape, plan.tile_size, cfg, sink, plan.index)
    source = WindowSource(reader, plan.stats, cfg) if plan.stats is not None else None
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
                work = [(t, *score_tile(engine, source, t, plan.shape, cfg)) for t in group]
                cands = {t.key: len(s) for t, s, _ in work}
                found = segment_tiles(engine, source, work, plan.shape, cfg)
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
    table = asm.finish()
    progress.close()
    summary = {
        "shape": list(plan.shape),
        "tiles": len(tiles),
        "tile_size": plan.tile_size,
        "objects": int(len(table["id"])),
        "candidates": stats["candidates"],
        "regions": stats["regions"],
        "tiles_reloaded": stats["tiles_reloaded"],
        "missing_chunks": int(plan.source.get("missing_chunks", 0)),
        "largest_component": asm.largest_component,
        "stats": list(plan.stats) if plan.stats is not None else None,
        "scale": plan.scale,
        "ids": opts.ids,
    }
    ids = table["id"] if opts.ids == "sequential" else table["seed_id"]
    if out is not None:
        attrs = {"version": VERSION, "manifest": ".spiralray/manifest.json"}
        out.finalize(scratch, table["seed_id"], ids, plan.tile_size, attrs, table)
        return summary
    summary["labels"] = _relabel(full, table["seed_id"], ids, opts.semantic)
    return summary


def segment_array(image: np.ndarray, engine, opts: Options | None = None) -> dict:
    """The tiled path on an image held in memory (``H x W``, or with ``opts.channel``):
    its summary, with the label image under ``"labels"``."""
    from ..io.readers import ImageReader, choose_plane

    opts = opts or Options()
    a = np.asarray(image)
    reader = ImageReader(
        "memory", a, choose_plane(a.shape, None, opts.channel, opts.plane), a.shape[-2:], True, "memory"
    )
    reader.chunks = reader.shape
    plan = make_plan(reader, engine.cfg, opts.tile_size)
    return run_plan(reader, plan, engine, opts, None, set())


def _relabel(full: np.ndarray, seeds: np.ndarray, ids: np.ndarray, semantic: bool) -> np.ndarray:
    if semantic:
        return (full > 0).astype(np.uint8)
    dtype = np.uint32 if (len(ids) == 0 or int(np.max(ids)) < 2**32) else np.uint64
    out = np.zeros(full.shape, dtype)
    fg = full > 0
    out[fg] = np.asarray(ids, dtype)[np.searchsorted(seeds, full[fg])]
    return out
