"""One image's run, whichever executor does the work: the checks made before any work, the
plan (computed, or taken from the output's manifest to resume), the manifest written first
(the writability check) and last (``complete``). The user's data is never written over: an
output that is the input, or anything without a spiralray manifest, is refused.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from ..core.config import CandidateSpec, SpiralSpec
from ..errors import SpiralrayError
from ..io.lease import check_free
from ..io.output import Output
from ..io.readers import TIFF, exists, is_url, local, open_image, redact
from ..io.storage import SOFTWARE, check_parent, written_by_spiralray
from .plan import VERSION, ImagePlan, check_pad_value, check_tile_size, pad_json, weights_hash

TIFF_MAX_PIXELS = 2**28  # a TIFF output is assembled in memory: beyond this, write .zarr


class NotAnImage(SpiralrayError):
    """An archive's entry that is spiralray's own output (a label TIFF): skipped, not failed."""


class OtherRun(SpiralrayError):
    """The output holds a run whose parameters (or input) differ: ``differs`` says which."""

    def __init__(self, message: str, differs: str):
        super().__init__(message)
        self.differs = differs


@dataclass
class Options:
    """What a user chooses for a run; ``params()`` is what a resumed run must match."""

    tile_size: int = 1024
    channel: int | str | None = None  # a number, or a name the image gives its channel
    plane: object = None
    ids: str = "sequential"
    exclude_border: bool = False
    overwrite: bool = False
    strict: bool = False
    semantic: bool = False  # TIFF output only: the foreground mask instead of ids
    group: int = 8  # tiles segmented in one batched spiral
    diameter: float | str | None = "auto"  # nuclei px across, or "auto" (estimated per image)
    pad_value: float | None = None  # a fill value that is not data (0 or nan padding)
    invert: bool = False  # nuclei darker than the background (brightfield): inverted first

    def __post_init__(self):
        self.pad_value = check_pad_value(self.pad_value)  # a float (or None), or a clear error

    def params(self, cfg) -> dict:
        return {
            "tile_size": self.tile_size,
            "ids": self.ids,
            "diameter": self.diameter,
            "pad_value": pad_json(self.pad_value),
            "invert": self.invert,
            "exclude_border": self.exclude_border,
            "candidates": asdict(cfg.candidates),
            "spiral": asdict(cfg.spiral),
        }


@dataclass
class ImageRun:
    """An image on its way through a run. ``plan`` is None until made; ``finished`` holds the
    summary of an output that was already complete (nothing to do)."""

    input: str
    output: str
    kind: str  # "zarr" or "tiff"
    reader: object
    out: Output | None
    manifest: dict
    index: int = 0
    plan: ImagePlan | None = None
    done: set = field(default_factory=set)
    finished: dict | None = None
    replace: bool = False  # an output of another run (or --overwrite): removed when the run starts
    t0: float = field(default_factory=time.perf_counter)


def _same_place(a: str, b: str) -> bool:
    """Whether two paths/URLs are the same location or one lies inside the other."""
    if is_url(a) != is_url(b):
        return False
    pa = redact(a).rstrip("/") if is_url(a) else os.path.realpath(local(a))
    pb = redact(b).rstrip("/") if is_url(b) else os.path.realpath(local(b))
    return pa == pb or pa.startswith(pb + "/") or pb.startswith(pa + "/")


def check_apart(input: str, output: str) -> None:
    """The output never is the input, nor lies inside it, nor holds it."""
    if _same_place(input, output):
        raise SpiralrayError(
            f"output {output} and input {input} overlap (one is, or holds, the other): choose another output"
        )


def output_kind(output: str) -> str:
    s = local(output).rstrip("/").lower()
    if s.endswith(TIFF):
        return "tiff"
    if s.endswith(".zarr") or is_url(output):
        return "zarr"
    suffix = os.path.splitext(s)[1]
    what = f"format '{suffix}'" if suffix else "format: the name has no extension"
    raise SpiralrayError(f"unsupported output {what} ({output}): name it .zarr (OME-Zarr), or .tif")


def check_tiff_output(path: str, overwrite: bool = False) -> None:
    """Fail before any work on a TIFF output that cannot be written, or that exists and is not
    spiralray's to replace: a file spiralray did not write never is; its own, with ``overwrite``.
    (A TIFF holds no manifest to resume from or compare with: the run is done again.)"""
    if is_url(path):
        raise SpiralrayError(f"a .tif output must be a local path, not {redact(path)}: write .zarr there")
    p = local(path)
    if os.path.isdir(p):
        raise SpiralrayError(f"output {p} is a directory")
    if os.path.exists(p):
        if not written_by_spiralray(p):
            raise SpiralrayError(
                f"output {p} exists and was not written by spiralray (no 'spiralray' Software tag; "
                "TIFF outputs before 2026-12-06 have none): remove it yourself or choose another path"
            )
        if not overwrite:
            raise SpiralrayError(f"output {p} exists: use --overwrite to replace it")
    check_parent(p)
    parent = os.path.dirname(os.path.abspath(p))
    if not os.access(parent, os.W_OK):
        raise SpiralrayError(f"output directory is not writable: {parent}")


def preflight(input: str, output: str, opts: Options, in_archive: bool = False) -> str:
    """The checks that need no model and no pixels, made before anything is loaded; returns
    the output kind ("zarr" or "tiff"). ``in_archive``: an archive's image, whose output is an
    OME-Zarr group (whatever its name) in folders the run makes inside the archive's output."""
    check_tile_size(opts.tile_size)
    kind = "zarr" if in_archive else output_kind(output)
    if opts.semantic and kind == "zarr":
        raise SpiralrayError(
            "--semantic is for a TIFF output: an OME-Zarr output holds labels/instances and labels/semantic"
        )
    check_apart(input, output)
    if kind == "tiff":
        _check_input(input)  # before "output exists": a missing input is the news
        check_tiff_output(output, opts.overwrite)
    elif not in_archive:
        check_parent(output)  # first: it says which store cannot be reached, and why
        _check_input(input)
    return kind


