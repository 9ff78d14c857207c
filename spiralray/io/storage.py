"""Whole files: training data and label images read whole (TIFF stacks, PNG, zarr), label TIFFs
written atomically, model directories. Images read by window are ``readers``'s; OME-Zarr
outputs ``output``'s.

Readers return NumPy arrays and raise ``SpiralrayError`` with a one-line message naming the
problem (missing file, unreadable format) so callers never show a traceback for bad input.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import SpiralrayError
from .readers import RASTER, TIFF, exists, is_zarr, suffix
from .readers import is_url as _is_url
from .readers import local as _local
from .spacing import tiff_metadata


def read_image(path, storage_options: dict | None = None) -> np.ndarray:
    """Read a TIFF (page stack or single), PNG/JPEG, or a zarr array as a NumPy array."""
    s = str(path)
    if not exists(s):
        raise SpiralrayError(f"input not found: {s}")
    if is_zarr(s):
        return read_zarr(s, storage_options=storage_options)
    ext = suffix(s)
    try:
        if ext in TIFF:
            import tifffile

            if _is_url(s):
                import fsspec

                with fsspec.open(s, "rb", **(storage_options or {})) as f:
                    return tifffile.imread(f)
            return tifffile.imread(_local(s))
        if ext in RASTER:
            import imageio.v3 as iio

            return np.asarray(iio.imread(_local(s)))
    except Exception as exc:  # a corrupt file: name it, keep the cause for --verbose logs
        raise SpiralrayError(f"cannot read {s} as an image: {exc.__class__.__name__}: {exc}") from exc
    raise SpiralrayError(f"unsupported image format '{ext or 'none'}' for {s} (use .tif, .png or .zarr)")


# What storage says about an object's version: its ETag (S3; etag on Azure; md5Hash, generation
# on GCS), else its modification time (local files and the rest).
VERSION_KEYS = (
    *("ETag", "etag", "md5Hash", "generation"),
    *("mtime", "LastModified", "last_modified", "updated", "modified"),
)


def stored_objects(url: str, storage_options: dict | None = None) -> dict[str, dict] | None:
    """What storage holds at ``url``, by one listing: each object's info (size, version) keyed by
    its name under ``url`` ('/c/0/1' in a zarr array; '' for a file). None where the listing fails."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(_local(url), **(storage_options or {}))
        fs.invalidate_cache(root)  # a listing cached earlier in this process would hide a change
        found = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
    except Exception:
        return None
    return {name[len(root) :]: info for name, info in found.items()}


def stamp_of(objects: dict[str, dict] | None) -> str | None:
    """A digest that changes when the objects' names, sizes or versions do (None: unknown)."""
    import hashlib

    if objects is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(objects):
        info = objects[name]
        version = next((info[k] for k in VERSION_KEYS if info.get(k) is not None), None)
        digest.update(f"{name}\t{info.get('size')}\t{version}\n".encode())
    return digest.hexdigest()[:16]


def delete(fs, path: str) -> None:
    """Delete the file or folder (prefix) ``path`` on ``fs`` and everything under it, exactly
    (nothing there: nothing done): fsspec's ``rm`` expands ``[``, ``*`` and ``?`` as a pattern,
    so ``w[1].zarr`` would delete ``w1.zarr``'s objects. Local trees go by ``shutil``; object
    stores by the keys listed."""
    import shutil

    if "file" in fs.protocol or "local" in fs.protocol:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        return
    fs.invalidate_cache()
    delete_keys(fs, fs.find(path))  # a listing under the prefix (and the key itself): no pattern


def _magic(keys) -> bool:
    return any(c in k for k in keys for c in "[*?")


def copy_keys(fs, sources: list[str], targets: list[str]) -> None:
    """Copy exactly these objects of an object store to these keys (``copy`` of a list expands
    ``[``, ``*`` and ``?`` as patterns: one by one where a key holds one)."""
    if _magic(sources) or _magic(targets):
        for a, b in zip(sources, targets, strict=True):
            fs.cp_file(a, b)
    elif sources:
        fs.copy(list(sources), list(targets))  # concurrently


