"""One file of ``spiralray ingest`` (a Ray task; callable in-process too): a TIFF / PNG file ->
one OME-Zarr image group (NGFF 0.5, zarr v3), levels s0, s1, ... (2 x 2 local mean in y, x).

Resume and ownership: ``attrs["spiralray_ingest"]`` of an image group says ``complete: false``
before any pixel, ``complete: true`` last. A complete group of the same source (its path, size
and modification time or ETag) is skipped, an incomplete one replaced. A complete group of a
changed source (or ``--overwrite``) is replaced only once its new conversion is complete: that is
written beside it first, under ``.spiralray-staging/`` (a folder, not a zarr group, so archive
walks do not see it), so a source that cannot be read any more leaves the old image as it was.
Only groups with the mark are ever deleted; the source is only read. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from ..errors import SpiralrayError
from ..io.planes import FIRST_PLANE, grey_of_colour
from ..io.readers import is_url, local, one_line, open_image, redact
from ..io.storage import VERSION_KEYS, copy_keys, delete, delete_keys
from ..io.windows import as_dask

MARK = "spiralray_ingest"
VERSION = 1
STAGING = ".spiralray-staging"


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


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(local(url))


def _identity(url: str) -> dict:
    """What tells a source file from a changed one: its size, and its ETag (object stores) or
    modification time (a file of the same size, re-acquired or corrected, is another file)."""
    fs, path = _fs(url)
    fs.invalidate_cache(path)
    info = fs.info(path)
    version = next((info[k] for k in VERSION_KEYS if info.get(k) is not None), None)
    return {"bytes": int(info["size"]), "modified": str(version) if version is not None else None}


def _state(out: str, src: str, ident: dict, staged: bool = False) -> str:
    """What is at ``out``: "none", "partial" (ours, incomplete), "same" (ours, complete, of this
    source unchanged) or "stale" (ours, complete, of another or a changed source). Refuses a
    group ingest did not write; anything in ``STAGING`` (``staged``) is ingest's own."""
    import zarr

    fs, path = _fs(out)
    if not fs.exists(path):
        return "none"
    try:
        mark = dict(zarr.open_group(local(out), mode="r").attrs).get(MARK)
    except Exception:
        mark = None
    if not isinstance(mark, dict) or "complete" not in mark:
        if staged:  # a run stopped before the staged group's metadata was written
            return "partial"
        raise SpiralrayError(f"{redact(out)} exists and was not written by spiralray ingest: left alone")
    if not mark["complete"]:
        return "partial"
    # a mark written before modification times were recorded is judged by its size alone
    same = mark.get("source") == _where(src) and mark.get("bytes") == ident["bytes"]
    return "same" if same and mark.get("modified", ident["modified"]) == ident["modified"] else "stale"


def _staging(out: str) -> str:
    """Where a replacement of ``out`` is written first: beside it, in a plain folder."""
    if not is_url(out):
        parent, name = os.path.split(os.path.abspath(local(out).rstrip("/")))
        return os.path.join(parent, STAGING, name)
    parent, _, name = out.rstrip("/").rpartition("/")
    return f"{parent}/{STAGING}/{name}"


def _remove(url: str) -> None:
    delete(*_fs(url))  # nothing there: nothing done


def _replace(staged: str, out: str) -> None:
    """The complete conversion at ``staged`` takes the place of the old group at ``out``. A
    run stopped part-way leaves the staged conversion whole, and the next one moves it in."""
    import zarr

    fs, path = _fs(out)
    src = _fs(staged)[1]
    if not is_url(out):  # renames: the old image aside, the new one in, then the old one gone
        aside = src + ".old"
        _remove(aside)
        if os.path.exists(path):
            os.replace(path, aside)
        try:
            os.replace(src, path)
        except BaseException:
            if os.path.exists(aside) and not os.path.exists(path):
                os.replace(aside, path)
            raise
        _remove(aside)
        with contextlib.suppress(OSError):  # the staging folder, when empty
            os.rmdir(os.path.dirname(src))
        return
    # Object stores copy object by object: the old image is first marked incomplete, so a run
    # stopped from here on moves the staged one in again, and the new group's own metadata, its
    # mark, comes last.
    if fs.exists(f"{path}/zarr.json"):
        old = zarr.open_group(local(out), mode="r+")
        old.attrs[MARK] = {**old.attrs[MARK], "complete": False}
    fs.invalidate_cache()  # zarr wrote through another client
    head = f"{path}/zarr.json"
    delete_keys(fs, [f for f in fs.find(path) if f != head])
    files = fs.find(src)  # listed: a recursive copy asks for the prefix as a key too
    rest = [f for f in files if f != f"{src}/zarr.json"]
    copy_keys(fs, rest, [path + f[len(src) :] for f in rest])
    copy_keys(fs, [f"{src}/zarr.json"], [head])  # then the mark: complete
    delete_keys(fs, files)


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
    import zarr

    t0 = time.perf_counter()
    info = {"input": redact(url), "output": redact(out) if is_url(out) else out}
    try:
        ident = _identity(url)
        state = _state(out, url, ident)
        if state == "same" and not opts.overwrite:
            return {**info, "status": "skipped", "source_bytes": 0}
        staged = _staging(out)
        if _state(staged, url, ident, staged=True) == "same":  # a run stopped while moving it in: finish that
            mark = dict(zarr.open_group(local(staged), mode="r").attrs)[MARK]
            meta = {k: v for k, v in mark.items() if k not in ("complete", "source", "version", *ident)}
            _replace(staged, out)
        else:
            target = staged if state in ("same", "stale") else out  # a complete image stays till then
            for stale in {target, staged, f"{staged}.old"}:
                _remove(stale)  # ours: incomplete, or left by a stopped run
            attrs = {MARK: {"complete": False, "source": _where(url), **ident, "version": VERSION}}
            try:
                group = zarr.create_group(local(target), attributes=attrs, zarr_format=3)
                meta = _write(url, group, opts)
                group.attrs[MARK] = {**attrs[MARK], "complete": True, **meta}  # last: complete only now
            except BaseException:
                with contextlib.suppress(Exception):  # the cause, not a failed clean-up, is the news
                    _remove(target)  # ours, half-written: a re-run would redo it anyway
                raise
            if target != out:
                _replace(target, out)  # stopped part-way: the staged image stays, whole
        seconds = round(time.perf_counter() - t0, 3)
        return {**info, "status": "converted", "source_bytes": ident["bytes"], **meta, "seconds": seconds}
    except SpiralrayError as exc:
        return {**info, "status": "failed", "error": str(exc)}
    except Exception as exc:
        return {**info, "status": "failed", "error": f"cannot convert {redact(url)}: {one_line(exc)}"}
