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

Resume and ownership (``ingest_file``): a complete image of an unchanged source is skipped, an
incomplete one redone, one of a changed source replaced only once its new conversion is
complete. Only what ingest marked as its own is ever deleted; SRC is only read. A bad file is
reported (``failed``), its partial output removed, the others finish: exit 0 when none failed,
3 when some did (as ``segment`` on an archive), 2 when all did. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from ..errors import EXIT_FAILED_IMAGES, EXIT_USAGE, SpiralrayError
from ..io import readers
from ..io.archive import Entry, is_archive, list_images, output_for
from ..io.readers import is_url, local, one_line, redact
from ..io.storage import check_parent, delete
from .ingest_file import MARK, VERSION, IngestOptions, _fs, _where, convert_file, pyramid_levels

__all__ = ["IngestOptions", "add_parser", "cmd_ingest", "convert_file", "ingest", "pyramid_levels"]


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
            delete(fs, path)
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
