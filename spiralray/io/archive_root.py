"""An archive output's root, written when a run ends: ``objects.parquet`` (``OBJECTS``), every
finished image's object table in one, each row with its image's archive path and index; and
zarr group metadata at the root and every folder between it and an image's labels, so the
output opens as one zarr hierarchy. Nothing of the user's is replaced: the table only over a
table spiralray wrote (its schema metadata says so), group metadata only where none exists.
No torch here.
"""

from __future__ import annotations

import numpy as np

from ..core.objects import COLUMNS
from ..errors import SpiralrayError
from .output import TABLE, Output, read_table
from .readers import one_line, redact

OBJECTS = TABLE  # at an archive output's root: all its finished images' objects
TAG = {b"spiralray": b"archive objects"}  # the table's schema metadata: spiralray wrote it
GROUP = {"zarr_format": 3, "node_type": "group", "attributes": {}}


def _ours(out: Output) -> bool | None:
    """Whether the root's ``OBJECTS`` is spiralray's (None: there is none)."""
    import pyarrow.parquet as pq

    path = out._p(OBJECTS)
    try:
        if not out.fs.exists(path):
            return None
        with out.fs.open(path, "rb") as f:
            return (pq.read_schema(f).metadata or {}).get(b"spiralray") == TAG[b"spiralray"]
    except Exception:  # unreadable: not a table we wrote
        return False


def _writable(out: Output) -> None:
    if _ours(out) is False:
        raise SpiralrayError(
            f"{redact(out.url)}/{OBJECTS} exists and is not spiralray's archive table: not replacing it"
        )


def write_objects(out_root: str, images: list[tuple[int, str, str]], storage_options=None) -> int:
    """The archive's object table, ``OBJECTS`` at ``out_root``: the tables of ``images``
    ((index, archive path, output URL), each a finished output), in index order, with columns
    ``image`` (the archive path) and ``image_index`` in front of ``core.objects.COLUMNS``; ``id``
    and ``seed_id`` as uint64 whatever each image used. Read back from the outputs a few at a
    time (16 reads in flight) and streamed out (it appears whole, replacing an earlier one:
    spiralray's only; streamed again after a throttled upload). With no image, nothing is
    written. Returns its rows."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not images:
        return 0
    out = Output(out_root, storage_options)
    _writable(out)

    def read(item) -> pa.Table:
        index, path, url = item
        try:
            t = read_table(url, storage_options)
        except Exception as exc:
            raise SpiralrayError(f"cannot read the object table of {redact(url)}: {one_line(exc)}") from exc
        n = len(next(iter(t.values()))) if t else 0
        # an image finished before a column existed (the micrometer ones): NaN there
        t = {k: t[k] if k in t else np.full(n, np.nan) for k in COLUMNS}
        return pa.table(
            {"image": pa.array([path] * n, pa.string()), "image_index": np.full(n, index, np.int32), **t}
        )

    def produce(f) -> int:  # repeatable: a throttled upload is streamed again from the start
        rows, writer = 0, None
        with ThreadPoolExecutor(16) as pool:
            todo = sorted(images)
            for k in range(0, len(todo), 64):  # a batch in memory at a time, streamed out
                for t in pool.map(read, todo[k : k + 64]):
                    if writer is None:
                        ids = {"id": pa.uint64(), "seed_id": pa.uint64()}
                        fields = [pa.field(c.name, ids.get(c.name, c.type)) for c in t.schema]
                        writer = pq.ParquetWriter(f, pa.schema(fields, metadata=TAG))
                    writer.write_table(t.cast(writer.schema))
                    rows += t.num_rows
            writer.close()
        return rows

    return out.stream(OBJECTS, produce)


def write_groups(out_root: str, outputs: list[str], storage_options=None) -> None:
    """Zarr group metadata at ``out_root`` and at every folder between it and each output
    (``outputs``: paths relative to it), where none exists: ``zarr.open_group(out_root)`` then
    walks to every image's labels. Existing metadata (the user's own group) is never replaced;
    no ``spiralray`` attribute, which marks an image's output."""
    out = Output(out_root, storage_options)
    folders = {""}
    for rel in outputs:
        parts = rel.strip("/").split("/")[:-1]
        folders.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
    for folder in sorted(folders):
        key = f"{folder}/zarr.json" if folder else "zarr.json"
        if out.get_json(key, "zarr metadata") is None:
            out.put_json(key, GROUP)
