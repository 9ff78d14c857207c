"""The Ray executor on a real local Ray: its output equals the in-process output (tiled ==
whole), archives of several images, a segmenter actor killed mid-job, bad images in an archive."""

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from spiralray import api
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.io.archive import list_images
from spiralray.io.output import read_table
from spiralray.io.storage import write_labels
from spiralray.pipeline.ray_exec import RayOptions
from spiralray.pipeline.run import Options
from spiralray.pipeline.segment import segment

ROPTS = RayOptions(segment_actors=2, segment_cpus=0.5, score_cpus=0.25, batch_regions=64)


@pytest.fixture(scope="module")
def engine(small_engine):
    return small_engine  # the pipeline's mechanics: the answer is the model's, whatever the model


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    image = generate(SyntheticSpec(384, 400, density=0.0009), seed=23)[0]  # 2 x 2 tiles of 256
    tifffile.imwrite(d / "img.tif", image)
    return d / "img.tif", image


@pytest.fixture(scope="module")
def whole(engine, scene):
    """The scene's labels segmented whole, in this process."""
    return api.segment_image(engine, scene[1]).labels


def _labels(out):
    return np.asarray(zarr.open_array(f"{out}/labels/instances/0", mode="r")[...])


def test_ray_output_equals_in_process_output(ray_cluster, engine, scene, whole, tmp_path):
    """(Other tile sizes give the same labels in process: test_tiling.)"""
    path, _ = scene
    ropts = dataclasses.replace(ROPTS, batch_regions=16)  # batches enough for both actors
    s = segment(
        str(path), str(tmp_path / "o.zarr"), engine, Options(tile_size=256), executor="ray", ropts=ropts
    )
    assert s["executor"] == "ray" and s["objects"] > 20
    assert np.array_equal(_labels(tmp_path / "o.zarr"), whole)
    assert len(s["busy_seconds"]) == 2  # both segmenter actors did work


def test_a_nan_padded_image_on_ray_equals_the_whole_image(ray_cluster, engine, scene, tmp_path):
    """The plan's pad value (NaN: JSON's "nan") reaches the actors: they read padding as the
    background, as the whole-image path does."""
    image = scene[1].astype(np.float32)
    image[:100] = np.nan
    image[:, 330:] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    opts = Options(tile_size=256, pad_value=float("nan"))
    s = segment(
        str(tmp_path / "nan.tif"), str(tmp_path / "o.zarr"), engine, opts, executor="ray", ropts=ROPTS
    )
    whole = api.segment_image(engine, image, pad_value=float("nan")).labels
    assert s["padded_pixels"] == int(np.isnan(image).sum()) and s["objects"] > 10
    assert np.array_equal(_labels(tmp_path / "o.zarr"), whole)


def test_one_dense_tile_is_spread_over_every_segmenter(ray_cluster, engine, tmp_path):
    """Every nucleus in one tile: its candidates still reach both segmenter actors in
    batches (a tile's candidates are not one unit of work), and the answer is unchanged."""
    nuclei = generate(SyntheticSpec(256, 256, density=0.0012), seed=5)[0]
    image = np.full((768, 768), int(np.percentile(nuclei, 5)), nuclei.dtype)
    image[:256, :256] = nuclei
    tifffile.imwrite(tmp_path / "one.tif", image)
    ropts = RayOptions(segment_actors=2, segment_cpus=0.5, score_cpus=0.25, batch_regions=8)
    s = segment(
        str(tmp_path / "one.tif"),
        str(tmp_path / "o.zarr"),
        engine,
        Options(tile_size=256),
        executor="ray",
        ropts=ropts,
    )
    by_actor = sorted(s["regions_by_actor"].values())
    assert len(by_actor) == 2 and s["candidates"] >= 40, s
    assert by_actor[0] >= 0.2 * sum(by_actor), s
    assert np.array_equal(_labels(tmp_path / "o.zarr"), api.segment_image(engine, image).labels)


