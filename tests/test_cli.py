import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import tifffile

from spiralray.cli import main
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io.storage import write_labels


def run_cli(*args, cwd=None, env=None):
    """The real console entry point in a subprocess: what a user sees."""
    p = subprocess.run(
        [sys.executable, "-m", "spiralray", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, **env} if env else None,
    )
    return p.returncode, p.stdout, p.stderr


def test_evaluate_json(tmp_path):
    t = np.zeros((40, 40), np.uint16)
    t[2:12, 2:12] = 1
    t[20:30, 20:30] = 2
    p = t.copy()
    p[p == 2] = 0
    tifffile.imwrite(tmp_path / "t.tif", t)
    tifffile.imwrite(tmp_path / "p.tif", p)
    code, out, err = run_cli("evaluate", tmp_path / "p.tif", tmp_path / "t.tif", "--json")
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["n_pred"] == 1 and s["n_truth"] == 2 and s["object_f1_50"] == pytest.approx(2 / 3)
    for key in ("pixel_f1", "pixel_precision", "pixel_recall", "object_f1_mean_50_90"):
        assert key in s
    tifffile.imwrite(tmp_path / "t1.tif", t[None])  # truth saved as a one-frame stack: its frame
    code, out, err = run_cli("evaluate", tmp_path / "p.tif", tmp_path / "t1.tif", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["object_f1_50"] == s["object_f1_50"], err


def test_evaluate_refuses_an_intensity_image_and_reads_a_mask_as_its_regions(tmp_path):
    image, truth = generate(SyntheticSpec(120, 140), seed=3)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint16))
    code, out, err = run_cli("evaluate", tmp_path / "image.tif", tmp_path / "truth.tif")
    assert code == 2 and "image.tif is not a label image" in err and len(err.strip().splitlines()) == 1
    apart = np.zeros((60, 60), np.uint8)  # two separate objects, as a 0/1 mask and as labels
    apart[5:20, 5:20], apart[30:50, 30:50] = 1, 2
    tifffile.imwrite(tmp_path / "mask.tif", (apart > 0).astype(np.uint8))
    tifffile.imwrite(tmp_path / "apart.tif", apart)
    code, out, err = run_cli("evaluate", tmp_path / "mask.tif", tmp_path / "apart.tif", "--json")
    assert code == 0 and "over 2 separate regions: read as a mask" in err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["n_pred"] == 2 and s["object_f1_50"] == 1.0
    ignore = apart.astype(np.int16)
    ignore[55:, 55:] = -1  # an "ignore" value: not an object id
    tifffile.imwrite(tmp_path / "ignore.tif", ignore)
    code, out, err = run_cli("evaluate", tmp_path / "apart.tif", tmp_path / "ignore.tif")
    assert code == 2 and "ignore.tif is not a label image: it holds negative ids (as low as -1)" in err


def test_evaluate_says_when_prediction_and_truth_look_swapped(tmp_path):
    image, truth = generate(SyntheticSpec(120, 140), seed=3)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint16))
    assert run_cli("segment", tmp_path / "image.tif", tmp_path / "pred.tif")[0] == 0
    code, out, err = run_cli("evaluate", tmp_path / "truth.tif", tmp_path / "pred.tif", "--json")
    assert code == 0 and "pred.tif is spiralray's output and" in err and "`evaluate PREDICTION TRUTH`" in err
    assert "`evaluate PREDICTION TRUTH`" in json.loads(out.strip().splitlines()[-1])["notes"][0]
    code, out, err = run_cli("evaluate", tmp_path / "pred.tif", tmp_path / "truth.tif", "--json")
    assert code == 0 and err == "" and "notes" not in json.loads(out.strip().splitlines()[-1])


