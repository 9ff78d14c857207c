"""Archives: many images under one path or URL.

- a zarr group: every OME-Zarr image (a group with multiscales) and every plain numeric array
  of two or more dimensions not inside an image, at any depth; this covers the
  bioformats2raw layout (``0/``, ``1/``, ... image groups beside ``OME/``) and plates
  (``A/1/0``: row / column / field); an image's own ``labels`` are skipped;
- a folder or object-store prefix of TIFF / PNG files and zarr stores (``NAME.zarr``, read as
  above: an image, or a group of them).

Labels an earlier run wrote (spiralray outputs) are never images: they are skipped, and an
archive that holds nothing else is refused with a line that says so. An output is known by its
manifest file (``output.MANIFEST``) where files are listed (a folder; a zarr root, whose group
may not exist yet when a run was killed right after writing its manifest), and by the
``spiralray`` attribute its group gets right after, where a zarr tree is walked: that costs no
request per group, which matters on object storage.

Images are listed in sorted path order: an image's position in that list is its index in the
archive, which its objects' seed ids carry (``core.objects``), so ids are unique across the
archive with no counter. The output keeps that order (``INDEX``): images added to the archive
after a run began are numbered after those it knew, so a re-run never gives a new image an index
an earlier one's labels already carry. No torch here (the output's root: ``archive_root``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from ..errors import SpiralrayError
from .output import MANIFEST, Output
from .readers import RASTER, TIFF, exists, is_url, is_zarr, local, one_line, redact

LIMIT = 1 << 24  # images per archive (the seed ids' 24 index bits)
INDEX = ".spiralray/archive.json"  # at an archive output's root: {"images": [path, ...]} by index


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the archive root, "/"-separated ("" for a single image)
    url: str  # the image's full path or URL


def is_archive(url: str, storage_options=None) -> bool:
    """A zarr group that is not itself an image, or a folder / prefix that is not a zarr store."""
    if is_zarr(url):
        import zarr

        # An unreachable store is said here, once: zarr's open would spend the client's
        # retries, swallowed below, before the input check spent them again (20 s, not 10)
        if is_url(url) and not exists(url, storage_options):
            return False  # not there: the input check names it
        try:
            node = zarr.open(local(url), mode="r", storage_options=storage_options if is_url(url) else None)
        except Exception:
            return False
        return isinstance(node, zarr.Group) and not _is_image_group(node)
    if is_url(url):
        return str(url).endswith("/") or "." not in str(url).rstrip("/").rsplit("/", 1)[-1]
    return os.path.isdir(local(url))


def _is_image_group(group) -> bool:
    """An OME-Zarr image: a group with multiscales (NGFF 0.4, or 0.5 under ``ome``)."""
    attrs = dict(group.attrs)
    return bool(attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales"))


def _is_image_array(array) -> bool:
    return len(array.shape) >= 2 and array.dtype.kind in "uifb"


def _walk(group, outputs: list) -> list[str]:
    """``_zarr_images`` of a store's group, quiet about files beside its nodes (OME/ XML, a table)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        return _zarr_images(group, outputs=outputs)


def _zarr_images(group, prefix: str = "", outputs: list | None = None) -> list[str]:
    """Image paths under ``group``; spiralray outputs found are skipped, their paths added to
    ``outputs``."""
    import zarr

    found = []
    for name, node in sorted(group.members(), key=lambda m: m[0]):
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Group):
            if "spiralray" in node.attrs:  # labels an earlier run wrote: not an image to segment
                if outputs is not None:
                    outputs.append(path)
            elif _is_image_group(node):
                found.append(path)  # an image: its levels and labels are not images of their own
            elif name != "labels":
                found += _zarr_images(node, path + "/", outputs)
        elif _is_image_array(node):
            found.append(path)
    return found


def list_images(url: str, storage_options=None) -> list[Entry]:
    """The archive's images in sorted path order (see the module docstring)."""
    url = str(url).rstrip("/")
    outputs: list[str] = []
    if not exists(url, storage_options):
        raise SpiralrayError(f"input not found: {redact(url) if is_url(url) else url}")
    if is_zarr(url):
        import zarr

        if exists(f"{url}/{MANIFEST}", storage_options):
            raise SpiralrayError(f"{redact(url)} is a spiralray output (labels), not images to segment")
        try:
            root = zarr.open_group(
                local(url), mode="r", storage_options=storage_options if is_url(url) else None
            )
            paths = _walk(root, outputs)
        except Exception as exc:
            raise SpiralrayError(f"cannot list {redact(url)} as a zarr archive: {one_line(exc)}") from exc
        entries = [Entry(p, f"{url}/{p}") for p in sorted(paths)]
    else:
        files = _files(url, storage_options)
        outputs = [f[: -len(MANIFEST)].rstrip("/") or "." for f in files if f"/{f}".endswith(f"/{MANIFEST}")]
        stores = sorted({_store_of(f) for f in files} - {None})
        found = [p for p in files if p.lower().endswith(TIFF + RASTER) and _store_of(p) is None]
        for s in stores:
            if any(o == s or o.startswith(s + "/") for o in outputs):
                continue  # an output in the folder (or labels inside it): skipped
            found += [f"{s}/{p}" if p else s for p in _store_images(f"{url}/{s}", storage_options, outputs)]
        entries = [Entry(p, f"{url}/{p}") for p in sorted(found)]
    if not entries and outputs:
        raise SpiralrayError(f"{redact(url)} holds spiralray outputs (labels at {outputs[0]}), not images")
    if not entries:
        raise SpiralrayError(
            f"{redact(url)} holds no images (zarr arrays, OME-Zarr images, TIFF or PNG files)"
        )
    if len(entries) > LIMIT:
        raise SpiralrayError(f"{redact(url)} holds {len(entries)} images: more than {LIMIT} per archive")
    return entries


