"""``spiralray ingest``: folders of TIFF / PNG (local and on a moto S3 endpoint) -> an OME-Zarr
archive on the session's real local Ray; opened with ome-zarr-py, ``io.archive`` and
``io.readers``; resume, bad files, ownership and place checks. Small images, 32 px chunks, so
that pyramids have several levels."""

import argparse
import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from skimage.transform import downscale_local_mean

from spiralray.errors import SpiralrayError
from spiralray.io.archive import list_images
from spiralray.io.readers import open_image
from spiralray.pipeline.ingest import IngestOptions, add_parser, ingest, pyramid_levels

OPTS = IngestOptions(chunk=32)
PLANES = {"photometric": "minisblack", "compression": "packbits", "rowsperstrip": 8}


def _folder(root):
    """SRC: nested TIFFs (LZW strips, zlib tiles, JPEG, PackBits z/c stack) and PNGs; the
    expected arrays in NGFF axis order."""
    rng = np.random.default_rng(7)
    want = {}

    def tif(rel, a, stored=None, **kw):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / rel, a, **kw)
        want[rel] = a if stored is None else stored

    lzw = rng.integers(0, 60000, (150, 170), dtype=np.uint16)
    # ImageJ's calibration (0.5 micron pixels): carried into the image's NGFF metadata
    tif(
        "a/b/lzw.tif",
        lzw,
        compression="lzw",
        rowsperstrip=16,
        imagej=True,
        resolution=(2, 2),
        metadata={"unit": "micron"},
    )
    rgb = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    tif("a/rgb.tif", rgb, rgb.transpose(2, 0, 1), photometric="rgb", compression="zlib", tile=(32, 32))
    stack = rng.integers(0, 4000, (2, 3, 40, 50), dtype=np.uint16)
    tif("stack.tif", stack, stack.transpose(1, 0, 2, 3), metadata={"axes": "ZCYX"}, **PLANES)
    smooth = (np.add.outer(np.arange(80), np.arange(90)) % 200).astype(np.uint8)
    tif("c/jpeg.tif", smooth, compression="jpeg", rowsperstrip=16)
    want["c/jpeg.tif"] = tifffile.imread(root / "c/jpeg.tif")  # lossy: the decoded pixels
    png = rng.integers(0, 255, (60, 50), dtype=np.uint8)
    iio.imwrite(root / "p.png", png)
    want["p.png"] = png
    rgba = rng.integers(0, 255, (40, 36, 4), dtype=np.uint8)
    iio.imwrite(root / "a/rgba.png", rgba)
    want["a/rgba.png"] = rgba.transpose(2, 0, 1)
    grey = rng.integers(0, 255, (40, 44), dtype=np.uint8)  # grey saved as RGBA: one plane
    iio.imwrite(root / "a/grey.png", np.dstack([grey] * 3 + [np.full_like(grey, 255)]))
    want["a/grey.png"] = grey
    return want


def _zarr_path(rel):
    return rel.rsplit(".", 1)[0] + ".zarr"


def _cli(*argv):
    p = argparse.ArgumentParser(prog="spiralray")
    add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args([str(a) for a in argv])
    return args.func(args)