def _check_input(input: str) -> None:
    if not exists(input):
        raise SpiralrayError(f"input not found: {redact(input) if is_url(input) else input}")


def check_image_run(
    input: str,
    output: str,
    net,
    opts: Options,
    model: str | None = None,
    storage_options: dict | None = None,
    index: int = 0,
    in_archive: bool = False,
) -> ImageRun:
    """Everything checked and the output's state read; no pixels read, nothing written yet.
    ``in_archive``: an archive's image (``preflight``)."""
    kind = preflight(input, output, opts, in_archive)
    reader = open_image(input, opts.channel, opts.plane, storage_options)
    if in_archive and reader.software == SOFTWARE:
        raise NotAnImage(f"{redact(input)} is a label image spiralray wrote: skipped")
    if opts.strict and reader.missing_chunks:
        raise SpiralrayError(
            f"{redact(input)} has {reader.missing_chunks} missing chunks "
            "(read as the fill value); --strict refuses"
        )
    desc = reader.describe()
    if kind == "zarr":  # an output to resume or compare with later: the input's bytes recorded
        desc["stamp"] = reader.stamp(storage_options)
    manifest = {
        "version": VERSION,
        "model": {"source": model or "shipped", "weights_sha256": weights_hash(net)},
        "params": opts.params(net.config),
        "images": [{"input": desc["url"], "shape": list(reader.shape), "source": desc}],
    }
    run = ImageRun(input, output, kind, reader, None, manifest, index)
    if kind == "tiff":
        if reader.shape[0] * reader.shape[1] > TIFF_MAX_PIXELS:
            raise SpiralrayError(
                f"image is {reader.shape[0]} x {reader.shape[1]} px: too large for a TIFF output, write .zarr"
            )
        return run
    out = run.out = Output(output, storage_options)
    if in_archive:  # this run's lease is on the archive's root: a one-image run's on the image
        check_free(out)
    old = check_owned(out)
    if old is None:
        return run
    differs = mismatch(old, manifest)
    if differs and not opts.overwrite:
        raise OtherRun(
            f"output {redact(output)} holds another run ({differs} differ"
            + (": the sizes or modification times of its stored files" if differs == "input contents" else "")
            + "): use --overwrite to replace it",
            differs,
        )
    if differs or opts.overwrite:
        run.replace = True  # removed once the plan is made: an image refused then loses nothing
        return run
    run.plan = ImagePlan.from_dict(old["images"][0])
    if reader.spacing and "spacing" not in run.plan.source:  # a plan written before it was read
        run.plan.source = {**run.plan.source, "spacing": reader.spacing}
    run.done = out.done_tiles()
    if old.get("complete"):
        run.finished = {**old.get("summary", {}), "resumed": "already complete"}
    return run


def start_image_run(run: ImageRun, plan: ImagePlan | None = None) -> None:
    """Fix the plan (kept from the manifest, or the one given) and write the manifest: the
    output's writability check, before any tile is computed."""
    run.plan = run.plan or plan
    if run.plan is None:
        raise ValueError("start_image_run needs a plan (make_plan) when the output holds none")
    stamp = run.manifest["images"][0]["source"].get("stamp")
    run.manifest["images"] = [run.plan.to_dict()]
    if stamp is not None:
        run.manifest["images"][0]["source"] = {**run.manifest["images"][0]["source"], "stamp": stamp}
    run.manifest["complete"] = False
    if run.out is not None:
        if run.replace:
            run.out.remove()
            run.replace = False
        run.out.write_manifest(run.manifest)
        run.out.mark({"version": VERSION, "complete": False, "manifest": ".spiralray/manifest.json"})


