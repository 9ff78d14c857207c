"""``spiralray ingest SRC DST``: a folder (a local path or an fsspec URL prefix) of TIFF / PNG
files -> one chunked OME-Zarr archive (NGFF 0.5, zarr v3), one Ray task per file.

    SRC/a/b.tif  ->  DST/a/b.zarr   image group: levels s0, s1, ... (2 x 2 local mean in y, x)
    DST/, DST/a/                    plain zarr groups, so zarr and ``io.archive`` walk the tree

An image keeps its file's axes in NGFF order (t, c, z, y, x) as ``open_image`` names them
(tifffile's S -> c, I -> z, a lone unnamed Q -> c; a PNG's colour -> c, unless it is grey saved
as colour: y, x), so ``spiralray segment
--channel/--plane`` reads it. Chunks: 1 x ... x chunk x chunk; levels halve y, x to one chunk.

Reading: a tiled or striped TIFF is read by window through ``open_image(...).read`` (row bands of
whole strips, or squares of whole tiles), so a file larger than memory streams through; a PNG or
a TIFF stored as one strip can only be read whole (listed in the summary's ``read_whole``).

Resume and ownership: ``attrs["spiralray_ingest"]`` of an image group says ``complete: false``
before any pixel, ``complete: true`` last: a complete group of the same source (same size) is
skipped, an incomplete one replaced. Only groups with that mark are ever deleted; SRC is only read.
A bad file is reported (``failed``), its partial output removed, the others finish: exit 0 when
none failed, 3 when some did (as ``segment`` on an archive), 2 when all did. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

from ..errors import EXIT_FAILED_IMAGES, EXIT_USAGE, SpiralrayError
from ..io import readers
from ..io.archive import Entry, is_archive, list_images, output_for
from ..io.planes import FIRST_PLANE, grey_of_colour
from ..io.readers import is_url, local, one_line, open_image, redact
from ..io.storage import check_parent
from ..io.windows import as_dask

MARK = "spiralray_ingest"
VERSION = 1


@dataclass
class IngestOptions:
    chunk: int = 1024  # level-0 chunk size in y and x
    levels: int | None = None  # pyramid levels (None: halve until one chunk holds the image)
    task_cpus: float = 1.0  # Ray CPUs per file task; dask threads inside it
    task_memory: int | None = None  # Ray memory (bytes) per file task, for scheduling only
    overwrite: bool = False  # redo complete images (only ever those ingest wrote)
    runtime_env: dict | None = None  # for the file tasks (e.g. storage credentials)


def _where(p: str) -> str:
    return redact(p).rstrip("/") if is_url(p) else os.path.realpath(local(p))


def check_places(src: str, dst: str) -> None:
    """DST never is, or lies inside, SRC (ingest never writes into its input), nor SRC in DST."""
    readers.check_protocol(src)
    readers.check_protocol(dst)
    if readers.is_zarr(src):
        raise SpiralrayError(f"SRC {src} is a zarr store already: ingest converts TIFF / PNG files")
    check_parent(dst)  # a mistyped DST is refused, as segment's output is, not created
    if is_url(src) != is_url(dst):
        return
    s, d = _where(src), _where(dst)
    if d == s or d.startswith(s + "/"):
        raise SpiralrayError(f"DST {dst} is inside SRC {src}: ingest never writes into its input")
    if s.startswith(d + "/"):
        raise SpiralrayError(f"SRC {src} is inside DST {dst}: choose a DST outside the input")


def _prepare_root(src: str, dst: str, parents: set[str]) -> str:
    """DST as an archive: new, an empty folder, or one that ingest made from this SRC. What was
    there: "nothing", "an empty folder" or "" (an archive of this SRC)."""
    import zarr

    mark = {"archive": True, "source": _where(src), "version": VERSION}
    there, empty = readers.exists(dst), False
    if there:
        try:
            found = dict(zarr.open_group(local(dst), mode="r").attrs).get(MARK)
        except Exception:
            found = None
        empty = not is_url(dst) and os.path.isdir(local(dst)) and not os.listdir(local(dst))
        if found is None and not empty:
            raise SpiralrayError(f"DST {dst} exists and is not an archive written by spiralray ingest")
        if found is not None and found.get("source") != mark["source"]:
            raise SpiralrayError(f"DST {dst} is the ingest archive of {found.get('source')}, not of {src}")
    try:
        root = zarr.open_group(local(dst), mode="a")
        if MARK not in root.attrs:
            root.attrs[MARK] = mark
        for p in sorted(parents):  # in the driver: tasks never race to create a shared parent
            root.require_group(p)
    except Exception as exc:
        raise SpiralrayError(f"cannot create the archive {redact(dst)}: {one_line(exc)}") from exc
    return "nothing" if not there else "an empty folder" if empty else ""


# --- one file (a Ray task; callable in-process too) ----------------------------------------------


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(local(url))


def _claim(out: str, src: str, size: int, overwrite: bool):
    """The new, empty image group at ``out`` marked incomplete; None when a complete one of this
    source is there (skip). Refuses a group ingest did not write."""
    import zarr

    fs, path = _fs(out)
    if fs.exists(path):
        try:
            mark = dict(zarr.open_group(local(out), mode="r").attrs).get(MARK)
        except Exception:
            mark = None
        if not isinstance(mark, dict) or "complete" not in mark:
            raise SpiralrayError(f"{redact(out)} exists and was not written by spiralray ingest: left alone")
        same = mark.get("source") == _where(src) and mark.get("bytes") == size
        if mark["complete"] and same and not overwrite:
            return None
        fs.rm(path, recursive=True)  # ours: incomplete, from a changed source, or --overwrite
    attrs = {MARK: {"complete": False, "source": _where(src), "bytes": size, "version": VERSION}}
    return zarr.create_group(local(out), attributes=attrs, zarr_format=3)


def pyramid_levels(h: int, w: int, chunk: int) -> int:
    """Levels until the image fits in one chunk (halving y and x, never below 1 px)."""
    n = 1
    while max(h, w) > chunk and min(h, w) >= 2:
        h, w, n = h // 2, w // 2, n + 1
    return n


def _units(pixel: dict | None) -> dict:
    """``write_image``'s ``axes_units`` for the file's pixel size (``io.spacing``); the sizes
    themselves are written by ``_exact_transforms``."""
    units = {a: u for a, u in zip("yx", (pixel or {}).get("unit") or [], strict=False) if u}
    return {"axes_units": units} if units else {}


def _exact_transforms(group, axes: str, pixel: dict | None) -> None:
    """Each level's y / x transforms, exactly, in the file's physical units (``pixel``, else
    px): ome-zarr-py derives a level's scale from the shapes' ratio (150 rows -> 37 gives 4.05
    px, not 4), but level k's pixel i is the mean of level 0's 2**k block from 2**k * i, so its
    scale is 2**k px and its centre (2**k - 1) / 2 px further in. Other axes keep what
    ome-zarr-py wrote. (A stage offset is not carried.)"""
    sy, sx = pixel["scale"] if pixel else (1.0, 1.0)
    attrs = dict(group.attrs)
    ome = dict(attrs.get("ome", attrs))  # NGFF 0.5 nests under "ome"; 0.4 does not
    ms = [dict(m) for m in ome["multiscales"]]
    for k, ds in enumerate(ms[0]["datasets"]):
        old = {t["type"]: t[t["type"]] for t in ds["coordinateTransformations"]}
        size = dict(zip(axes, old["scale"], strict=True))
        shift = dict(zip(axes, old.get("translation", [0.0] * len(axes)), strict=True))
        for a, s in (("y", sy), ("x", sx)):
            size[a], shift[a] = s * 2**k, s * (2**k - 1) / 2
        ds["coordinateTransformations"] = [
            {"type": "scale", "scale": [size[a] for a in axes]},
            {"type": "translation", "translation": [shift[a] for a in axes]},
        ]
    ome["multiscales"] = ms
    if "ome" in attrs:
        group.attrs["ome"] = ome
    else:
        group.attrs["multiscales"] = ms


def _open(url: str):
    """The file's reader, all its channels and planes kept: a PNG that is grey saved as colour
    is read as its one grey plane (as ``segment`` reads it without ``--channel``)."""
    reader = open_image(url, channel=0, plane=FIRST_PLANE)
    if reader.kind == "raster" and "c" in reader.plane.axes and grey_of_colour(reader.array) is not None:
        return open_image(url, plane=FIRST_PLANE)  # without a channel: read as its grey plane
    return reader


def _write(url: str, group, opts: IngestOptions) -> dict:
    import dask
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    reader = _open(url)
    darr, axes, whole = as_dask(reader, opts.chunk)
    levels = opts.levels or pyramid_levels(*reader.shape, opts.chunk)
    chunks = [min(opts.chunk, n) if a in "yx" else 1 for a, n in zip(axes, darr.shape, strict=True)]
    threads = max(1, int(opts.task_cpus))
    with dask.config.set(scheduler="threads" if threads > 1 else "synchronous", num_workers=threads):
        # a 2 x 2 mean per level: chunk-aligned, so no seams at chunk borders (resize has them)
        write_image(
            darr,
            group,
            scale_factors=[2**k for k in range(1, levels)],
            method=Methods.LOCAL_MEAN,
            axes=list(axes),
            storage_options={"chunks": chunks},
            **_units(reader.spacing),
            name=url.rstrip("/").rsplit("/", 1)[-1],
        )
    _exact_transforms(group, axes, reader.spacing)
    meta = {"shape": list(darr.shape), "axes": axes, "dtype": str(darr.dtype), "levels": levels}
    meta["spacing"] = reader.spacing  # the pixel size carried into its metadata (None: px)
    return {**meta, "chunks": chunks, "whole": bool(whole), "pixel_bytes": int(darr.nbytes)}


def convert_file(url: str, out: str, opts: IngestOptions) -> dict:
    """One file -> one OME-Zarr image group; never raises for a bad file (``status: failed``)."""
    t0 = time.perf_counter()
    info = {"input": redact(url), "output": redact(out) if is_url(out) else out}
    try:
        fs, path = _fs(url)
        size = int(fs.size(path))
        group = _claim(out, url, size, opts.overwrite)
        if group is None:
            return {**info, "status": "skipped", "source_bytes": 0}
        try:
            meta = _write(url, group, opts)
            mark = {"complete": True, "source": _where(url), "bytes": size, "version": VERSION, **meta}
            group.attrs[MARK] = mark  # last: the group is complete only now
        except BaseException:
            with contextlib.suppress(Exception):  # the cause, not a failed clean-up, is the news
                fs_out, p = _fs(out)
                fs_out.rm(p, recursive=True)  # ours, half-written: a re-run would redo it anyway
            raise
        seconds = round(time.perf_counter() - t0, 3)
        return {**info, "status": "converted", "source_bytes": size, **meta, "seconds": seconds}
    except SpiralrayError as exc:
        return {**info, "status": "failed", "error": str(exc)}
    except Exception as exc:
        return {**info, "status": "failed", "error": f"cannot convert {redact(url)}: {one_line(exc)}"}


# --- the driver ---------------------------------------------------------------------------------


class _Progress:
    """Files done / total and the decoded MB/s on one updating stderr line (a terminal only)."""

    def __init__(self, total: int, enabled: bool | None = None):
        self.total, self.counts, self.bytes, self.t0 = total, {}, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, r: dict) -> None:
        c = self.counts
        c[r["status"]] = c.get(r["status"], 0) + 1
        self.bytes += r.get("pixel_bytes", 0) if r["status"] == "converted" else 0
        rate = self.bytes / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        done = ", ".join(f"{c.get(k, 0)} {k}" for k in ("converted", "skipped", "failed"))
        line = f"\rfiles {sum(c.values())}/{self.total} | {done} | {rate:.1f} MB/s"
        if self.enabled:
            print(line, end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def ingest(
    src: str, dst: str, opts: IngestOptions | None = None, address: str | None = None, progress=None
) -> dict:
    """Convert every TIFF / PNG under ``src`` (or the one file ``src``) into ``dst``; the summary."""
    import ray

    from .local import usable_cpus
    from .ray_exec import init_ray

    opts = opts or IngestOptions()
    if opts.chunk < 16 or (opts.levels is not None and opts.levels < 1) or opts.task_cpus <= 0:
        raise SpiralrayError("--chunk-size must be >= 16, --levels >= 1 and --task-cpus > 0")
    t0 = time.perf_counter()
    archive = is_archive(str(src))  # before the "/" goes: "s3://b/raw.v2/" is a prefix
    src, dst = str(src).rstrip("/"), str(dst).rstrip("/")
    check_places(src, dst)
    if not readers.exists(src):
        raise SpiralrayError(f"input not found: {redact(src) if is_url(src) else src}")
    if not archive and not src.lower().endswith(readers.TIFF + readers.RASTER):
        raise SpiralrayError(f"SRC {src} is neither a folder nor a TIFF / PNG file")
    entries = list_images(src) if archive else [Entry("", src)]
    jobs, failed, seen = [], [], {}
    for e in entries:
        out = output_for(dst, e)
        if out in seen:  # a.tif and a.png: one a.zarr
            failed.append({"input": redact(e.url), "error": f"{e.path} and {seen[out]} both map to {out}"})
            continue
        seen[out] = e.path
        jobs.append((e, out))
    before = archive and _prepare_root(src, dst, {e.path.rsplit("/", 1)[0] for e, _ in jobs if "/" in e.path})
    init_ray(address, None if (address or os.environ.get("RAY_ADDRESS")) else usable_cpus())
    t1 = time.perf_counter()  # the rate leaves Ray's start-up out
    task = ray.remote(convert_file).options(
        num_cpus=opts.task_cpus,
        max_retries=2,  # a lost worker: the file's output is ours and incomplete, so it is redone
        **({"memory": opts.task_memory} if opts.task_memory else {}),
        **({"runtime_env": opts.runtime_env} if opts.runtime_env else {}),
    )
    # a bounded window of tasks: the driver's memory does not grow with the number of files
    window = max(4, 2 * int(ray.cluster_resources().get("CPU", 1) / opts.task_cpus))
    bar, results, pending, todo = _Progress(len(entries), progress), [], {}, iter(jobs)
    for _ in failed:
        bar.update({"status": "failed"})
    while True:
        while len(pending) < window and (job := next(todo, None)) is not None:
            pending[task.remote(job[0].url, job[1], opts)] = job
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            e, out = pending.pop(ref)
            try:
                r = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died (e.g. out of memory)
                r = {"input": redact(e.url), "output": out, "status": "failed"}
                r["error"] = f"{redact(e.url)}: {one_line(exc)}"
            results.append({"path": e.path, **r})
            bar.update(r)
    bar.close()
    if before and not any(r["status"] in ("converted", "skipped") for r in results):
        fs, path = _fs(dst)  # every file failed: no empty archive of ours is left behind
        with contextlib.suppress(Exception):  # the failures, not a failed clean-up, are the news
            fs.rm(path, recursive=True)
            if before == "an empty folder":  # the user's folder stays, as it was
                os.makedirs(local(dst))
    return _summary(src, dst, entries, results, failed, time.perf_counter() - t0, time.perf_counter() - t1)


def _summary(src, dst, entries, results, failed, seconds, busy) -> dict:
    results.sort(key=lambda r: r["path"])
    done = [r for r in results if r["status"] == "converted"]
    failed = failed + [{"input": r["input"], "error": r["error"]} for r in results if r["status"] == "failed"]
    pixel_bytes = sum(r["pixel_bytes"] for r in done)
    return {
        "input": redact(src) if is_url(src) else src,
        "output": redact(dst) if is_url(dst) else dst,
        "files": len(entries),
        "converted": len(done),
        "skipped": sum(r["status"] == "skipped" for r in results),
        "failed": failed,
        "read_whole": [r["input"] for r in done if r["whole"]],
        "source_bytes": sum(r["source_bytes"] for r in done),
        "pixel_bytes": pixel_bytes,
        "seconds": round(seconds, 3),
        "mb_per_s": round(pixel_bytes / 1e6 / max(busy, 1e-9), 2),  # decoded MB / s, after Ray is up
        "per_image": [{k: v for k, v in r.items() if k not in ("input", "error")} for r in results],
    }


# --- the command line ---------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="convert a folder of TIFF / PNG files into an OME-Zarr archive")
    p.add_argument("src", help="a folder or URL prefix of .tif / .png files (or one file)")
    p.add_argument("dst", help="the OME-Zarr archive to write (a path, or a URL ending in .zarr)")
    p.add_argument("--chunk-size", type=int, default=1024, help="chunk size in y and x (>= 16)")
    p.add_argument("--levels", type=int, default=None, help="pyramid levels (default: to one chunk)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per file task (dask threads)")
    p.add_argument("--task-memory", type=float, default=None, help="GiB per file task (Ray scheduling)")
    p.add_argument("--overwrite", action="store_true", help="redo complete images (only ingest's own)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(args) -> int:
    import json

    opts = IngestOptions(
        chunk=args.chunk_size,
        levels=args.levels,
        task_cpus=args.task_cpus,
        task_memory=int(args.task_memory * 2**30) if args.task_memory else None,
        overwrite=args.overwrite,
    )
    s = ingest(args.src, args.dst, opts, args.address)
    if args.json:
        print(json.dumps(s))
    else:
        for f in s["failed"]:
            print(f"spiralray: failed: {f['error']}", file=sys.stderr)
        print(
            f"{s['files']} files -> {s['output']} ({s['converted']} converted, {s['skipped']} skipped, "
            f"{len(s['failed'])} failed; {s['seconds']:.1f} s, {s['pixel_bytes'] / 1e6:.1f} MB at "
            f"{s['mb_per_s']:.1f} MB/s"
            + (f", {len(s['read_whole'])} read whole" if s["read_whole"] else "")
            + ")"
        )
    if s["failed"] and not (s["converted"] or s["skipped"]):
        print(f"spiralray: error: all {s['files']} files failed", file=sys.stderr)
        return EXIT_USAGE
    if s["failed"]:  # a pipeline must see it: the others are converted, re-running retries these
        print(f"spiralray: {len(s['failed'])} file(s) failed; the others are converted", file=sys.stderr)
        return EXIT_FAILED_IMAGES
    return 0