def delete_keys(fs, keys: list[str]) -> None:
    """Delete exactly these objects (keys as ``fs.find`` lists them) from an object store."""
    if _magic(keys):
        for k in keys:  # one by one: a list given to rm is expanded as patterns too
            fs.rm_file(k)
    elif keys:
        fs.rm(list(keys))  # bulk deletes
    fs.invalidate_cache()


def read_zarr(path, storage_options: dict | None = None) -> np.ndarray:
    import zarr

    try:
        node = zarr.open(_local(path), mode="r", storage_options=storage_options)
    except Exception as exc:
        raise SpiralrayError(f"cannot open {path} as zarr: {exc.__class__.__name__}: {exc}") from exc
    if isinstance(node, zarr.Group):
        # OME-Zarr multiscales: level 0; otherwise a group needs an explicit array path.
        ms = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
        if ms:
            return np.asarray(node[ms[0]["datasets"][0]["path"]][...])
        raise SpiralrayError(f"{path} is a zarr group, not an array: name an array inside it")
    return np.asarray(node[...])


def open_zarr_group(path, storage_options: dict | None = None):
    import zarr

    try:
        return zarr.open_group(_local(path), mode="r", storage_options=storage_options)
    except Exception as exc:
        raise SpiralrayError(f"cannot open {path} as a zarr group: {exc}") from exc


def list_dir(path) -> list[str]:
    s = _local(path)
    if _is_url(s):
        import fsspec

        fs, p = fsspec.core.url_to_fs(s)
        proto = s.split("://")[0]
        return sorted(f"{proto}://{q}" for q in fs.ls(p, detail=False))
    if not os.path.isdir(s):
        raise SpiralrayError(f"not a directory: {s}")
    return sorted(os.path.join(s, name) for name in os.listdir(s))


def read_labels(path) -> np.ndarray:
    """A label image (integer ids; whole-number floats are taken as ids), or a spiralray output's
    instance labels when ``path`` is one."""
    from .output import Output

    s = str(path).rstrip("/")
    for root in (s, s[: -len("/labels")] if s.endswith("/labels") else None):  # OUT or OUT/labels
        manifest = Output(root).manifest() if root and exists(root) else None
        if manifest is not None:
            if not manifest.get("complete"):
                raise SpiralrayError(
                    f"{path} is an unfinished spiralray output: run its segment command again"
                )
            path = f"{root}/labels/instances/0"
            break
    a = read_image(path)
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
            return a.astype(np.int64)
        raise SpiralrayError(f"{path} is not a label image (dtype {a.dtype}, expected integers)")
    return a


def is_output(path) -> bool:
    """Whether ``path`` is a label image spiralray wrote: an output with a manifest, or a TIFF
    with spiralray's Software tag."""
    from .output import MANIFEST

    s = str(path).rstrip("/")
    return exists(f"{s}/{MANIFEST}") or (s.lower().endswith(TIFF) and written_by_spiralray(s))


def check_parent(path) -> None:
    """A local output's folder must exist, and a URL's bucket: a mistyped path is refused, not
    created (writing through fsspec would create a missing bucket). A URL's folders are key
    prefixes: nothing to check below the bucket."""
    s = str(path)
    if _is_url(s):
        _check_bucket(s)
        return
    parent = os.path.dirname(os.path.abspath(_local(s).rstrip("/")))
    if not os.path.isdir(parent):
        raise SpiralrayError(f"output directory does not exist: {parent}")