def finish_image_run(run: ImageRun, summary: dict) -> dict:
    """The summary completed; for OME-Zarr, the manifest marked complete and scratch dropped."""
    summary.update(
        input=redact(run.input) if is_url(run.input) else run.input,
        output=run.output,
        seconds=round(time.perf_counter() - run.t0, 3),
    )
    if run.out is not None:
        run.manifest.update(complete=True, summary=summary)
        run.out.write_manifest(run.manifest)
        run.out.drop_scratch()
    return summary


def check_owned(out: Output) -> dict | None:
    """The output's manifest (None: no output there yet); an output that exists without one or
    a run's lease (a run starting: ``io.lease``) is the user's, refused."""
    from ..io.lease import LEASE

    old = out.manifest() if out.exists() else None
    if old is None and out.exists() and _nonempty(out) and out.get_json(LEASE, "lease") is None:
        raise SpiralrayError(
            f"output {redact(out.url)} exists and is not a spiralray output: choose another path"
        )
    return old


def output_lease(output: str, archive: bool, storage_options: dict | None = None):
    """The lease (``io.lease``) a run holds on its OME-Zarr output, or an archive's output root,
    while it runs: a second run on it is refused. A TIFF output is written whole at the end:
    none."""
    import contextlib

    from ..io.lease import leased

    if not archive and output_kind(output) != "zarr":
        return contextlib.nullcontext()
    out = Output(output, storage_options)
    if not archive:
        check_owned(out)  # a user's folder is refused before the lease is written into it
    return leased(out, above=True)  # an archive run writing a folder holding it


def _nonempty(out: Output) -> bool:
    try:
        return bool(out.fs.ls(out.root, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def identity(manifest: dict) -> dict:
    """The parts of a manifest that must match for a run to resume an existing output."""
    return {
        "version": manifest.get("version"),
        "inputs": [
            (p["input"], list(p["shape"]), p["source"].get("plane")) for p in manifest.get("images", [])
        ],
        "model": manifest.get("model", {}).get("weights_sha256"),
        "params": _with_defaults(manifest.get("params")),
    }


def _with_defaults(params: dict | None) -> dict | None:
    """Run parameters with the threshold sections' settings that an older manifest predates
    filled in at their defaults: an output written before a setting existed was made with the
    behaviour its default keeps (``candidates.faint_contrast`` 0: no faint rule), so it resumes."""
    if not params:
        return params
    out = {"pad_value": None, "invert": False, **params}  # added after version 1's first outputs
    for key, spec in (("candidates", CandidateSpec), ("spiral", SpiralSpec)):
        if isinstance(out.get(key), dict):
            out[key] = {**asdict(spec()), **out[key]}
    return out


def mismatch(old: dict, new: dict) -> str | None:
    """What differs between an existing output's manifest and this run's (None: the same)."""
    a, b = identity(old), identity(new)
    # the input's pixel size, where both record one (an output written before it was read has
    # none): a recalibrated image changes a diameter given as a length, and the labels' frame
    for p, q in zip(old.get("images", []), new.get("images", []), strict=False):
        s, t = p.get("source", {}).get("spacing"), q.get("source", {}).get("spacing")
        if s and t and s != t:
            return "pixel sizes"
    for key, what in (
        ("version", "format versions"),
        ("inputs", "inputs"),
        ("model", "models"),
        ("params", "parameters"),
    ):
        if a[key] != b[key]:
            if key == "params":
                diff = sorted(
                    k
                    for k in set(a[key] or {}) | set(b[key] or {})
                    if (a[key] or {}).get(k) != (b[key] or {}).get(k)
                )
                return f"parameters ({', '.join(diff)})"
            if key == "inputs" and len(a[key]) == len(b[key]) == 1:  # which part of the input
                (pa, sa, qa), (pb, sb, qb) = a[key][0], b[key][0]
                named = (("paths", pa, pb), ("shapes", sa, sb), ("planes or channels", qa, qb))
                return "input " + " and ".join(n for n, x, y in named if x != y)
            return what
    # the input's stored bytes (ImageReader.stamp), where both record them: the same
    # path rewritten with another image was resumed as the old one, or called complete
    for p, q in zip(old.get("images", []), new.get("images", []), strict=False):
        s, t = p.get("source", {}).get("stamp"), q.get("source", {}).get("stamp")
        if s and t and s != t:
            return "input contents"
    return None
