"""The OME-Zarr output of one image, its manifest and its per-tile records.

Layout (NGFF 0.5, zarr v3; a local path or an fsspec URL)::

    OUT/                          image group; attrs["spiralray"] = {"complete": bool, ...}
      labels/                     attrs["ome"]["labels"] = ["instances", "semantic"]
        instances/0, 1, ...       uint32 ids (uint64 when they do not fit), pyramid by 2x nearest
        semantic/0, 1, ...        uint8 foreground
      objects.parquet             the per-object table (core.objects.COLUMNS)
      .spiralray/manifest.json    input, shape, model, parameters, statistics, completed tiles
      .spiralray/tiles/*.npz      each completed tile's objects (what a resumed run reloads)
      .spiralray/seed_ids         scratch: resolved seed ids, before the final ids are assigned

Writes are whole objects: a tile record or the manifest is written to a temporary name and
renamed (a single PUT on object stores), so a kill never leaves one half-written; label chunks
are rewritten whole by a resumed run, and ``complete`` is set last. An output is recognised as
spiralray's by its manifest: nothing else is ever deleted. No torch here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid

import numpy as np

from ..errors import SpiralrayError
from . import lease, spacing
from .readers import REACH_HINT, is_url, local, one_line, redact
from .retry import retrying
from .storage import delete

MANIFEST = ".spiralray/manifest.json"
TILES = ".spiralray/tiles"
SCRATCH = ".spiralray/seed_ids"
TABLE = "objects.parquet"
LABELS = ("instances", "semantic")
# what --overwrite removes, in this order: the manifest (in .spiralray/) last; the run's lease
# (.spiralray/lease.json, io.lease) stays
OWN = (*(f"labels/{name}" for name in LABELS), TABLE, TILES, SCRATCH, MANIFEST)


def _fault(kind: str) -> None:
    """Test hook: ``SPIRALRAY_FAULT=tile:N`` (or ``chunk:N``) kills the process right after the
    N-th write of that kind, as a crash or a node loss would."""
    spec = os.environ.get("SPIRALRAY_FAULT", "")
    if not spec.startswith(kind + ":"):
        return
    left = int(spec.split(":", 1)[1]) - 1
    os.environ["SPIRALRAY_FAULT"] = f"{kind}:{left}"
    if left <= 0:
        os._exit(137)


class Output:
    """An OME-Zarr output location (``url``: a local path or fsspec URL)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = str(url).rstrip("/")
        self.storage_options = storage_options or {}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(local(self.url), **self.storage_options)
        except Exception as exc:
            raise SpiralrayError(f"cannot use output {redact(self.url)}: {one_line(exc)}") from exc

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _zurl(self, key: str = "") -> str:
        return local(self.url) + (f"/{key}" if key else "")

    def _zopts(self):
        return self.storage_options if is_url(self.url) else None

    # --- existence, ownership, writability ---------------------------------------------------

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self.root))
        except Exception as exc:
            raise SpiralrayError(f"cannot reach output {redact(self.url)}: {one_line(exc)}") from exc

    def manifest(self) -> dict | None:
        return self.get_json(MANIFEST, "manifest")

    def get_json(self, key: str, what: str) -> dict | None:
        """The JSON object at ``key``, None when there is none (nothing, or a plain file above)."""
        try:
            with self.fs.open(self._p(key), "rb") as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):  # nothing there, or a plain file
            return None
        except PermissionError as exc:  # refused, not unreadable: often the wrong endpoint
            raise SpiralrayError(
                f"no access to {redact(self.url)} (reading its {what}): {one_line(exc)}"
                + (f" ({REACH_HINT})" if is_url(self.url) else "")
            ) from exc
        except (OSError, ValueError) as exc:
            raise SpiralrayError(f"unreadable {what} in {redact(self.url)}: {one_line(exc)}") from exc

    def remove(self) -> None:
        """Delete what spiralray wrote in an output (refused for anything without a spiralray
        manifest). Its manifest first says incomplete, so a run stopped while removing leaves an
        output of its own that resumes or is replaced, never one that looks complete (labels
        gone) or foreign (manifest gone); the manifest goes last. Anything else in the folder
        (a user's notes, an analysis beside the labels) stays, and so do the groups' zarr.json,
        which the next run writes again."""
        old = self.manifest()
        if old is None:
            raise SpiralrayError(f"{redact(self.url)} is not a spiralray output: not deleting it")
        self.write_manifest({**old, "complete": False})
        self.mark({"version": old.get("version"), "complete": False, "manifest": MANIFEST})
        for key in OWN:
            delete(self.fs, self._p(key))  # nothing there: nothing done
        self.remove_empty()

    def delete(self, key: str) -> None:
        delete(self.fs, self._p(key))

    def remove_empty(self, root: bool = False) -> None:
        """Remove ``.spiralray/`` where it is empty, and with ``root`` the output folder too
        (local: what a run that wrote nothing but its lease leaves, which a later run would call
        foreign; a folder the user made is not ``root``'s)."""
        if is_url(self.url):
            return  # object stores have no folders
        for path in (self._p(".spiralray"), self.root) if root else (self._p(".spiralray"),):
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def _put(self, key: str, data: bytes) -> None:
        """Write one object whole: a temporary name renamed locally, one PUT on object stores;
        again after a transient failure (throttling), as a whole object's write is idempotent."""
        self.stream(key, lambda f: f.write(data))

    def stream(self, key: str, produce):
        """``produce(f)`` writes ``key`` through the file ``f``, which appears whole or not at all:
        a temporary name renamed locally; on object stores an upload that an error aborts (a
        multipart upload is only visible once completed), so what is written need not fit in
        memory. After a transient failure (throttling) the whole stream is produced again, so
        ``produce`` must be repeatable. Returns what ``produce`` returns."""

        def once():
            with self._raw_writing(key) as f:
                return produce(f)

        with self._reported(key):
            return retrying(once)

    @contextlib.contextmanager
    def _reported(self, key: str):
        """A storage error writing ``key`` as one line naming it."""
        try:
            yield
        except OSError as exc:
            raise SpiralrayError(f"cannot write {redact(self.url)}/{key}: {one_line(exc)}") from exc

    @contextlib.contextmanager
    def _raw_writing(self, key: str):
        path = self._p(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if is_url(self.url):
            f = self.fs.open(path, "wb")
            try:
                yield f
                f.close()  # the upload completes here; if that fails, it is aborted too
            except BaseException:
                try:
                    f.discard()  # an open multipart upload is aborted: nothing appears
                except Exception:  # the write's own error is the one to report
                    pass
                finally:
                    # whatever discard did, __del__'s close must never complete the object
                    # (fsspec buffered files; other writers may not allow the attribute)
                    with contextlib.suppress(AttributeError):
                        f.closed = True
                raise
            return
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write_manifest(self, manifest: dict) -> None:
        if manifest.get("complete"):  # irreversible: only while this run still holds the output
            lease.verify(self.url)
        self.put_json(MANIFEST, manifest)

    def put_json(self, key: str, obj: dict) -> None:
        self._put(key, json.dumps(obj, indent=1, sort_keys=True).encode())

    # --- tile records ------------------------------------------------------------------------

    def put_record(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self._put(f"{TILES}/{key}.npz", buf.getvalue())
        _fault("tile")

    def get_record(self, key: str) -> dict[str, np.ndarray] | None:
        try:
            with self.fs.open(self._p(f"{TILES}/{key}.npz"), "rb") as f:
                with np.load(io.BytesIO(f.read())) as z:
                    return {k: z[k] for k in z.files}
        except Exception:  # missing, or damaged by a crash mid-write elsewhere: recompute the tile
            return None

    def done_tiles(self) -> set[str]:
        try:
            names = self.fs.ls(self._p(TILES), detail=False)
        except FileNotFoundError:
            return set()
        return {n.rsplit("/", 1)[-1][: -len(".npz")] for n in names if n.endswith(".npz")}

    # --- label arrays ------------------------------------------------------------------------

    def open_scratch(self, shape, chunks: int, resume: bool):
        import zarr

        path = self._zurl(SCRATCH)
        if resume:
            try:
                return zarr.open_array(path, mode="r+", storage_options=self._zopts())
            except Exception:
                pass
        return zarr.create_array(
            path,
            shape=tuple(shape),
            chunks=(chunks, chunks),
            dtype=np.uint64,
            fill_value=0,
            overwrite=True,
            storage_options=self._zopts(),
        )

    def write_chunk(self, scratch, y0: int, x0: int, block: np.ndarray) -> None:
        def once():
            scratch[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block

        try:
            retrying(once)  # whole chunks (tiles are chunk-aligned): idempotent
        except Exception as exc:
            raise SpiralrayError(f"cannot write {redact(self.url)} at rows {y0}-: {one_line(exc)}") from exc
        _fault("chunk")

    def finalize(
        self,
        scratch,
        seeds: np.ndarray,
        ids: np.ndarray,
        chunks: int,
        attrs: dict,
        table: dict,
        pixel: dict | None = None,
    ) -> None:
        """Final labels from the scratch seed ids: ``seeds`` (sorted uint64) map to ``ids``;
        instance and semantic pyramids, OME metadata (in the input's physical units when
        ``pixel``, an ``io.spacing`` dict, gives them), the table; ``complete`` set last."""
        lease.verify(self.url)  # the scratch is this run's only while it holds the output
        import dask
        import dask.array as da
        import zarr
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

        from ..core.objects import label_dtype

        dtype = label_dtype(ids)
        lut_keys = np.asarray(seeds, np.uint64)
        lut_vals = np.asarray(ids, dtype)

        def relabel(block):
            out = np.zeros(block.shape, dtype)
            fg = block > 0
            out[fg] = lut_vals[np.searchsorted(lut_keys, block[fg])]
            return out

        src = da.from_zarr(scratch)
        inst = src.map_blocks(relabel, dtype=dtype)
        levels = pyramid_levels(scratch.shape, chunks)
        root = zarr.open_group(self._zurl(), mode="a", storage_options=self._zopts())
        labels = root.require_group("labels")
        fmt = FormatV05()
        with dask.config.set(scheduler="threads"):
            for name, level0 in (("instances", inst), ("semantic", (inst > 0).astype(np.uint8))):
                group = labels.require_group(name)
                datasets = []
                arr = level0
                for k in range(levels):
                    target = group.create_array(
                        str(k),
                        shape=arr.shape,
                        chunks=(chunks, chunks),
                        dtype=arr.dtype,
                        fill_value=0,
                        overwrite=True,
                        dimension_names=("y", "x"),  # NGFF 0.5: each level names the axes
                    )
                    da.store(arr.rechunk((chunks, chunks)), _Retried(target), lock=False)
                    datasets.append(
                        {
                            "path": str(k),
                            "coordinateTransformations": spacing.ngff_transforms(pixel, k),
                        }
                    )
                    # nearest neighbour: ids are never averaged
                    arr = da.from_zarr(target)[::2, ::2]
                write_multiscales_metadata(group, datasets, fmt=fmt, axes=spacing.ngff_axes(pixel), name=name)
        labels.attrs.pop("ome", None)
        for name in LABELS:
            # no "source": the image is the input, elsewhere (a path up to this group, which
            # holds none, sent readers looking for a parent that is not there)
            write_label_metadata(labels, name, fmt=fmt)
        labels.attrs["ome"] = {**dict(labels.attrs["ome"]), "version": fmt.version}  # NGFF 0.5 asks for it
        self.write_table(table)
        retrying(lambda: root.attrs.__setitem__("spiralray", {**attrs, "complete": True}))

    def write_table(self, table: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.table({k: np.asarray(v) for k, v in table.items()}), buf)
        self._put(TABLE, buf.getvalue())

    def mark(self, attrs: dict) -> None:
        """Root group attributes (created if missing): ``complete`` false until finalize."""
        import zarr

        def once():
            root = zarr.open_group(self._zurl(), mode="a", storage_options=self._zopts())
            root.attrs["spiralray"] = attrs

        try:
            retrying(once)
        except Exception as exc:
            raise SpiralrayError(f"cannot write output {redact(self.url)}: {one_line(exc)}") from exc

    def drop_scratch(self) -> None:
        lease.verify(self.url)  # another run's scratch, if another run took the output over
        try:
            delete(self.fs, self._p(SCRATCH))
        except FileNotFoundError:
            pass


class _Retried:
    """A zarr array whose chunk writes ``da.store`` makes are each retried (``retrying``): a
    throttled chunk is written again, not the whole level."""

    def __init__(self, target):
        self.target, self.shape, self.dtype = target, target.shape, target.dtype

    def __setitem__(self, index, block) -> None:
        retrying(lambda: self.target.__setitem__(index, block))


def pyramid_levels(shape, chunks: int) -> int:
    """Levels halving the image until it fits one chunk (at least one level)."""
    n, size = 1, max(shape)
    while size > chunks:
        size = -(-size // 2)
        n += 1
    return n


def read_table(url: str, storage_options: dict | None = None) -> dict:
    import pyarrow.parquet as pq

    out = Output(url, storage_options)
    with out.fs.open(out._p(TABLE), "rb") as f:
        t = pq.read_table(f)
    return {k: t.column(k).to_numpy() for k in t.column_names}