def test_archive_of_images_mirrors_paths_and_reports_bad_images(ray_cluster, engine, tmp_path):
    root = zarr.open_group(str(tmp_path / "arch.zarr"), mode="w")
    imgs = {}
    for i, name in enumerate(["plate/A/1", "plate/B/2", "solo"]):
        im = generate(SyntheticSpec(300, 320, density=0.0009), seed=50 + i)[0]
        arr = root.create_array(name, shape=im.shape, chunks=(128, 128), dtype=im.dtype)
        arr[...] = im
        imgs[name] = im
    zarr.open_group(str(tmp_path / "out"), mode="w").attrs["mine"] = 1  # the user's own group
    bad = root.create_array("broken", shape=(300, 320), chunks=(128, 128), dtype="u2")
    bad[...] = 100
    (tmp_path / "arch.zarr" / "broken" / "c" / "1" / "1").write_bytes(b"garbage!" * 8)
    s = segment(
        str(tmp_path / "arch.zarr"), str(tmp_path / "out"), engine, Options(tile_size=256), ropts=ROPTS
    )
    assert s["executor"] == "ray" and s["images"] == 3
    assert (
        len(s["failed"]) == 1 and "broken" in s["failed"][0]["input"] and "chunk" in s["failed"][0]["error"]
    )
    for name, im in sorted(imgs.items()):
        got = _labels(tmp_path / "out" / name)
        # per-image normalisation: each image as if segmented alone
        assert np.array_equal(got, api.segment_image(engine, im).labels)
    # the image index (which seed ids carry) is the image's position in the sorted path list
    manifests = [
        json.loads((tmp_path / "out" / n / ".spiralray" / "manifest.json").read_text()) for n in sorted(imgs)
    ]
    assert [m["images"][0]["index"] for m in manifests] == [1, 2, 3]  # "broken" sorts first: index 0
    # one table of the archive's objects: each finished image's rows, with its path and index
    table = pq.read_table(tmp_path / "out" / "objects.parquet").to_pydict()
    assert s["objects_table"] == f"{tmp_path / 'out'}/objects.parquet" and len(table["id"]) == s["objects"]
    for name, index in zip(sorted(imgs), [1, 2, 3], strict=True):
        rows = [k for k, n in enumerate(table["image"]) if n == name]
        assert {table["image_index"][k] for k in rows} == {index}
        assert [table["seed_id"][k] for k in rows] == list(
            read_table(str(tmp_path / "out" / name))["seed_id"]
        )
    assert set(table["image"]) == set(imgs) and len(set(table["seed_id"])) == len(table["seed_id"])
    with pytest.raises(SpiralrayError, match="holds spiralray outputs"):  # not an archive of images
        list_images(str(tmp_path / "out"))
    # one zarr hierarchy: the root (the user's group, kept) down to every image's labels
    hierarchy = zarr.open_group(str(tmp_path / "out"), mode="r")
    assert dict(hierarchy.attrs) == {"mine": 1}
    assert np.array_equal(hierarchy["plate/A/1/labels/instances/0"][...], _labels(tmp_path / "out/plate/A/1"))
    # re-run with another parameter: one line for the archive, not the same refusal per image
    # (a user test's finding; the broken image is reported once the command is right)
    import shutil

    shutil.rmtree(tmp_path / "arch.zarr" / "broken")  # an image with work to do is run, not refused
    said = r"out holds another run of its 3 images \(parameters \(tile_size\) differ\): use --overwrite"
    with pytest.raises(SpiralrayError, match=said):
        segment(str(tmp_path / "arch.zarr"), str(tmp_path / "out"), engine, Options(512), ropts=ROPTS)