def test_evaluate_reads_an_output_by_its_labels_path_and_refuses_an_unfinished_one(tmp_path):

    image, truth = generate(SyntheticSpec(120, 140), seed=3)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint16))
    assert run_cli("segment", tmp_path / "image.tif", tmp_path / "o.zarr")[0] == 0
    scores = [
        json.loads(run_cli("evaluate", tmp_path / p, tmp_path / "truth.tif", "--json")[1].splitlines()[-1])
        for p in ("o.zarr", "o.zarr/labels", "o.zarr/labels/instances/0")
    ]
    assert scores[0] == scores[1] == scores[2] and scores[0]["n_pred"] > 0
    manifest = tmp_path / "o.zarr" / ".spiralray" / "manifest.json"  # as a run killed midway leaves it
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    before = _files(tmp_path / "o.zarr")
    code, out, err = run_cli("evaluate", tmp_path / "o.zarr", tmp_path / "truth.tif")
    assert code == 2 and "is an unfinished spiralray output: run its segment command again" in err
    assert _files(tmp_path / "o.zarr") == before  # nothing was touched


def _files(root) -> dict:
    """Every file under ``root``: relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_segment_writes_uint32_labels_and_finds_nuclei(tmp_path):
    image, truth = generate(SyntheticSpec(160, 200), seed=11)
    tifffile.imwrite(tmp_path / "in.tif", image)
    code, out, err = run_cli("segment", tmp_path / "in.tif", tmp_path / "out.tif", "--json")
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "out.tif")
    assert labels.dtype == np.uint32 and labels.shape == image.shape
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["objects"] == len(np.unique(labels)) - 1 > 0.5 * truth.max()


@pytest.mark.parametrize(
    "make,expected",
    [
        (None, "input not found"),
        (lambda p: p.write_bytes(b"not a tiff at all"), "cannot read"),
        (
            lambda p: tifffile.imwrite(p, np.full((3, 80, 80, 5), 1, np.uint16)),
            "does not say what its axes 0, 1 are",
        ),
        (lambda p: tifffile.imwrite(p, np.full((80, 80), np.nan, np.float32)), "NaN"),
        (lambda p: tifffile.imwrite(p, np.ones((30, 300), np.uint16)), "smaller than one region"),
    ],
)
def test_segment_bad_input_is_one_line_no_traceback(tmp_path, make, expected, capsys):
    src = tmp_path / "in.tif"
    if make:
        make(src)
    code = main(["segment", str(src), str(tmp_path / "out.tif")])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.tif").exists()


def test_segment_constant_image_gives_zero_objects(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "c.tif", np.full((100, 120), 500, np.uint16))
    assert main(["segment", str(tmp_path / "c.tif"), str(tmp_path / "o.tif")]) == 0
    assert not tifffile.imread(tmp_path / "o.tif").any()
    assert "0 objects (constant image) ->" in capsys.readouterr().out  # why, without --json


def test_tiff_output_replaces_only_its_own_file_and_only_when_asked(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "i.tif", image)
    foreign = tmp_path / "mine.tif"
    tifffile.imwrite(foreign, np.arange(12, dtype=np.uint16).reshape(3, 4))
    before = foreign.read_bytes()
    for extra in ([], ["--overwrite"]):  # never a file spiralray did not write
        assert main(["segment", str(tmp_path / "i.tif"), str(foreign), *extra]) == 2
        assert "was not written by spiralray" in capsys.readouterr().err
        assert foreign.read_bytes() == before
    own = tmp_path / "o.tif"
    assert main(["segment", str(tmp_path / "i.tif"), str(own)]) == 0
    found = tifffile.imread(own)
    assert found.max() > 1
    write_labels(own, np.ones_like(found))  # spiralray's, but not this run's answer
    first = own.read_bytes()
    assert main(["segment", str(tmp_path / "i.tif"), str(own)]) == 2  # its own: only when asked
    assert "--overwrite" in capsys.readouterr().err and own.read_bytes() == first
    assert main(["segment", str(tmp_path / "i.tif"), str(own), "--overwrite"]) == 0
    assert np.array_equal(tifffile.imread(own), found)
    assert main(["segment", str(tmp_path / "i.tif"), "s3://bucket/o.tif"]) == 2
    assert "local path" in capsys.readouterr().err


def test_output_folder_is_never_created_and_a_plain_file_is_never_an_output(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "i.tif", image)
    for out in ("nope/o.zarr", "nope/o.tif"):  # a mistyped folder
        assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / out)]) == 2
        assert "output directory does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()
    plain = tmp_path / "file.zarr"
    plain.write_bytes(b"someone's data")
    assert main(["segment", str(tmp_path / "i.tif"), str(plain), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a spiralray output" in err and len(err.strip().splitlines()) == 1
    assert plain.read_bytes() == b"someone's data"


def test_an_output_given_as_input_is_one_line(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "i.tif", image)
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.zarr")]) == 0
    assert "already complete" not in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.zarr")]) == 0  # nothing left
    assert "already complete: nothing done" in capsys.readouterr().out
    main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.tif")])
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o.zarr"), str(tmp_path / "o.tif"), "--json"]) == 0  # by group
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["object_f1_50"] == 1.0
    code, _, err = run_cli("segment", tmp_path / "o.zarr", tmp_path / "again.tif")
    assert code == 2 and "is a spiralray output" in err
    assert len(err.strip().splitlines()) == 1, err  # no zarr warnings about the table beside it


def test_plane_naming_an_absent_axis_says_so(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "zyx.tif", np.stack([image, image]), metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "yx.tif", image)
    assert main(["segment", str(tmp_path / "zyx.tif"), str(tmp_path / "o.tif"), "--plane", "t=0"]) == 2
    assert "axis 't'" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "yx.tif"), str(tmp_path / "o.tif"), "--plane", "0"]) == 2
    assert "single plane" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "zyx.tif"), str(tmp_path / "o.tif"), "--plane", "z=1,z=0"]) == 2
    assert "bad --plane 'z=1,z=0': axis z is named twice" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "zyx.tif"), str(tmp_path / "o.tif"), "--plane", "z=1"]) == 0
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([image] * 3))  # tifffile marks 3 pages as RGB
    assert main(["segment", str(tmp_path / "rgb.tif"), str(tmp_path / "o3.tif"), "--plane", "2"]) == 2
    assert "3 planes are channels by its metadata" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "rgb.tif"), str(tmp_path / "o3.tif"), "--channel", "2"]) == 0


def test_segment_picks_a_channel(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([np.zeros_like(image), image]))
    assert main(["segment", str(tmp_path / "rgb.tif"), str(tmp_path / "o.tif"), "--channel", "1"]) == 0
    assert tifffile.imread(tmp_path / "o.tif").any()
    assert main(["segment", str(tmp_path / "rgb.tif"), str(tmp_path / "o5.tif"), "--channel", "5"]) == 2
    assert "channel 5 out of range" in capsys.readouterr().err


def test_segment_unknown_model_and_output_format(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "i.tif", image)
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.tif"), "--model", str(tmp_path)]) == 2
    assert (
        "not a spiralray model directory (needs model.safetensors and config.json)" in capsys.readouterr().err
    )
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.bmp")]) == 2
    assert "output format" in capsys.readouterr().err


def test_semantic_tiff_is_the_labels_foreground(tmp_path):
    image, _ = generate(SyntheticSpec(120, 140), seed=4)
    tifffile.imwrite(tmp_path / "i.tif", image)
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "ids.tif")]) == 0
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "mask.tif"), "--semantic"]) == 0
    ids, mask = tifffile.imread(tmp_path / "ids.tif"), tifffile.imread(tmp_path / "mask.tif")
    assert ids.dtype == np.uint32 and ids.max() > 3
    assert mask.dtype == np.uint8 and np.array_equal(mask, (ids > 0).astype(np.uint8))


def test_an_output_of_another_input_or_model_is_refused_and_kept(tmp_path, capsys):
    import torch

    from spiralray import modelzoo

    a, _ = generate(SyntheticSpec(120, 140), seed=4)
    b, _ = generate(SyntheticSpec(120, 140), seed=5)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    net = modelzoo.load(None)
    with torch.no_grad():  # the same network, other weights
        next(net.segmenter.parameters()).add_(1e-3)
    modelzoo.save(net, tmp_path / "other")
    out = tmp_path / "o.zarr"
    assert main(["segment", str(tmp_path / "a.tif"), str(out)]) == 0
    kept = _files(out)
    capsys.readouterr()
    for extra, differs in (
        ([str(tmp_path / "b.tif")], "input paths"),
        ([str(tmp_path / "a.tif"), "--model", str(tmp_path / "other")], "models"),
    ):
        assert main(["segment", *extra[:1], str(out), *extra[1:]]) == 2
        err = capsys.readouterr().err
        assert f"holds another run ({differs} differ): use --overwrite to replace it" in err, err
        assert _files(out) == kept
    # found in a user test: the input's path rewritten with another image of the same shape was
    # called complete (or, interrupted, resumed with the old image's tiles): its bytes are recorded
    tifffile.imwrite(tmp_path / "a.tif", a[::-1].copy())
    assert main(["segment", str(tmp_path / "a.tif"), str(out)]) == 2
    assert (
        "holds another run (input contents differ: the sizes or modification times of its stored"
        " files): use --overwrite" in capsys.readouterr().err
    )
    assert _files(out) == kept
    tifffile.imwrite(tmp_path / "a.tif", a)  # the same pixels, the file written again: its time
    assert main(["segment", str(tmp_path / "a.tif"), str(out)]) == 2  # (bytes are not read twice)
    capsys.readouterr()
    # another channel of the same image is named as such (a user test read 'inputs differ')
    tifffile.imwrite(tmp_path / "c.ome.tif", np.stack([a, b]), ome=True, metadata={"axes": "CYX"})
    chan = tmp_path / "c.zarr"
    assert main(["segment", str(tmp_path / "c.ome.tif"), str(chan), "--channel", "0"]) == 0
    assert main(["segment", str(tmp_path / "c.ome.tif"), str(chan), "--channel", "1"]) == 2
    assert "holds another run (input planes or channels differ)" in capsys.readouterr().err
    # found in a user test: --overwrite deleted the output before a run the image then refused
    # (NaN pixels, too small, a diameter it cannot hold), and files a user had put inside it
    bad = a.astype(np.float32)
    bad[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    tifffile.imwrite(tmp_path / "line.tif", a[:1])
    for extra in (["nan.tif"], ["line.tif"], ["a.tif", "--diameter", "8um"]):
        assert main(["segment", str(tmp_path / extra[0]), str(out), *extra[1:], "--overwrite"]) == 2
        assert _files(out) == kept, extra
    capsys.readouterr()
    (out / "analysis").mkdir()
    (out / "analysis" / "results.csv").write_text("precious")
    (out / "labels" / "NOTES.md").write_text("mine")
    assert main(["segment", str(tmp_path / "b.tif"), str(out), "--overwrite"]) == 0
    assert _files(out) != kept
    assert (out / "analysis" / "results.csv").read_text() == "precious"
    assert (out / "labels" / "NOTES.md").read_text() == "mine"
    assert main(["evaluate", str(out), str(out)]) == 0  # the new labels read


def test_segment_exclude_border_drops_only_cut_objects(tmp_path):
    image, _ = generate(SyntheticSpec(160, 200), seed=11)
    tifffile.imwrite(tmp_path / "in.tif", image)
    code, _, err = run_cli("segment", tmp_path / "in.tif", tmp_path / "all.tif")
    assert code == 0, err
    code, _, err = run_cli("segment", tmp_path / "in.tif", tmp_path / "inner.tif", "--exclude-border")
    assert code == 0, err
    full, inner = tifffile.imread(tmp_path / "all.tif"), tifffile.imread(tmp_path / "inner.tif")
    edge = np.concatenate([full[0], full[-1], full[:, 0], full[:, -1]])
    cut = set(np.unique(edge[edge > 0]))
    assert cut, "the test image needs a nucleus cut by the border"
    inner_edge = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    assert not inner_edge.any()
    kept = [i for i in np.unique(full[full > 0]) if i not in cut]
    assert len(np.unique(inner[inner > 0])) == len(kept)
    for i in kept:  # every other object is unchanged, pixel for pixel
        assert np.array_equal(full == i, inner == inner[full == i][0])


def test_user_fixable_problems_are_one_line_exit_2(tmp_path, capsys):
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(tmp_path / "i.tif", image)
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (broken / "config.json").write_text("{not json")
    # from a user test: a hand-edited config (the README's faint_contrast) with a typo was
    # ignored, a mistyped value was an internal error, weights of another width 12 lines
    import shutil

    from spiralray.modelzoo import default_model_dir

    edited = {}
    for name, change in (
        ("typo", {"faint_contrat": 0.2}),
        ("type", {"threshold": "high"}),
        ("wide", None),
        ("newer", {"halo_rule": 2}),
    ):
        edited[name] = tmp_path / name
        shutil.copytree(default_model_dir(), edited[name])
        config = json.loads((edited[name] / "config.json").read_text())
        if name == "newer":  # a setting this version lacks, saved by a later spiralray
            config["spiralray_version"] = "9.0.0"
        if change:
            config["spiralnet"]["candidates"].update(change)
        else:
            config["spiralnet"]["model"]["seg_trunk"] = 32
        (edited[name] / "config.json").write_text(json.dumps(config))
    cases = [
        (["--model", str(broken)], "broken model directory"),
        (
            ["--model", str(edited["typo"])],
            "unknown setting candidates.faint_contrat (did you mean candidates.faint_contrast?)",
        ),
        (
            ["--model", str(edited["type"])],
            "config.json: setting candidates.threshold is 'high', expected a number",
        ),
        (["--model", str(edited["wide"])], "size mismatch for"),
        (
            ["--model", str(edited["newer"])],
            f"was saved by spiralray 9.0.0, newer than this {version('spiralray')}: unknown setting"
            " candidates.halo_rule; upgrade spiralray to use it",
        ),
        (["--batch-size", "0"], "batch size"),
        (["--threads", "0"], "--threads"),
        (["--device", "tpu7"], "device"),
        (["--tile-size", "100"], "tile size"),
        (["--plane", "z=x"], "--plane"),
    ]
    for extra, expected in cases:
        code = main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.tif"), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert expected in err and len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert main(["segment", "gcs://bucket/x.zarr", str(tmp_path / "o.tif")]) == 2
    assert "gcs" in capsys.readouterr().err
    # an output without an extension (a user test: "unsupported output format 'none'")
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "labels" / "nuclei")]) == 2
    assert "unsupported output format: the name has no extension" in capsys.readouterr().err


def test_constant_channels_last_image_keeps_its_shape(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.full((90, 110, 3), 7, np.uint8))
    assert main(["segment", str(tmp_path / "c.tif"), str(tmp_path / "o.tif"), "--channel", "1"]) == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.shape == (90, 110) and not out.any()


def test_details_go_to_the_log_file_and_with_verbose_to_the_terminal(tmp_path):
    """A user mistake: one line on stderr, its traceback in the log file; ``--verbose`` (before
    or after the command) shows the details on the terminal too."""
    log = tmp_path / "spiralray.log"
    env = {"SPIRALRAY_LOG": str(log)}
    code, _, err = run_cli("segment", tmp_path / "nope.tif", tmp_path / "o.tif", env=env)
    assert code == 2 and err.strip().splitlines() == [
        f"spiralray: error: input not found: {tmp_path / 'nope.tif'}"
    ]
    assert "Traceback" in log.read_text() and "SpiralrayError: input not found" in log.read_text()
    for args in (
        ("--verbose", "segment", tmp_path / "nope.tif", tmp_path / "o.tif"),
        ("segment", tmp_path / "nope.tif", tmp_path / "o.tif", "-v"),
    ):
        code, _, err = run_cli(*args, env=env)
        assert (
            code == 2
            and "Traceback" in err
            and err.strip().splitlines()[-1].startswith("spiralray: error: input")
        )


def test_where_it_runs_and_with_how_many_threads(tmp_path, monkeypatch):
    """``--executor auto``: this process for one small local image, Ray for an archive, a URL,
    a large image or a given address; ``--threads`` defaults to the CPUs this process may use."""
    from spiralray.pipeline.segment import RAY_PIXELS, choose_executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    small = tmp_path / "i.tif"
    image, _ = generate(SyntheticSpec(100, 120), seed=2)
    tifffile.imwrite(small, image)
    (tmp_path / "archive").mkdir()
    tifffile.imwrite(tmp_path / "archive" / "a.tif", image)
    assert choose_executor(str(small), "auto", None, image.shape) == "local"
    assert choose_executor(str(small), "auto", None, (RAY_PIXELS // 1000 + 1, 1000)) == "ray"
    assert choose_executor(str(tmp_path / "archive"), "auto", None) == "ray"
    assert choose_executor("s3://bkt/i.tif", "auto", None) == "ray"
    assert choose_executor(str(small), "auto", "ray://head:10001", image.shape) == "ray"
    assert choose_executor(str(small), "local", "ray://head:10001", image.shape) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # inside a Ray job
    assert choose_executor(str(small), "auto", None, image.shape) == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    # one CPU allowed (taskset, a cgroup): one thread, whatever the machine has
    pinned = subprocess.run(
        [sys.executable, "-m", "spiralray", "segment", str(small), str(tmp_path / "o.tif"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    summary = json.loads(pinned.stdout.strip().splitlines()[-1])
    assert pinned.returncode == 0 and summary["threads"] == 1 and summary["executor"] == "local", (
        pinned.stderr
    )


def test_command_line_mistakes_are_one_line(tmp_path, capsys):
    """From a user test: argparse's mistakes printed a 15-line usage block; a missing input
    whose output existed was reported as 'output exists'; --semantic with an OME-Zarr output
    was silently ignored; there was no --version."""
    tifffile.imwrite(tmp_path / "i.tif", generate(SyntheticSpec(100, 120), seed=2)[0])
    for argv, words in (
        (
            ["segment", "i.tif", "o.tif", "--channel", " "],
            "argument --channel: give a channel number or name",
        ),
        (
            ["segment", "i.tif", "o.tif", "--tile-size", "abc"],
            "argument --tile-size: invalid int value: 'abc'",
        ),
        (["segmnt"], "invalid choice: 'segmnt'"),
        (["segment"], "the following arguments are required: input, output"),
        # a prefix is not taken for the option it begins (--segment-actor for --segment-actors)
        (["segment", "i.tif", "o.tif", "--segment-actor", "2"], "unrecognized arguments: --segment-actor"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "o.tif").write_bytes(b"")  # an output there: the missing input is the news
    assert main(["segment", str(tmp_path / "nope.tif"), str(tmp_path / "o.tif")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.zarr"), "--semantic"]) == 2
    assert "--semantic is for a TIFF output" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("spiralray ")


def test_a_python_without_the_dependencies_is_named(tmp_path):
    """From a user test: a job run by a Python without spiralray's dependencies (Ray started
    outside the environment) printed 'internal error: ModuleNotFoundError' and a log path on the
    node. It is the environment: said so, in one line."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    missing = "raise ModuleNotFoundError(\"No module named 'skimage'\", name='skimage')\n"
    (blocker / "skimage.py").write_text(missing)  # as if scikit-image were not installed
    tifffile.imwrite(tmp_path / "i.tif", generate(SyntheticSpec(100, 120), seed=2)[0])
    p = subprocess.run(
        [sys.executable, "-m", "spiralray", "segment", tmp_path / "i.tif", tmp_path / "o.tif"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(blocker), "SPIRALRAY_LOG": os.devnull},
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        f"spiralray: error: No module named 'skimage' in {sys.executable}: run spiralray with the "
        "Python it is installed in (on a Ray cluster, `ray start` from that environment on every node)"
    )


def test_a_ray_node_without_the_dependencies_is_named(tmp_path, capsys, monkeypatch):
    """A review's finding: a Ray task's ModuleNotFoundError (Ray makes its error an instance of
    the cause) printed Ray's whole traceback and named the driver's Python, which was fine."""
    import ray.exceptions

    import spiralray.cli as cli

    def on_ray(args):
        cause = ModuleNotFoundError("No module named 'skimage'")
        raise ray.exceptions.RayTaskError("plan", "Traceback ...\n  ...", cause).as_instanceof_cause()

    monkeypatch.setattr(cli, "cmd_segment", on_ray)
    assert cli.main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.tif")]) == 2
    assert capsys.readouterr().err.strip() == (
        "spiralray: error: No module named 'skimage' in a Ray node's Python: run spiralray with the "
        "Python it is installed in (on a Ray cluster, `ray start` from that environment on every node)"
    )