def test_folder_to_archive_levels_pixels_and_resume(ray_cluster, tmp_path):
    want = _folder(tmp_path / "src")
    dst = tmp_path / "out.zarr"
    s = ingest(str(tmp_path / "src"), str(dst), OPTS)
    assert (s["files"], s["converted"], s["skipped"], s["failed"]) == (7, 7, 0, [])
    assert sorted(s["read_whole"]) == sorted(
        str(tmp_path / "src" / p) for p in ("p.png", "a/rgba.png", "a/grey.png")
    )
    # the archive lists its images in the sources' order, mirrored paths with .zarr
    assert [e.path for e in list_images(str(dst))] == [_zarr_path(r) for r in sorted(want)]
    for rel, a in want.items():
        node = list(Reader(parse_url(str(dst / _zarr_path(rel))))())[0]
        axes = "".join(ax["name"] for ax in node.metadata["axes"])
        assert axes == {2: "yx", 3: "cyx", 4: "czyx"}[a.ndim], rel
        levels = [np.asarray(d) for d in node.data]
        h, w = a.shape[-2:]
        assert len(levels) == pyramid_levels(h, w, 32) > 1
        assert np.array_equal(levels[0], a) and levels[0].dtype == a.dtype, rel
        for k, lev in enumerate(levels[1:], 1):
            assert lev.shape == a.shape[:-2] + (h >> k, w >> k)
        mean = downscale_local_mean(a, (1,) * (a.ndim - 2) + (2, 2))[..., : h // 2, : w // 2]
        assert np.array_equal(levels[1], mean.astype(a.dtype)), rel
        s0 = zarr.open_array(str(dst / _zarr_path(rel) / "s0"), mode="r")
        assert s0.chunks == (1,) * (a.ndim - 2) + (32, 32)
        mark = dict(zarr.open_group(str(dst / _zarr_path(rel)), mode="r").attrs)["spiralray_ingest"]
        assert mark["complete"] is True and mark["source"] == str(tmp_path / "src" / rel)
    # the pixel size: ome-zarr-py's per-level scale and 2 x 2 mean centres, in the file's unit
    ms = list(Reader(parse_url(str(dst / "a/b/lzw.zarr")))())[0].metadata
    assert [a.get("unit") for a in ms["axes"]] == ["micrometer"] * 2
    for k, transforms in enumerate(ms["coordinateTransformations"]):
        assert transforms == [
            {"type": "scale", "scale": [0.5 * 2**k] * 2},
            {"type": "translation", "translation": [0.5 * (2**k - 1) / 2] * 2},
        ]
    assert open_image(str(dst / "a/b/lzw.zarr")).spacing["scale"] == [0.5, 0.5]
    carried = {r["path"]: r["spacing"] for r in s["per_image"]}  # what --json reports
    assert carried["a/b/lzw.tif"]["unit"] == ["micrometer"] * 2 and carried["p.png"] is None
    assert [a.get("unit") for a in list(Reader(parse_url(str(dst / "p.zarr")))())[0].metadata["axes"]] == [
        None
    ] * 2
    # spiralray's own reader picks channels and planes of the result
    r = open_image(str(dst / "a/rgb.zarr"), channel=1)
    assert np.array_equal(r.read(0, 64, 0, 96), want["a/rgb.tif"][1])
    r = open_image(str(dst / "stack.zarr"), channel=2, plane=1)
    assert np.array_equal(r.read(5, 30, 7, 41), want["stack.tif"][2, 1, 5:30, 7:41])

    # re-run: everything complete is skipped; an incomplete image (a killed task) is redone
    again = ingest(str(tmp_path / "src"), str(dst), OPTS)
    assert (again["converted"], again["skipped"]) == (0, 7)
    g = zarr.open_group(str(dst / "p.zarr"), mode="r+")
    g.attrs["spiralray_ingest"] = {**g.attrs["spiralray_ingest"], "complete": False}
    again = ingest(str(tmp_path / "src"), str(dst), OPTS)
    assert (again["converted"], again["skipped"]) == (1, 6)
    assert [r["path"] for r in again["per_image"] if r["status"] == "converted"] == ["p.png"]
    assert np.array_equal(open_image(str(dst / "p.zarr")).read(0, 60, 0, 50), want["p.png"])


def test_bad_files_are_reported_and_the_others_finish(ray_cluster, tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "out.zarr"
    src.mkdir()
    good = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(src / "good.tif", good, compression="zlib", rowsperstrip=8)
    (src / "garbage.tif").write_bytes(b"this is not a TIFF" * 10)
    (src / "text.png").write_text("not a PNG either")
    tifffile.imwrite(tmp_path / "whole.tif", good, compression="zlib", rowsperstrip=8)
    data = (tmp_path / "whole.tif").read_bytes()
    (src / "truncated.tif").write_bytes(data[: len(data) // 2])  # header fine, strips cut
    assert _cli("ingest", src, dst, "--chunk-size", "32", "--json") == 3  # some failed, as segment
    s = json.loads(capsys.readouterr().out)
    assert s["converted"] == 1 and len(s["failed"]) == 3
    errors = {os.path.basename(f["input"]): f["error"] for f in s["failed"]}
    assert set(errors) == {"garbage.tif", "text.png", "truncated.tif"}
    assert all("\n" not in e and os.path.basename(k.split(".")[0]) in e for k, e in errors.items())
    assert "chunk at rows" in errors["truncated.tif"]  # the failing window is named
    assert not (dst / "truncated.zarr").exists()  # a half-written image is removed
    assert np.array_equal(open_image(str(dst / "good.zarr")).read(0, 64, 0, 48), good)
    assert sorted(os.listdir(src)) == ["garbage.tif", "good.tif", "text.png", "truncated.tif"]

    # every file bad: exit 2, the summary still printed
    (src / "good.tif").unlink()
    assert _cli("ingest", src, tmp_path / "other.zarr", "--chunk-size", "32") == 2
    out, err = capsys.readouterr()
    assert "3 files -> " in out and "0 converted" in out and "3 failed" in out
    assert "all 3 files failed" in err
    assert not (tmp_path / "other.zarr").exists()  # the archive root this run made is removed
    (tmp_path / "empty").mkdir()  # an empty folder given: it stays, empty
    assert _cli("ingest", src, tmp_path / "empty", "--chunk-size", "32") == 2
    assert os.listdir(tmp_path / "empty") == []
    # ... but an archive that was there before stays, with what it holds
    assert _cli("ingest", src, dst, "--chunk-size", "32") == 2
    capsys.readouterr()
    assert np.array_equal(open_image(str(dst / "good.zarr")).read(0, 64, 0, 48), good)


def test_a_changed_source_is_converted_again_and_a_failed_one_loses_nothing(ray_cluster, tmp_path):
    """A user's reported cases: a file replaced by another of the same size (a re-acquired
    field) was skipped, its old pixels kept; a source cut short after its image was ingested
    (a failed copy) had that image deleted before the read failed."""
    src, dst = tmp_path / "src", tmp_path / "out.zarr"
    src.mkdir()
    rng = np.random.default_rng(3)
    first, second = (rng.integers(0, 60000, (64, 48), dtype=np.uint16) for _ in range(2))
    tifffile.imwrite(src / "f.tif", first)
    tifffile.imwrite(src / "keep.tif", first)
    assert ingest(str(src), str(dst), OPTS)["converted"] == 2
    size = (src / "f.tif").stat().st_size
    tifffile.imwrite(src / "f.tif", second)  # the same size: uncompressed, the same shape
    os.utime(src / "f.tif", ns=(1, 2_000_000_000_000_000_000))  # its time tells it apart
    assert (src / "f.tif").stat().st_size == size
    s = ingest(str(src), str(dst), OPTS)
    assert (s["converted"], s["skipped"]) == (1, 1), s
    assert np.array_equal(open_image(str(dst / "f.zarr")).read(0, 64, 0, 48), second)
    # the source cut short: the run fails it, the image of its last good version stays whole
    data = (src / "f.tif").read_bytes()
    (src / "f.tif").write_bytes(data[: len(data) // 2])
    s = ingest(str(src), str(dst), OPTS)
    assert (s["converted"], s["skipped"], len(s["failed"])) == (0, 1, 1), s
    assert np.array_equal(open_image(str(dst / "f.zarr")).read(0, 64, 0, 48), second)
    assert [e.path for e in list_images(str(dst))] == ["f.zarr", "keep.zarr"]  # no staged copy listed
    # --overwrite of a good source replaces the image in place, nothing left beside it
    tifffile.imwrite(src / "f.tif", first)
    s = ingest(str(src), str(dst), IngestOptions(chunk=32, overwrite=True))
    assert s["converted"] == 2 and np.array_equal(open_image(str(dst / "f.zarr")).read(0, 64, 0, 48), first)
    assert sorted(os.listdir(dst)) == ["f.zarr", "keep.zarr", "zarr.json"]


def test_places_and_ownership_are_checked(ray_cluster, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    tifffile.imwrite(src / "d" / "x.tif", np.ones((40, 40), np.uint8))
    with pytest.raises(SpiralrayError, match="inside SRC"):
        ingest(str(src), str(src / "out.zarr"), OPTS)
    with pytest.raises(SpiralrayError, match="inside SRC"):
        ingest(str(src), str(src), OPTS)
    with pytest.raises(SpiralrayError, match="inside DST"):
        ingest(str(src / "d"), str(src), OPTS)
    with pytest.raises(SpiralrayError, match="input not found"):
        ingest(str(tmp_path / "nope"), str(tmp_path / "o.zarr"), OPTS)
    with pytest.raises(SpiralrayError, match="output directory does not exist"):  # a mistyped DST
        ingest(str(src), str(tmp_path / "typo" / "o.zarr"), OPTS)
    assert not (tmp_path / "typo").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("someone else's")
    with pytest.raises(SpiralrayError, match="not an archive written by spiralray ingest"):
        ingest(str(src), str(foreign), OPTS)
    assert os.listdir(foreign) == ["keep.txt"]
    # an image group ingest did not write, where an output goes: reported, left alone
    dst = tmp_path / "out.zarr"
    ingest(str(src), str(dst), OPTS)
    other = tmp_path / "src2"
    other.mkdir()
    tifffile.imwrite(other / "x.tif", np.ones((40, 40), np.uint8))
    with pytest.raises(SpiralrayError, match="is the ingest archive of"):
        ingest(str(other), str(dst), OPTS)
    zarr.open_group(str(dst / "d" / "y.zarr"), mode="w").attrs["mine"] = 1
    tifffile.imwrite(src / "d" / "y.tif", np.ones((40, 40), np.uint8))
    s = ingest(str(src), str(dst), OPTS)
    assert s["skipped"] == 1 and "not written by spiralray ingest" in s["failed"][0]["error"]
    assert dict(zarr.open_group(str(dst / "d" / "y.zarr"), mode="r").attrs) == {"mine": 1}


def test_s3_prefix_to_local_archive(ray_cluster, s3, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3)
    want = _folder(tmp_path / "src")
    fs.put(str(tmp_path / "src") + "/", "spiralray-test/raw/", recursive=True)
    # the session's Ray started before the moto endpoint existed: its workers get the endpoint
    # and credentials as a cluster's would, through the tasks' runtime_env
    env = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}
    opts = IngestOptions(chunk=32, runtime_env={"env_vars": env})
    s = ingest("s3://spiralray-test/raw/", str(tmp_path / "out.zarr"), opts)
    assert (s["converted"], s["failed"]) == (len(want), [])
    assert s["input"] == "s3://spiralray-test/raw"
    for rel, a in want.items():
        node = list(Reader(parse_url(str(tmp_path / "out.zarr" / _zarr_path(rel))))())[0]
        assert np.array_equal(np.asarray(node.data[0]), a), rel
    # an archive in object storage: a changed source's image is replaced there (copied from its
    # staged conversion, which is removed), an unchanged one skipped
    dst = "s3://spiralray-test/arch.zarr"
    assert ingest("s3://spiralray-test/raw/", dst, opts)["converted"] == len(want)
    fs.put(str(tmp_path / "src" / "a" / "grey.png"), "spiralray-test/raw/p.png")  # another picture
    s = ingest("s3://spiralray-test/raw/", dst, opts)
    assert (s["converted"], s["skipped"]) == (1, len(want) - 1), s["failed"]
    got = open_image(f"{dst}/p.zarr").read(0, 40, 0, 44)
    assert np.array_equal(got, want["a/grey.png"])
    assert not [p for p in fs.find("spiralray-test/arch.zarr") if ".spiralray-staging" in p]
    # a name that reads as a pattern replaces its own image only (a reviewer's case: w[1]'s
    # replacement deleted w1.zarr's objects)
    fs.put(str(tmp_path / "src" / "p.png"), "spiralray-test/raw/w[1].png")
    fs.put(str(tmp_path / "src" / "p.png"), "spiralray-test/raw/w1.png")
    assert ingest("s3://spiralray-test/raw/", dst, opts)["converted"] == 2
    fs.put(str(tmp_path / "src" / "a" / "grey.png"), "spiralray-test/raw/w[1].png")
    s = ingest("s3://spiralray-test/raw/", dst, opts)
    assert (s["converted"], s["failed"]) == (1, []), s["failed"]
    assert np.array_equal(open_image(f"{dst}/w1.zarr").read(0, 60, 0, 50), want["p.png"])
    assert np.array_equal(open_image(f"{dst}/w[1].zarr").read(0, 40, 0, 44), want["a/grey.png"])


def test_a_replacement_stopped_part_way_loses_neither_image(tmp_path, monkeypatch):
    """A reviewer's cases, one file in this process: the move of a finished replacement failing
    (here the rename that brings it in) left neither the old image nor the new; a relative
    DST staged its replacement at the filesystem's root."""
    from spiralray.pipeline import ingest_file

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    first, second = (rng.integers(0, 60000, (40, 50), dtype=np.uint16) for _ in range(2))
    tifffile.imwrite("f.tif", first)
    assert ingest_file.convert_file("f.tif", "f.zarr", OPTS)["status"] == "converted"  # relative
    tifffile.imwrite("f.tif", second)
    os.utime("f.tif", ns=(1, 2_000_000_000_000_000_000))
    real = os.replace

    def failing(a, b):
        if str(a).endswith(os.path.join(ingest_file.STAGING, "f.zarr")):
            raise OSError("the disk went away")
        return real(a, b)

    monkeypatch.setattr(ingest_file.os, "replace", failing)
    r = ingest_file.convert_file("f.tif", "f.zarr", OPTS)
    assert r["status"] == "failed" and "the disk went away" in r["error"]
    assert np.array_equal(open_image("f.zarr").read(0, 40, 0, 50), first)  # put back
    assert (tmp_path / ingest_file.STAGING / "f.zarr").is_dir()  # the new one kept, beside it
    monkeypatch.setattr(ingest_file.os, "replace", real)
    r = ingest_file.convert_file("f.tif", "f.zarr", OPTS)  # the next run moves it in
    assert r["status"] == "converted" and r["shape"] == [40, 50]
    assert np.array_equal(open_image("f.zarr").read(0, 40, 0, 50), second)
    assert sorted(os.listdir(tmp_path)) == ["f.tif", "f.zarr"]
    (tmp_path / ingest_file.STAGING / "f.zarr").mkdir(parents=True)  # stopped before any metadata
    os.utime("f.tif", ns=(1, 3_000_000_000_000_000_000))
    assert ingest_file.convert_file("f.tif", "f.zarr", OPTS)["status"] == "converted"