def test_folder_of_tiffs_and_zarr_stores(ray_cluster, engine, tmp_path):
    (tmp_path / "sub").mkdir()  # its output folder is made by the run, inside the output
    for i, name in enumerate(["f0.tif", "sub/f1.tif"]):
        calibrated = {"imagej": True, "resolution": (4, 4), "metadata": {"unit": "micron"}} if i else {}
        tifffile.imwrite(tmp_path / name, generate(SyntheticSpec(260, 300), seed=70 + i)[0], **calibrated)
    small = generate(SyntheticSpec(128, 144, density=0.0015), seed=72)[0]
    plate = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w")  # a store of images in a folder
    for well in ("A/1", "A/2"):
        plate.create_array(well, shape=small.shape, chunks=(64, 64), dtype=small.dtype)[...] = small
    zarr.create_array(str(tmp_path / "one.zarr"), shape=small.shape, dtype=small.dtype)[...] = small
    out = tmp_path.parent / (tmp_path.name + "_out")
    s = segment(str(tmp_path), str(out), engine, Options(tile_size=256), ropts=ROPTS)
    assert s["images"] == 5 and not s["failed"]
    assert (out / "sub" / "f1.zarr" / "labels" / "instances").exists()
    ms = zarr.open_group(str(out / "sub/f1.zarr/labels/instances")).attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [0.25, 0.25]}]
    assert [a.get("unit") for a in ms["axes"]] == ["micrometer"] * 2  # the image's calibration
    objects = {k: np.asarray(v) for k, v in pq.read_table(out / "objects.parquet").to_pydict().items()}
    f1, f0 = objects["image"] == "sub/f1.tif", objects["image"] == "f0.tif"  # um where known
    assert f1.sum() > 3 and np.allclose(objects["area_um2"][f1], objects["area"][f1] * 0.0625)
    assert np.allclose(objects["centroid_x_um"][f1], objects["centroid_x"][f1] * 0.25)
    assert f0.sum() > 3 and np.isnan(objects["area_um2"][f0].astype(float)).all()
    hierarchy = zarr.open_group(str(out), mode="r")  # the folder of outputs opens as zarr groups
    assert sorted(hierarchy.group_keys()) == ["f0.zarr", "one.zarr", "plate.zarr", "sub"]
    assert "labels" in hierarchy["sub/f1.zarr"] and "labels" in hierarchy["plate.zarr/A/2"]
    ref = api.segment_image(engine, small).labels
    for where in ("plate.zarr/A/1", "plate.zarr/A/2", "one.zarr"):
        assert np.array_equal(_labels(out / where), ref)


def test_images_added_to_an_archive_get_new_indices_and_ids(ray_cluster, engine, tmp_path):
    """A re-run after images arrive (sorting before the known ones) keeps every seed id unique:
    finished outputs keep their indices and the new images are numbered after them."""
    arch, out = tmp_path / "arch", tmp_path / "out"
    arch.mkdir()
    image = generate(SyntheticSpec(128, 144, density=0.0015), seed=81)[0]
    for name in ("b.tif", "c.tif"):
        tifffile.imwrite(arch / name, image)
    segment(str(arch), str(out), engine, Options(tile_size=256, ids="seed"), ropts=ROPTS)
    for name in ("a.tif", "a0.tif"):  # the same pixels: equal seeds, so only the index tells them apart
        tifffile.imwrite(arch / name, image)
    s = segment(str(arch), str(out), engine, Options(tile_size=256, ids="seed"), ropts=ROPTS)
    assert s["images"] == 4 and not s["failed"]
    index = {
        n: json.loads((out / f"{n}.zarr" / ".spiralray" / "manifest.json").read_text())["images"][0]["index"]
        for n in ("a", "a0", "b", "c")
    }
    assert index == {"b": 0, "c": 1, "a": 2, "a0": 3}
    ids = [set(np.unique(_labels(out / f"{n}.zarr"))) - {0} for n in ("a", "a0", "b", "c")]
    assert {_labels(out / f"{n}.zarr").dtype for n in ("a", "a0", "b", "c")} == {np.dtype(np.uint64)}
    assert all(ids) and len(set().union(*ids)) == sum(len(i) for i in ids)  # unique across the archive
    table = pq.read_table(out / "objects.parquet").to_pydict()  # rewritten: the finished ones too
    assert sorted(set(table["image"])) == ["a.tif", "a0.tif", "b.tif", "c.tif"]
    assert set(table["seed_id"]) == set().union(*ids)
    # from a user test: a label TIFF spiralray wrote in the archive was segmented as an image, and
    # another archive run into this output was accepted (the table lost this archive's rows)
    write_labels(str(arch / "b_labels.tif"), _labels(out / "b.zarr"))
    s = segment(str(arch), str(out), engine, Options(tile_size=256, ids="seed"), ropts=ROPTS)
    assert s["images"] == 4 and not s["failed"] and not (out / "b_labels.zarr").exists()
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "z.tif", image)
    with pytest.raises(SpiralrayError, match=f"holds the archive of {arch}, not of {other}"):
        segment(str(other), str(out), engine, Options(tile_size=256, ids="seed"), ropts=ROPTS)
    kept = pq.read_table(out / "objects.parquet").to_pydict()
    assert (kept["image"], kept["seed_id"], kept["area"]) == (table["image"], table["seed_id"], table["area"])


