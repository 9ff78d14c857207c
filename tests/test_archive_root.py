"""An archive output's root (``io.archive_root``): the object table of its finished images,
never written over a user's file; zarr groups where none exist. Real outputs' tables on local
storage; the Ray runs that write it are tested in test_ray_pipeline.py and (S3)
test_readers.py."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from spiralray.core.objects import COLUMNS, PHYSICAL
from spiralray.errors import SpiralrayError
from spiralray.io.archive_root import OBJECTS, write_groups, write_objects
from spiralray.io.output import Output


def _output(path, n: int, id_dtype=np.uint32, columns=COLUMNS):
    table = {k: np.arange(n, dtype=np.float64 if k in PHYSICAL else np.int64) for k in columns}
    table["id"] = np.arange(1, n + 1, dtype=id_dtype)
    table["seed_id"] = np.arange(n, dtype=np.uint64) + (7 << 40)
    Output(str(path)).write_table(table)
    return str(path)


def test_an_image_finished_before_the_micrometer_columns_has_nan_there(tmp_path):
    """An archive resumed across the release that added them: the older images' tables lack
    the micrometer columns, and the archive table still joins them all."""
    out = tmp_path / "out"
    older = [c for c in COLUMNS if c not in PHYSICAL]
    images = [
        (0, "old.tif", _output(out / "old.zarr", 2, columns=older)),
        (1, "new.tif", _output(out / "new.zarr", 3)),
    ]
    assert write_objects(str(out), images) == 5
    t = pq.read_table(out / OBJECTS)
    assert t.column_names == ["image", "image_index", *COLUMNS]
    area = t.column("area_um2").to_numpy()
    assert np.isnan(area[:2]).all() and area[2:].tolist() == [0.0, 1.0, 2.0]


def test_the_table_joins_the_images_and_replaces_only_its_own(tmp_path):
    out = tmp_path / "out"
    images = [
        (3, "b/x.tif", _output(out / "b" / "x.zarr", 4, np.uint64)),
        (1, "a.tif", _output(out / "a.zarr", 2)),
    ]
    assert write_objects(str(out), images) == 6
    t = pq.read_table(out / OBJECTS)
    assert t.column_names[:2] == ["image", "image_index"] and t.schema.field("id").type == pa.uint64()
    assert t.column("image").to_pylist() == ["a.tif"] * 2 + ["b/x.tif"] * 4  # index order
    assert t.column("image_index").to_pylist() == [1, 1, 3, 3, 3, 3]
    assert write_objects(str(out), images[:1]) == 4  # rewritten by the next run
    assert write_objects(str(out), []) == 0 and pq.read_table(out / OBJECTS).num_rows == 4  # untouched
    (out / OBJECTS).write_bytes(b"the user's own file")
    with pytest.raises(SpiralrayError, match="is not spiralray's archive table: not replacing it"):
        write_objects(str(out), images)
    write_objects(str(out), [])
    assert (out / OBJECTS).read_bytes() == b"the user's own file"
    (out / "a.zarr" / OBJECTS).unlink()
    (out / OBJECTS).unlink()
    with pytest.raises(SpiralrayError, match="cannot read the object table of .*a.zarr"):
        write_objects(str(out), images)


def test_groups_are_written_only_where_none_exists(tmp_path):
    out = tmp_path / "out"
    zarr.open_group(str(out / "p"), mode="w").attrs["mine"] = 1
    zarr.open_group(str(out / "p" / "A" / "1"), mode="w").attrs["spiralray"] = {"complete": True}
    write_groups(str(out), ["p/A/1"])
    root = zarr.open_group(str(out), mode="r")
    assert dict(root["p"].attrs) == {"mine": 1} and dict(root["p/A"].attrs) == {}
    assert root["p/A/1"].attrs["spiralray"] == {"complete": True}


@pytest.mark.parametrize("where", ["local", "s3"])
# a discarded upload's file object must not try to flush again when collected
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_streamed_write_appears_whole_or_not_at_all(where, tmp_path, request):
    url = str(tmp_path / "w") if where == "local" else f"s3://spiralray-test/w-{tmp_path.name}"
    if where == "s3":
        request.getfixturevalue("s3")
    out = Output(url)

    def dies(f):
        f.write(b"half a table")
        raise RuntimeError("the run dies mid-write")

    with pytest.raises(RuntimeError):
        out.stream("t.bin", dies)
    assert not out.fs.exists(out._p("t.bin"))
    assert out.stream("t.bin", lambda f: f.write(b"a whole table")) == 13
    with out.fs.open(out._p("t.bin"), "rb") as f:
        assert f.read() == b"a whole table"


def test_an_output_left_with_only_another_archives_record_is_taken(tmp_path):
    """From a user test: a run whose every image failed left only its archive record, and the
    output was then refused to every other archive ('holds the archive of ...')."""
    import json

    from spiralray.errors import SpiralrayError
    from spiralray.io.archive import INDEX, check_archive_output

    out = tmp_path / "out"
    (out / ".spiralray").mkdir(parents=True)
    (out / INDEX).write_text(json.dumps({"images": ["A/1/0"], "input": str(tmp_path / "plate.zarr")}))
    assert check_archive_output(str(out), str(tmp_path / "other")) == {}
    (out / "A").mkdir()  # an image's output of that archive: kept, and the run refused
    with pytest.raises(SpiralrayError, match="holds the archive of .*plate.zarr, not of .*other"):
        check_archive_output(str(out), str(tmp_path / "other"))