def _store_of(rel: str) -> str | None:
    """The zarr store a listed file belongs to (its path up to a ``*.zarr`` folder), if any."""
    parts = rel.split("/")
    for k, part in enumerate(parts[:-1]):
        if part.lower().endswith(".zarr"):
            return "/".join(parts[: k + 1])
    return None


def _store_images(url: str, storage_options, outputs: list) -> list[str]:
    """Image paths inside the zarr store at ``url`` ("" for a store that is one image)."""
    import zarr

    try:
        node = zarr.open(local(url), mode="r", storage_options=storage_options if is_url(url) else None)
        if not isinstance(node, zarr.Group):
            return [""] if _is_image_array(node) else []
        return [""] if _is_image_group(node) else _walk(node, outputs)
    except Exception:  # listed as one image: its run fails alone, with its own error
        return [""]


def _files(url: str, storage_options=None) -> list[str]:
    """Relative paths of the files under a folder or prefix (recursively)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(local(url), **(storage_options or {}))
        names = fs.find(root)
    except Exception as exc:
        raise SpiralrayError(f"cannot list {redact(url)}: {one_line(exc)}") from exc
    root = root.rstrip("/")
    return [n[len(root) + 1 :] for n in names]


def check_archive_output(out_root: str, source: str, storage_options=None) -> dict:
    """The output's archive record (``INDEX``, {} where none), refused when it is another
    archive's (``source``: this run's archive root): its table would lose that archive's rows,
    and its images' outputs would stay beside the new ones."""
    out = Output(out_root, storage_options)
    record = out.get_json(INDEX, "archive index") or {}
    where = redact(source).rstrip("/")
    if record.get("input") not in (None, where) and not _holds_images(out):
        return {}  # a run whose every image failed left only its record: nothing of it to keep
    if record.get("input") not in (None, where):
        raise SpiralrayError(
            f"output {redact(out_root)} holds the archive of {record['input']}, not of {where}: "
            "choose another output"
        )
    return record


def _holds_images(out: Output) -> bool:
    """Whether an archive output holds anything besides spiralray's own ``.spiralray/``."""
    try:
        names = out.fs.ls(out.root, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(n.rstrip("/").rsplit("/", 1)[-1] != ".spiralray" for n in names)


def indexed(
    out_root: str, entries: list[Entry], storage_options=None, source: str | None = None
) -> list[tuple[int, Entry]]:
    """Each entry with its index in the archive: its position in the order the output at
    ``out_root`` recorded (``INDEX``), new paths appended in sorted order; the record is written
    when it grows. Without a record (a new output) the index is the sorted position. ``source``:
    the archive's root, which the record keeps; an output of another archive is refused (its
    table would lose that archive's rows, its images' outputs stay beside the new ones)."""
    out = Output(out_root, storage_options)
    if source is not None:
        record = check_archive_output(out_root, source, storage_options)
    else:
        record = out.get_json(INDEX, "archive index") or {}
    known = record.get("images", [])
    where = redact(source).rstrip("/") if source is not None else record.get("input")
    order = {p: i for i, p in enumerate(known)}
    for e in entries:
        order.setdefault(e.path, len(order))
    if len(order) > LIMIT:
        raise SpiralrayError(f"{redact(out_root)} has indexed {len(order)} images: more than {LIMIT}")
    if len(order) > len(known) or (where is not None and "input" not in record):
        out.put_json(INDEX, {"images": sorted(order, key=order.get), **({"input": where} if where else {})})
    return [(order[e.path], e) for e in entries]


def output_for(out_root: str, entry: Entry) -> str:
    """Where an archive image's labels go: the input's relative path mirrored under the output
    (file suffixes become ``.zarr``)."""
    if not entry.path:
        return out_root
    rel = entry.path
    for suffix in TIFF + RASTER:
        if rel.lower().endswith(suffix):
            rel = rel[: -len(suffix)] + ".zarr"
            break
    return f"{str(out_root).rstrip('/')}/{rel}"