def test_cli_archive_names_each_image_it_could_not_segment(ray_cluster, small_model, tmp_path, capsys):
    """An archive run finishes the images it can; each one it could not segment is one line on
    stderr and the exit code says so (a job over a terabyte archive must not end "successful"
    with images silently missing)."""
    from spiralray.cli import main
    from spiralray.errors import EXIT_FAILED_IMAGES

    folder = tmp_path / "folder"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", generate(SyntheticSpec(260, 300), seed=71)[0])
    tifffile.imwrite(folder / "b.tif", generate(SyntheticSpec(260, 300), seed=72)[0])
    whole = (folder / "b.tif").read_bytes()
    (folder / "b.tif").write_bytes(whole[: len(whole) // 3])  # truncated on its way to storage
    run = ["segment", str(folder), str(tmp_path / "out"), "--segment-actors", "1", "--actor-cpus", "0.5"]
    run += ["--model", small_model]
    code = main(run)
    err = capsys.readouterr().err
    assert code == EXIT_FAILED_IMAGES != 0, err
    failed = [line for line in err.splitlines() if line.startswith("spiralray: failed:")]
    assert len(failed) == 1 and "b.tif" in failed[0], err
    assert (tmp_path / "out" / "a.zarr" / "labels" / "instances").exists()
    # the user's own file where the archive table goes: kept; the run says so and exits 3
    (folder / "b.tif").write_bytes(whole)  # repaired
    (tmp_path / "out" / "objects.parquet").write_bytes(b"mine")
    code = main(run)
    err = capsys.readouterr().err
    assert code == EXIT_FAILED_IMAGES and "failed:" not in err, err
    assert "archive table not written: " in err and "is not spiralray's archive table" in err
    assert (tmp_path / "out" / "objects.parquet").read_bytes() == b"mine"
    assert (tmp_path / "out" / "b.zarr" / "labels" / "instances").exists()
    (tmp_path / "out" / "objects.parquet").unlink()
    assert main(run) == 0  # the table written
    capsys.readouterr()
    table = (tmp_path / "out" / "objects.parquet").read_bytes()
    assert main([*run, "--ids", "seed"]) == 2  # every image refused alike: a mistake in the command
    out, err = capsys.readouterr()
    assert err.strip() == (
        f"spiralray: error: output {tmp_path / 'out'} holds another run of its 2 images "
        "(parameters (ids) differ): use --overwrite to replace them"
    )  # one line, not one per image
    assert out == ""  # no "0 objects -> OUT" line that reads like a finished run
    assert (tmp_path / "out" / "objects.parquet").read_bytes() == table  # the table stays


def test_a_segmenter_actor_killed_mid_batch_is_replaced_and_the_output_is_equal(
    ray_cluster, fault_dir, engine, scene, whole, tmp_path
):
    """The segmenter actor dies (os._exit) on its first batch of candidates, before answering
    it: Ray Data replaces the actor and runs that batch again, so the labels are the same."""
    path, _ = scene
    (fault_dir / "segment-batch").touch()
    ropts = RayOptions(segment_actors=1, segment_cpus=0.5, batch_regions=16)
    s = segment(
        str(path), str(tmp_path / "o.zarr"), engine, Options(tile_size=256), executor="ray", ropts=ropts
    )
    assert (fault_dir / "segment-batch.taken").exists(), "no segmenter actor took the fault"
    assert not (fault_dir / "segment-batch").exists()
    assert np.array_equal(_labels(tmp_path / "o.zarr"), whole)
    assert s["objects"] > 20


def test_the_demo_segments_its_archive_and_writes_what_the_readme_shows(ray_cluster, tmp_path, capsys):
    """``spiralray demo`` (README's first command), on a smaller archive: labels for every image,
    scored against the generator's truth, an overlay PNG and the summary."""
    import imageio.v3 as iio

    from spiralray.demo import run_demo

    assert run_demo(str(tmp_path / "demo"), images=2, size=384) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["images"] == 2 and summary["failed"] == [] and summary["pixels"] == 2 * 384 * 384
    assert summary["objects"] > 50 and all(f > 0.8 for f in summary["object_f1_50"]), summary
    assert iio.imread(tmp_path / "demo" / "overlay.png").shape == (384, 384, 3)
    assert f"demo: labels in {tmp_path / 'demo' / 'labels'}/ (OME-Zarr)" in printed


def test_a_segmenter_pool_no_node_can_hold_is_refused_or_warned(ray_cluster, capsys):
    """--actor-gpus on a cluster without GPUs would wait forever, silently: an embedded Ray
    (one node, which cannot grow) refuses it, naming the flag to lower; a joined cluster (which
    may autoscale) warns. This session's cluster has 2 CPUs and no GPU."""
    from spiralray.errors import SpiralrayError
    from spiralray.pipeline.ray_exec import check_placeable, check_resources

    check_resources(RayOptions(segment_cpus=0.5), embedded=True)  # fits: nothing said
    assert capsys.readouterr().err == ""
    gpus = RayOptions(segment_cpus=0.75, segment_gpus=0.5)
    with pytest.raises(SpiralrayError) as err:
        check_resources(gpus, embedded=True)
    assert str(err.value) == (
        "each segmenter actor asks for 0.75 CPU, 0.5 GPU (beside the scoring actor's 0.25 CPU), which no"
        " node of this Ray cluster has (at most 2 CPU, 0 GPU): lower --actor-gpus, or join a cluster"
        " that has them"
    )
    check_resources(gpus, embedded=False)
    assert capsys.readouterr().err.startswith(
        "spiralray: warning: each segmenter actor asks for 0.75 CPU, 0.5 GPU, which no node of this Ray"
        " cluster has (at most 2 CPU, 0 GPU); it waits until the cluster grows"
    )
    # all of the one node's CPUs: the scoring actor could never start beside it
    with pytest.raises(SpiralrayError, match="lower --actor-cpus, or join"):
        check_resources(RayOptions(segment_cpus=2), embedded=True)
    with pytest.raises(SpiralrayError, match="asks for 0.5 CPU, 1 segmenter .*: lower --actor-resources"):
        check_resources(RayOptions(segment_cpus=0.5, segment_resources={"segmenter": 1}), embedded=True)
    with pytest.raises(
        SpiralrayError, match="each segmenter replica asks for 0.5 CPU, 1 GPU .*: lower --num-gpus"
    ):
        check_placeable(
            {"CPU": 0.5, "GPU": 1},
            True,
            "segmenter replica",
            {"GPU": "--num-gpus"},
            {"CPU": 0.25},
            "HTTP ingress",
        )
