"""OME-Zarr output, manifest and resume; the user's data is never written over or deleted."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr

from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io.output import read_table

MODEL = {}  # the small model's directory (conftest.small_model): these tests are of the output


@pytest.fixture(scope="module", autouse=True)
def _small_model(small_model):
    MODEL["path"] = small_model


def run_cli(*args, env=None):
    if args[0] == "segment":
        args = (*args, "--model", MODEL["path"])
    p = subprocess.run(
        [sys.executable, "-m", "spiralray", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SPIRALRAY_LOG": os.devnull, **(env or {})},
    )
    return p.returncode, p.stdout, p.stderr


def labels_of(out):
    return np.asarray(zarr.open_array(f"{out}/labels/instances/0", mode="r")[...])


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    image, _ = generate(SyntheticSpec(520, 520, density=0.0008), seed=41)
    path = d / "img.tif"
    tifffile.imwrite(path, image)
    return path


@pytest.fixture(scope="module")
def reference(image_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    code, stdout, err = run_cli("segment", image_file, out, "--tile-size", 256, "--json")
    assert code == 0, err
    return out, json.loads(stdout.strip().splitlines()[-1])


def test_output_is_ome_zarr_that_ome_zarr_py_reads(reference, image_file):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out, summary = reference
    nodes = list(Reader(parse_url(str(out / "labels")))())
    by_name = {n.metadata.get("name"): n for n in nodes if n.metadata.get("name")}
    assert {"instances", "semantic"} <= set(by_name)
    inst = by_name["instances"]
    assert [s.__class__.__name__ for s in inst.specs] == ["Label", "Multiscales"]
    levels = [np.asarray(d) for d in inst.data]
    assert levels[0].shape == (520, 520) and levels[0].dtype == np.uint32 and len(levels) >= 2
    assert np.array_equal(levels[1], levels[0][::2, ::2])  # nearest: ids never averaged
    ids = np.unique(levels[0][levels[0] > 0])
    assert np.array_equal(ids, np.arange(1, summary["objects"] + 1))
    sem = np.asarray(by_name["semantic"].data[0])
    assert np.array_equal(sem, (levels[0] > 0).astype(np.uint8))
    assert zarr.open_group(str(out / "labels")).attrs["ome"]["labels"] == ["instances", "semantic"]
    # the table: one row per object, in id order, describing its pixels
    t = read_table(str(out))
    assert t["id"].tolist() == ids.tolist()
    k = len(ids) // 2
    ys, xs = np.nonzero(levels[0] == t["id"][k])
    assert t["area"][k] == len(ys) and t["bbox_y0"][k] == ys.min() and t["bbox_x1"][k] == xs.max() + 1
    assert abs(t["centroid_y"][k] - ys.mean()) < 1e-6 and t["regions"][k] >= 1
    assert levels[0][t["seed_y"][k], t["seed_x"][k]] == t["id"][k]
    # the same labels as a one-tile TIFF run (tiled == whole)
    code, _, err = run_cli("segment", image_file, out.parent / "whole.tif", "--tile-size", 1024)
    assert code == 0, err
    assert np.array_equal(tifffile.imread(out.parent / "whole.tif"), levels[0])
    manifest = json.loads((out / ".spiralray" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["images"][0]["input"] == str(image_file)
    assert len(manifest["model"]["weights_sha256"]) == 64 and manifest["params"]["tile_size"] == 256
    assert zarr.open_group(str(out)).attrs["spiralray"]["complete"] is True


@pytest.mark.parametrize("fault", ["tile:3", "chunk:2"])
def test_killed_run_resumes_to_the_same_output(reference, image_file, tmp_path, fault):
    out = tmp_path / "o.zarr"
    code, _, _ = run_cli("segment", image_file, out, "--tile-size", 256, env={"SPIRALRAY_FAULT": fault})
    assert code == 137  # killed part-way
    assert zarr.open_group(str(out)).attrs["spiralray"]["complete"] is False  # never looks complete
    code, stdout, err = run_cli("segment", image_file, out, "--tile-size", 256, "--json")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    # only what was missing was computed: 3 tiles written before the kill, or all of them when
    # the kill came while the labels were being written
    assert summary["tiles_reloaded"] == (3 if fault.startswith("tile") else summary["tiles"]), summary
    for key in ("objects", "candidates", "regions"):  # reloaded tiles count (a user test: regions did not)
        assert summary[key] == reference[1][key], key
    assert np.array_equal(labels_of(out), labels_of(reference[0]))  # ids included
    assert read_table(str(out))["seed_id"].tolist() == read_table(str(reference[0]))["seed_id"].tolist()
    # re-running a complete output changes nothing
    code, _, err = run_cli("segment", image_file, out, "--tile-size", 256)
    assert code == 0 and np.array_equal(labels_of(out), labels_of(reference[0]))


def test_other_parameters_on_an_existing_output_are_refused(reference, image_file, tmp_path):
    out = tmp_path / "o.zarr"
    shutil.copytree(reference[0], out)  # a finished run with --tile-size 256
    code, _, err = run_cli("segment", image_file, out, "--tile-size", 512)
    assert code == 2 and "tile_size" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("segment", image_file, out, "--tile-size", 256, "--ids", "seed")
    assert code == 2 and "ids" in err
    code, _, err = run_cli("segment", image_file, out, "--tile-size", 512, "--overwrite", "--ids", "seed")
    assert code == 0, err
    seeds = labels_of(out)
    assert seeds.dtype == np.uint64 and seeds.max() > 1000  # seed ids, not 1..N; one dtype per archive


def test_the_users_data_is_never_written_over(image_file, tmp_path):
    before = image_file.read_bytes()
    code, _, err = run_cli("segment", image_file, image_file)
    assert code == 2 and "overlap (one is, or holds, the other)" in err and image_file.read_bytes() == before
    # a directory spiralray did not write is never deleted, even with --overwrite
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli("segment", image_file, foreign, *extra)
        assert code == 2 and "not a spiralray output" in err
    assert (foreign / "precious.txt").read_text() == "keep me"
    # an OME-Zarr image given as its own output
    img = tmp_path / "img.zarr"
    zarr.create_array(str(img), shape=(200, 200), chunks=(100, 100), dtype="u2")[...] = 7
    code, _, err = run_cli("segment", img, img)
    assert code == 2 and "overlap (one is, or holds, the other)" in err
    assert (np.asarray(zarr.open_array(str(img))[...]) == 7).all()


def test_unwritable_output_fails_before_any_work(image_file, tmp_path):
    code, _, err = run_cli("segment", image_file, tmp_path / "nope" / "o.tif")
    assert code == 2 and "does not exist" in err
    (tmp_path / "d.tif").mkdir()
    code, _, err = run_cli("segment", image_file, tmp_path / "d.tif")
    assert code == 2 and "is a directory" in err
    assert not list(tmp_path.glob("*.partial"))


def test_an_output_written_before_a_new_setting_existed_still_resumes():
    """A manifest that predates a setting (written before ``candidates.faint_*`` or
    ``pad_value``) matches this run when the setting is at its default, and a changed setting
    still refuses."""
    from spiralray.core.config import SpiralNetConfig
    from spiralray.pipeline.run import Options, mismatch

    cfg = SpiralNetConfig()
    new = {"version": 1, "images": [], "model": {"weights_sha256": "w"}, "params": Options().params(cfg)}
    old = json.loads(json.dumps(new))
    for key in ("faint_contrast", "faint_area"):
        del old["params"]["candidates"][key]
    del old["params"]["pad_value"]
    assert mismatch(old, new) is None
    assert mismatch(old, {**new, "params": Options(pad_value=0.0).params(cfg)}) == "parameters (pad_value)"
    faint = cfg.replace(candidates={"faint_contrast": 0.2, "faint_area": 400})
    assert mismatch(old, {**new, "params": Options().params(faint)}) == "parameters (candidates)"


def test_an_overwrite_stopped_while_removing_leaves_an_output_of_its_own(reference, image_file, tmp_path):
    """A reviewer's case: --overwrite deleted the manifest first, so a run stopped right after
    left an output every later run called foreign. The manifest now first says incomplete and
    goes last: stopped while removing, the output resumes (or is replaced) as its own."""
    from spiralray.io import output as output_module
    from spiralray.io.output import Output

    out = tmp_path / "o.zarr"
    shutil.copytree(reference[0], out)
    real = output_module.delete

    def stopped(fs, path):
        if path.endswith("objects.parquet"):
            raise KeyboardInterrupt
        real(fs, path)

    output_module.delete = stopped
    try:
        with pytest.raises(KeyboardInterrupt):
            Output(str(out)).remove()
    finally:
        output_module.delete = real
    assert not (out / "labels" / "instances").exists() and (out / "objects.parquet").exists()
    assert json.loads((out / ".spiralray" / "manifest.json").read_text())["complete"] is False
    code, stdout, err = run_cli("segment", image_file, out, "--tile-size", 256, "--json")
    assert code == 0, err  # the same run: resumed from its tile records, labels written again
    assert json.loads(stdout.strip().splitlines()[-1])["tiles_reloaded"] == reference[1]["tiles"]
    assert np.array_equal(labels_of(out), labels_of(reference[0]))