def _check_bucket(url: str) -> None:
    import fsspec

    from .readers import REACH_HINT, one_line, redact

    try:
        fs, p = fsspec.core.url_to_fs(url)
        bucket = p.strip("/").split("/", 1)[0]
        found = fs.exists(bucket)
    except PermissionError:
        return  # credentials that may write but not look: the write itself will tell
    except Exception as exc:
        raise SpiralrayError(f"cannot use output {redact(url)}: {one_line(exc)}") from None
    if found:
        return
    proto = url.split("://", 1)[0]
    try:  # exists() says False for any failure: ask again to learn which
        fs.info(bucket)
        return
    except FileNotFoundError:
        raise SpiralrayError(f"output bucket does not exist: {proto}://{bucket} (create it first)") from None
    except PermissionError:
        return
    except Exception as exc:  # no credentials, no endpoint, no network
        raise SpiralrayError(f"cannot reach {proto}://{bucket}: {one_line(exc)} ({REACH_HINT})") from None


def check_output(path) -> None:
    """Fail early, before any work, on an output path that cannot be written."""
    s = _local(str(path))
    if is_zarr(s) or _is_url(s):
        return
    ext = suffix(s)
    if ext not in TIFF:
        what = f"format '{ext}'" if ext else "format: the name has no extension"
        raise SpiralrayError(f"unsupported output {what} ({s}): name it .tif or .zarr")
    check_parent(s)


SOFTWARE = "spiralray"  # the TIFF Software tag of label images spiralray writes


def write_labels(
    path, labels: np.ndarray, chunks: int = 1024, software: str | None = SOFTWARE, spacing: dict | None = None
) -> None:
    """Write a label image: ``.tif`` (compressed TIFF, its Software tag ``software``: how a
    later run recognises its own output; OME-XML with the pixel size when ``spacing`` gives
    one) or ``.zarr`` (a zarr v3 array)."""
    s = _local(str(path))
    if is_zarr(s):
        import zarr

        arr = zarr.create_array(
            s,
            shape=labels.shape,
            dtype=labels.dtype,
            chunks=tuple(min(chunks, n) for n in labels.shape),
            overwrite=True,
            dimension_names=("y", "x") if labels.ndim == 2 else None,
        )
        arr[...] = labels
        return
    check_output(s)
    import tifffile

    tmp = f"{s}.{os.getpid()}.partial"
    try:
        tifffile.imwrite(
            tmp, labels, compression="zlib", software=software, **tiff_metadata(spacing, labels.dtype)
        )
        os.replace(tmp, s)  # never leave a half-written output behind
    except OSError as exc:
        raise SpiralrayError(f"cannot write {s}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_image(path, image: np.ndarray) -> None:
    """Write an image (TIFF, or zarr when the path ends in .zarr); not marked as an output."""
    write_labels(path, image, software=None)


def written_by_spiralray(path: str) -> bool:
    """Whether the TIFF at ``path`` is a label image spiralray wrote (its Software tag)."""
    import tifffile

    try:
        with tifffile.TiffFile(_local(path)) as tif:
            return tif.pages[0].software == SOFTWARE
    except Exception:  # unreadable, not a TIFF: not ours
        return False


# --- model directories: config.json + model.safetensors (+ card.md), self-describing -------------

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"


def save_model_dir(path, tensors: dict, config: dict, card: str | None = None) -> None:
    """Write a model directory: weights (safetensors, no pickle), config and an optional card."""
    import json

    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, MODEL_WEIGHTS))
    with open(os.path.join(path, MODEL_CONFIG), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    if card is not None:
        with open(os.path.join(path, "card.md"), "w") as f:
            f.write(card)


def load_model_dir(path) -> tuple[dict, dict]:
    """(tensors, config) of a model directory."""
    import json

    from safetensors.torch import load_file

    weights, config = os.path.join(path, MODEL_WEIGHTS), os.path.join(path, MODEL_CONFIG)
    if not (os.path.isfile(weights) and os.path.isfile(config)):
        raise SpiralrayError(
            f"not a spiralray model directory (needs {MODEL_WEIGHTS} and {MODEL_CONFIG}): {path}"
        )
    try:
        with open(config) as f:
            return load_file(weights), json.load(f)
    except Exception as exc:  # safetensors raises its own error type
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SpiralrayError(f"broken model directory {path}: {exc.__class__.__name__}: {first}") from exc
