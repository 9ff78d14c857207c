"""Distributed training end to end: Ray Train with 2 workers on a real local Ray cluster,
a real MLflow sqlite store and registry, loading back by alias, resuming from checkpoints."""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from spiralray.core.config import SpiralNetConfig
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.train.ray_trainer import TrainJob, train

SHIPPED = Path(__file__).resolve().parents[1] / "spiralray" / "weights" / "spiralnet"
TINY = dict(epochs=1, workers=2, samples_per_epoch=128, scorer_batch=32, spiral_regions=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    pairs = [generate(SyntheticSpec(96, 112), seed=s) for s in range(3)]
    tifffile.imwrite(d / "images.tif", np.stack([p[0] for p in pairs]), photometric="minisblack")
    tifffile.imwrite(
        d / "labels.tif", np.stack([p[1] for p in pairs]).astype(np.uint16), photometric="minisblack"
    )
    return d


@pytest.fixture(scope="module")
def trained(ray_cluster, mlflow_store, dataset, tmp_path_factory):
    storage = tmp_path_factory.mktemp("ray_results")
    # Two sources (a PATH:FRAMES one), validation data of its own, synthetic frames, and a
    # fine-tune from the shipped model: the default model's recipe in miniature.
    job = TrainJob(
        data=[f"{dataset}:0", f"{dataset}:1"],
        val_data=[f"{dataset}:2"],
        synthetic=1,
        synthetic_size=96,
        init=str(SHIPPED),
        skip_inner=40,  # the shipped segmenter grown (train.widen), then trained
        contact_weight=2.0,  # segmenter training aimed at touching nuclei
        contact_fraction=0.5,
        register="spiral-smoke",
        alias="champion",
        storage=str(storage),
        name="smoke",
        **TINY,
    )
    return job, train(job, log=lambda m: None)


def test_two_workers_log_register_and_alias(trained, mlflow_store):
    import mlflow

    job, out = trained
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("spiral-smoke", "champion")
    assert (
        str(mv.version) == out["version"] and mv.run_id == out["run_id"]
    )  # the source run is the training run
    run = client.get_run(out["run_id"])
    assert run.data.params["workers"] == "2"
    for stage in ("scorer", "segmenter"):  # the world size each worker's Ray Train context reported
        assert run.data.metrics[f"{stage}/workers"] == 2
    history = client.get_metric_history(out["run_id"], "segmenter/segmenter_loss")
    assert len(history) == 1 and np.isfinite(history[0].value)
    assert "segmenter/val_object_f1_50" in run.data.metrics and "val_pixel_f1" in run.data.metrics
    store = os.path.dirname(mlflow_store[len("sqlite:///") :])  # artifacts beside the store, no mlruns/
    assert run.info.artifact_uri.startswith(Path(store, "mlartifacts").as_uri() + "/")
    arts = {a.path for a in client.list_artifacts(out["run_id"], "plots")}
    assert {"plots/loss_curves.png", "plots/val_overlay.png"} <= arts
    samples = [h["samples_per_s"] for h in out["stages"]["scorer"]["history"]]
    assert all(s > 0 for s in samples)


def test_load_by_alias_and_version_then_segment(trained, tmp_path):
    from spiralray import modelzoo
    from spiralray.cli import main
    from spiralray.train import registry

    job, out = trained
    by_alias = modelzoo.load("models:/spiral-smoke@champion")
    by_version = modelzoo.load(f"models:/spiral-smoke/{out['version']}")
    assert registry.describe("models:/spiral-smoke/latest")["version"] == out["version"]
    with pytest.raises(
        SpiralrayError, match="models:/spiral-smoke/Production: no version of spiral-smoke is"
    ):
        registry.describe("models:/spiral-smoke/Production")  # a stage: none was set
    for uri, says in (  # MLflow would read models:/NAME as a logged model's id
        ("models:/spiral-smoke", "models:/spiral-smoke names no version: use models:/spiral-smoke@ALIAS"),
        ("models:/spiral-smoke/first", "not a registry model URI: 'models:/spiral-smoke/first'"),
        ("models:/spiral-smoke@", "not a registry model URI"),
        (
            "models:/spiral-smoke/99",
            r"cannot load models:/spiral-smoke/99 .*: MlflowException: Model Version",
        ),
    ):
        with pytest.raises(SpiralrayError, match=says):
            modelzoo.load(uri)
    grown = modelzoo.load(str(SHIPPED)).config.replace(model={"seg_skip_inner": 40})
    assert by_alias.config == grown  # --init: the model's settings too, with --skip-inner's growth
    assert by_alias.segmenter.skips[0].a.weight.shape[0] == 40
    for a, b in zip(by_alias.state_dict().values(), by_version.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    image, _ = generate(SyntheticSpec(96, 112), seed=9)
    tifffile.imwrite(tmp_path / "i.tif", image)
    code = main(
        [
            "segment",
            str(tmp_path / "i.tif"),
            str(tmp_path / "o.tif"),
            "--model",
            "models:/spiral-smoke@champion",
        ]
    )
    assert code == 0 and tifffile.imread(tmp_path / "o.tif").shape == image.shape


def test_a_registered_init_is_recorded_as_the_version_it_names(trained):
    import dataclasses

    from spiralray.train.registry import pinned_init

    job, out = trained
    said = []
    pinned = pinned_init(dataclasses.replace(job, init="models:/spiral-smoke@champion"), said.append)
    assert pinned.init == f"models:/spiral-smoke/{out['version']}"
    assert said == [f"--init models:/spiral-smoke@champion is models:/spiral-smoke/{out['version']}"]
    assert pinned_init(job) is job  # a model directory stays as given


def test_resume_continues_from_checkpoint(trained):
    import dataclasses

    job, first = trained
    # only --name and --resume, as the run printed: its model and network come from its checkpoints
    more = dataclasses.replace(
        job, epochs=2, resume=True, register=None, alias=None, init=None, skip_inner=None
    )
    said = []
    out = train(more, log=said.append)
    assert f"--init (not given): resuming from {job.init}, what run smoke started from" in said
    assert any(
        m.startswith("resuming run smoke with its checkpoints' settings (model.seg_skip_inner") for m in said
    )
    for stage in ("scorer", "segmenter"):
        epochs = [h["epoch"] for h in out["stages"][stage]["history"]]
        assert epochs == [1, 2]  # epoch 1 came from the checkpoint, only epoch 2 ran
        assert out["stages"][stage]["history"][0] == first["stages"][stage]["history"][0]
    # resumed again with no more epochs: refused at once (a user test's finding: it redid the
    # validation, logged a second MLflow run and registered the same weights as a new version)
    with pytest.raises(
        SpiralrayError,
        match=f"run smoke has finished its 2 epochs \\(MLflow run {out['run_id']}\\): nothing to resume",
    ):
        train(more, log=said.append)
    import mlflow

    from spiralray.io.storage import load_model_dir

    assert mlflow.MlflowClient().get_run(out["run_id"]).data.params["skip_inner"] == "40"  # the network grown

    # the model holds the scorer the resume trained on (epoch 2), not the one saved beside the
    # segmenter's epoch 1
    scorer, segmenter = (load_model_dir(out["stages"][k]["checkpoint"])[0] for k in ("scorer", "segmenter"))
    old = load_model_dir(first["stages"]["scorer"]["checkpoint"])[0]
    keys = [k for k in scorer if k.startswith("scorer.")]
    assert keys and all(np.array_equal(scorer[k].numpy(), segmenter[k].numpy()) for k in keys)
    assert not all(np.array_equal(scorer[k].numpy(), old[k].numpy()) for k in keys)


def test_a_resume_starts_from_the_model_its_checkpoints_recorded(trained, tmp_path, s3):
    """--init models:/NAME@ALIAS is pinned when a run starts; the alias may move before the
    resume, which then takes the version the checkpoints recorded (on local or S3 storage).
    Another model is refused; the network config is the checkpoints'."""
    import dataclasses
    import json

    import fsspec

    from spiralray.train.resume import latest_checkpoint, resumed_config, run_record, started_from

    job, _ = trained
    ckpt = latest_checkpoint(job.storage, job.name, "segmenter")
    assert json.loads((Path(ckpt) / "config.json").read_text())["init"] == job.init  # recorded
    record = run_record(job.storage, job.name)
    said = []
    again = started_from(dataclasses.replace(job, resume=True, init=None), record, "smoke", said.append)
    assert again.init == job.init and said == [
        f"--init (not given): resuming from {job.init}, what run smoke started from"
    ]
    relative = os.path.relpath(job.init)  # the same directory, spelt another way
    assert (
        started_from(dataclasses.replace(job, resume=True, init=relative), record, "smoke").init == job.init
    )
    with pytest.raises(
        SpiralrayError, match=f"run smoke started from {job.init}: --init /elsewhere is another"
    ):
        started_from(dataclasses.replace(job, resume=True, init="/elsewhere"), record, "smoke")
    # its checkpoints' network, which their weights fit, whatever this resume's flags build
    cfg = SpiralNetConfig.from_dict(record["spiralnet"])
    resumed = resumed_config(SpiralNetConfig(), record, "smoke", said.append)
    assert cfg.model.seg_skip_inner == 40 and (resumed.model, resumed.region, resumed.spiral) == (
        cfg.model,
        cfg.region,
        cfg.spiral,
    )
    # the candidate rules (thresholds) are this run's flags', the scoring grid the run's
    rules = {**SpiralNetConfig().to_dict()["candidates"], "stride": cfg.candidates.stride}
    assert SpiralNetConfig.from_dict({**resumed.to_dict(), "candidates": rules}) == resumed
    assert (
        said[-1].startswith("resuming run smoke with its checkpoints' settings (")
        and "seg_skip_inner" in said[-1]
    )
    assert resumed_config(SpiralNetConfig(), None, "smoke") == SpiralNetConfig()  # nothing recorded
    for storage in (str(tmp_path), "s3://spiralray-test/runs"):  # a run started from version 3 of an alias
        with fsspec.open(f"{storage}/nuc-scorer/checkpoint_000001/history.json", "w", auto_mkdir=True) as f:
            f.write(json.dumps([{"epoch": 1}]))
        with fsspec.open(f"{storage}/nuc-scorer/checkpoint_000001/config.json", "w", auto_mkdir=True) as f:
            f.write(json.dumps({"init": "models:/nuc/3"}))
        moved = dataclasses.replace(job, resume=True, init="models:/nuc@champion")  # the alias moved on
        assert started_from(moved, run_record(storage, "nuc"), "nuc").init == "models:/nuc/3", storage
    record = run_record(str(tmp_path), "nuc")
    assert (
        started_from(dataclasses.replace(moved, init="models:/nuc/latest"), record, "nuc").init
        == "models:/nuc/3"
    )
    for other in ("models:/other@champion", "models:/nuc/5"):  # another model; another version by number
        with pytest.raises(
            SpiralrayError, match=f"run nuc started from models:/nuc/3: --init {other} is another"
        ):
            started_from(dataclasses.replace(job, resume=True, init=other), record, "nuc")
    with pytest.raises(
        SpiralrayError, match="run nuc started without --init: --init models:/nuc@champion is"
    ):
        started_from(moved, {"init": None}, "nuc")  # a run from scratch: an --init would mix models
    assert started_from(moved, {"spiralnet": {}}, "nuc") == moved  # a checkpoint from before the record
    assert started_from(dataclasses.replace(moved, resume=False), record, "nuc").init == moved.init
    # a checkpoint that cannot be read (here a folder where its history goes) is an error, not
    # "no checkpoint" (a resume would start afresh); one cut short by a kill is skipped
    (tmp_path / "odd-scorer" / "checkpoint_000001" / "history.json").mkdir(parents=True)
    with pytest.raises(SpiralrayError, match="cannot read the checkpoint .*checkpoint_000001: IsADirectory"):
        latest_checkpoint(str(tmp_path), "odd", "scorer")
    (tmp_path / "cut-scorer" / "checkpoint_000001").mkdir(parents=True)
    assert latest_checkpoint(str(tmp_path), "cut", "scorer") is None


def test_runs_that_would_train_nothing_or_reuse_a_name_are_refused_first(trained, tmp_path):
    """Each in one line, before any data is read or Ray is asked for anything: a name already
    used (Ray Train would restore that run's finished state instead of training), a resume of
    nothing, no epochs or workers, fewer samples than one scorer batch per worker, a registered
    name or alias MLflow would refuse after the training, no tracking store inside a Ray job."""
    import dataclasses

    job, _ = trained
    bad = {"data": str(tmp_path / "no-such-data")}  # a check that read the data would fail on it
    cases = [
        (dict(register=None, alias=None), "a run named smoke exists in .*: add --resume to continue it"),
        (dict(name="never-ran", resume=True), "no run named never-ran in .* to resume"),
        (dict(name=None, resume=True), "--resume needs the --name"),
        (dict(name=None, epochs=0), "--epochs must be at least 1, got 0"),
        (dict(name=None, workers=0), "--workers must be at least 1, got 0"),
        (
            dict(name=None, samples_per_epoch=-5),
            r"--samples -5 is under one scorer batch per worker \(32 x 2 = 64\)",
        ),
        (
            dict(name=None, register="team/nuclei"),
            "cannot register as team/nuclei@champion: Invalid model name",
        ),
        (dict(name=None, alias="latest"), "cannot register as spiral-smoke@latest: 'latest' alias name"),
        (
            dict(name=None, alias="v3"),
            "cannot register as spiral-smoke@v3: Version alias name 'v3' is reserved",
        ),
    ]
    for change, says in cases:
        with pytest.raises(SpiralrayError, match=says):
            train(dataclasses.replace(job, **bad, **change), log=lambda m: None)
    uri = os.environ.pop("MLFLOW_TRACKING_URI")  # as a submitted Ray job sees it without env_vars
    os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"] = "{}"
    try:
        with pytest.raises(
            SpiralrayError, match="MLFLOW_TRACKING_URI is not set in this Ray job .*--runtime-env-json"
        ):
            train(dataclasses.replace(job, **bad, name=None), log=lambda m: None)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        del os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"]
    # from a user test: missing data was named only after an MLflow store had been made in the
    # working folder, and an unwritable sqlite store took two minutes of retries to report
    store = tmp_path / "fresh" / "mlflow.db"
    store.parent.mkdir()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    try:
        with pytest.raises(SpiralrayError, match="data not found: .*no-such-data"):
            train(dataclasses.replace(job, **bad, name=None), log=lambda m: None)
        assert not store.exists()
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:////proc/mlflow.db"
        with pytest.raises(SpiralrayError, match="cannot write the MLflow store at /proc/mlflow.db: "):
            train(dataclasses.replace(job, name=None), log=lambda m: None)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = uri


def test_reserved_aliases_are_refused_whatever_mlflow_calls_its_checks(monkeypatch):
    """MLflow's alias validators are private and were renamed in 3.18 (CI installed it overnight
    and an alias of "latest" went on to train): the reserved aliases are refused without them."""
    from mlflow.utils import validation

    from spiralray.train.registry import check_registration

    for name in dir(validation):
        if "alias" in name and name.startswith("_validate"):
            monkeypatch.delattr(validation, name)
    for alias, says in [
        ("latest", "'latest' alias name"),
        ("Latest", "'latest'"),
        ("V12", "'V12' is reserved"),
    ]:
        with pytest.raises(SpiralrayError, match=f"cannot register as nuclei@{alias}: .*{says}"):
            check_registration("nuclei", alias)
    check_registration("nuclei", "champion")  # an alias of the user's own goes on
    check_registration("nuclei", "v2-candidate")


def test_the_train_command_refuses_a_run_that_would_train_nothing(dataset, capsys):
    """``spiralray train`` end to end up to the first check: the flags become the job, and a
    mistake is one line, exit 2, before Ray starts."""
    from spiralray.cli import main

    for flags, says in (
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (
            ["--samples", "100"],
            "--samples 100 is under one scorer batch per worker (128 x 2 = 256): nothing would train",
        ),
        (["--resume"], "--resume needs the --name of the run to continue"),
    ):
        assert main(["train", "--data", str(dataset), *flags]) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"spiralray: error: {says}"], err


def test_the_training_job_as_a_driver_of_its_own_trains_registers_and_its_model_segments(
    ray_cluster, mlflow_store, dataset, tmp_path
):
    """``python jobs/train.py`` exactly as ``ray job submit`` runs it: a driver process of its own
    that joins the running cluster, trains with the CLI's defaults (batch sizes included), prints
    its summary as the last line and registers; ``spiralray segment`` then uses the alias."""
    import json
    import subprocess
    import sys

    import mlflow

    from spiralray.cli import main

    root = Path(__file__).resolve().parents[1]
    flags = ["--data", f"{dataset}:0-1", "--val-data", f"{dataset}:2", "--epochs", "1", "--workers", "2"]
    flags += ["--samples", "256", "--zoom", "1.0", "--register", "job-smoke", "--alias", "candidate"]
    flags += ["--storage", str(tmp_path / "ckpt"), "--name", "job", "--experiment", "job-smoke"]
    flags += ["--address", ray_cluster.get_runtime_context().gcs_address]
    done = subprocess.run(
        [sys.executable, "jobs/train.py", *flags], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["version"] == "1" and 0 <= summary["object_f1_50"] <= 1 and 0 <= summary["pixel_f1"] <= 1
    assert "run job: checkpoints in" in done.stdout
    assert (
        f"MLflow: {mlflow_store}" in done.stdout and "2 training images, 1 validation images" in done.stdout
    )
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("job-smoke", "candidate")
    assert (str(mv.version), mv.run_id) == ("1", summary["run_id"])
    run = client.get_run(summary["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "job-smoke"
    assert run.data.params["workers"] == "2" and run.data.params["samples_per_epoch"] == "256"
    assert run.data.tags["training"] == "2 images" and run.data.tags["validation"] == "1 images"
    assert run.data.metrics["val_object_f1_50"] == summary["object_f1_50"]
    image, _ = generate(SyntheticSpec(96, 112), seed=11)
    tifffile.imwrite(tmp_path / "i.tif", image)
    assert (
        main(
            [
                "segment",
                str(tmp_path / "i.tif"),
                str(tmp_path / "o.tif"),
                "--model",
                "models:/job-smoke@candidate",
            ]
        )
        == 0
    )
    assert tifffile.imread(tmp_path / "o.tif").shape == image.shape
    # The job's one-line error for a mistake, exit 2, before it joins any cluster.
    bad = subprocess.run(
        [sys.executable, "jobs/train.py", *flags[:-2], "--epochs", "0"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --epochs must be at least 1, got 0", (
        bad.stderr
    )


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_run_with_exit_130_and_says_how_to_resume(
    ray_cluster, mlflow_store, dataset, tmp_path, how
):
    """Ray Train catches SIGINT itself (it may exit 1, or miss it between stages and train on):
    Ctrl-C after the scorer's first checkpoint stops the run, nothing more trains or registers.
    ``kill`` (SIGTERM, to the process alone, as a scheduler stops it) does the same: it printed
    Ray's stack dumps and no resume hint (a user test's finding)."""
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    flags = ["--data", f"{dataset}:0-1", "--val-data", f"{dataset}:2", "--epochs", "3", "--workers", "1"]
    flags += ["--samples", "256", "--storage", str(tmp_path), "--name", "ctrlc", "--register", "ctrl-c"]
    flags += ["--address", ray_cluster.get_runtime_context().gcs_address]
    run = subprocess.Popen(
        [sys.executable, "-m", "spiralray", "train", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.time() + 300
    while (
        not list(tmp_path.glob("ctrlc-scorer/checkpoint_*")) and time.time() < deadline and run.poll() is None
    ):
        time.sleep(0.5)
    if how == "SIGINT":
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C sends: to the terminal's process group
    else:
        os.kill(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 130, err[-3000:]
    assert f"interrupted: continue with --name ctrlc --storage {tmp_path} --resume" in out
    # our one line, no traceback; Ray's detached actors may still log after it (their lines are
    # streamed to the driver asynchronously), so it need not be the last line
    assert "spiralray: interrupted" in err.splitlines(), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "ctrlc-segmenter").exists()  # the next stage never started
    assert not mlflow.MlflowClient().search_registered_models(filter_string="name='ctrl-c'")


def test_registry_uris_are_read_as_mlflow_reads_them():
    from spiralray.train.registry import parse

    assert parse("models:/nuclei@champion") == ("nuclei", "champion", None)
    assert parse("models:/nuclei/3") == ("nuclei", None, "3")
    assert parse("models:/nuclei/Latest") == ("nuclei", None, "Latest")  # any case, as MLflow
    assert parse("models:/nuclei/Production") == ("nuclei", None, "Production")  # a stage
    assert parse("models:/a@b/3") == ("a@b", None, "3")  # '@' may be part of a name
    assert parse("models:/m-0123abcd") == ("m-0123abcd", None, None)  # a logged model's id
    for bad in ("models:/nuclei/first", "models:/nuclei@", "models:/", "models:/a/b/c", "nuclei/3"):
        with pytest.raises(SpiralrayError, match="not a registry model URI"):
            parse(bad)


def test_split_never_validates_on_training_frames(dataset):
    from spiralray.data.datasets import load_pairs
    from spiralray.train.split import split as _split

    pairs = load_pairs(str(dataset))

    def frames(job):
        return [
            [next(i for i, (im, _) in enumerate(pairs) if np.array_equal(im, p[0])) for p in part]
            for part in _split(job)
        ]

    data = str(dataset)
    assert frames(TrainJob(data=data, val_frames=[1])) == [[0, 2], [1]]  # all other frames train
    assert frames(TrainJob(data=data, frames=[0], val_frames=[2])) == [[0], [2]]
    assert frames(TrainJob(data=data, frames=[0, 1])) == [[0, 1], []]  # the rest may be test frames
    assert frames(TrainJob(data=data, val_images=0)) == [[0, 1, 2], []]
    assert frames(TrainJob(data=data)) == [[0, 1], [2]]
    with pytest.raises(SpiralrayError, match="both a training and a validation frame"):
        _split(TrainJob(data=data, frames=[0, 1], val_frames=[1]))
    with pytest.raises(SpiralrayError, match="no training frames"):
        _split(TrainJob(data=data, val_frames=[0, 1, 2]))


def test_several_sources_split_and_synthetic(dataset, tmp_path):
    """PATH:FRAMES sources concatenate in order; --val-data validates and every data frame
    trains; synthetic frames go to training only; one frame cannot be both."""
    from spiralray.data.datasets import load_pairs, parse_source
    from spiralray.train.split import split as _split

    other = tmp_path / "other"
    other.mkdir()
    pairs = [generate(SyntheticSpec(80, 72), seed=s) for s in (20, 21)]
    tifffile.imwrite(other / "images.tif", np.stack([p[0] for p in pairs]))
    tifffile.imwrite(other / "labels.tif", np.stack([p[1] for p in pairs]).astype(np.uint16))
    a, b = load_pairs(str(dataset)), load_pairs(str(other))
    assert parse_source(f"{dataset}:0,2") == (str(dataset), [0, 2])
    assert parse_source("s3://bucket/set") == ("s3://bucket/set", None)  # a scheme is no frame list

    def same(got, want):
        if len(got) != len(want):
            return False
        return all(np.array_equal(g[0], w[0]) for g, w in zip(got, want, strict=True))

    train, val = _split(TrainJob(data=[f"{dataset}:0,2", str(other)], val_data=[f"{dataset}:1"]))
    assert same(train, [a[0], a[2], b[0], b[1]]) and same(val, [a[1]])
    train, val = _split(TrainJob(data=[f"{dataset}:0-1", str(other)]))  # no --val-data: per source
    assert same(train, [a[0], a[1], b[0]]) and same(val, [b[1]])
    train, val = _split(
        TrainJob(data=[f"{dataset}:0"], val_data=[str(other)], synthetic=2, synthetic_preset="diverse")
    )
    assert len(train) == 3 and same(train[:1], [a[0]]) and same(val, b)
    assert train[1][0].shape == (384, 384) and train[2][1].max() > 0  # synthetic frames train
    with pytest.raises(SpiralrayError, match="both training and validation"):
        _split(TrainJob(data=[str(dataset), str(other)], val_data=[f"{dataset}:2"]))
    with pytest.raises(SpiralrayError, match="both training and validation"):
        _split(TrainJob(data=[f"{dataset}:0-1"], val_data=[f"{dataset}:1-2"]))
    # the same folder by another path, through a link, or as a copy (a user test's finding)
    (tmp_path / "link").symlink_to(other)
    for alias in (str(tmp_path / ".." / tmp_path.name / "other"), str(tmp_path / "link")):
        with pytest.raises(SpiralrayError, match="other frame all is both training and validation"):
            _split(TrainJob(data=[str(other)], val_data=[alias]))
    import shutil

    shutil.copytree(other, tmp_path / "copy")
    with pytest.raises(SpiralrayError, match=r"2 of 2 validation images are also training images"):
        _split(TrainJob(data=[str(dataset), str(other)], val_data=[str(tmp_path / "copy")]))
    with pytest.raises(SpiralrayError, match="PATH:FRAMES"):
        _split(TrainJob(data=[str(dataset), str(other)], frames=[0]))
    with pytest.raises(SpiralrayError, match="no frame 5"):
        _split(TrainJob(data=[f"{dataset}:5"]))


def test_job_arguments_make_the_job():
    """jobs/train.py's flags (spiralray.train.job_args) -> the TrainJob."""
    import argparse

    from spiralray.train.job_args import add_arguments, job_from_args

    parse = add_arguments(argparse.ArgumentParser()).parse_args
    job = job_from_args(
        parse(
            ["--data", "a:0-13", "--data", "b", "--val-data", "a:14-16", "--synthetic", "8"]
            + ["--init", "m", "--zoom", "0.5,1", "--register", "n", "--alias", "champion"]
            + ["--contact-weight", "4", "--contact-fraction", "0.5", "--small-fraction", "0.3"]
            + ["--conform-outlines", "a:0-13", "--skip-inner", "48"]
        )
    )
    assert job.skip_inner == 48
    with pytest.raises(SpiralrayError, match="bad --skip-inner -1"):
        job_from_args(parse(["--data", "a", "--skip-inner", "-1"]))
    assert job.conform == ["a:0-13"]
    with pytest.raises(SpiralrayError, match="--conform-outlines a is not one of the data sources"):
        job_from_args(parse(["--data", "a:0-13", "--conform-outlines", "a"]))
    with pytest.raises(SpiralrayError, match="bad --conform-level 1.5"):
        job_from_args(parse(["--data", "a", "--conform-outlines", "a", "--conform-level", "1.5"]))
    with pytest.raises(SpiralrayError, match="bad --conform-passes 0"):
        job_from_args(parse(["--data", "a", "--conform-passes", "0"]))
    val = job_from_args(parse(["--data", "a:0-13", "--val-data", "a:14-16", "--conform-outlines", "a:14-16"]))
    assert val.conform == ["a:14-16"]
    peeled = job_from_args(parse(["--data", "a", "--conform-outlines", "a", "--conform-level", "0.5"]))
    assert (peeled.conform, peeled.conform_level, peeled.conform_passes) == (["a"], 0.5, 1)
    assert (job.contact_weight, job.contact_fraction) == (4.0, 0.5)
    assert (job.small_fraction, job.small_area) == (0.3, 60.0)
    assert job.data == ["a:0-13", "b"] and job.val_data == ["a:14-16"] and job.synthetic == 8
    assert job.init == "m" and job.zoom == (0.5, 1.0) and job.synthetic_preset == "diverse"
    assert (job.register, job.alias) == ("n", "champion")
    assert job_from_args(parse(["--data", "a", "--frames", "0-2"])).frames == [0, 1, 2]
    with pytest.raises(SpiralrayError, match="--alias needs"):
        job_from_args(parse(["--data", "a", "--alias", "x"]))
    with pytest.raises(SpiralrayError, match="bad --contact-fraction 1.5"):
        job_from_args(parse(["--data", "a", "--contact-fraction", "1.5"]))
    with pytest.raises(SpiralrayError, match="bad --contact-weight -1"):
        job_from_args(parse(["--data", "a", "--contact-weight", "-1"]))
    with pytest.raises(SpiralrayError, match="bad --small-fraction -0.1"):
        job_from_args(parse(["--data", "a", "--small-fraction", "-0.1"]))
    with pytest.raises(SpiralrayError, match="bad --small-area 0"):
        job_from_args(parse(["--data", "a", "--small-area", "0"]))
    with pytest.raises(SpiralrayError, match="bad --tissue-fraction 2"):
        job_from_args(parse(["--data", "a", "--tissue-fraction", "2"]))
    assert job_from_args(parse(["--data", "a", "--tissue-fraction", "0.3"])).tissue_fraction == 0.3


def test_no_validation_data_reports_no_validation_metrics(ray_cluster, mlflow_store, dataset, tmp_path):
    """Without validation images the run says so; no training image is scored as validation."""
    import mlflow

    said = []
    tiny = {**TINY, "workers": 1, "samples_per_epoch": TINY["scorer_batch"]}
    out = train(TrainJob(data=str(dataset), val_images=0, storage=str(tmp_path), **tiny), log=said.append)
    assert any("no validation data" in m for m in said)
    assert out["metrics"] is None
    for stage in ("scorer", "segmenter"):
        assert not [k for h in out["stages"][stage]["history"] for k in h if k.startswith("val_")]
    run = mlflow.MlflowClient().get_run(out["run_id"])
    assert run.data.tags["validation"] == "none" and not [k for k in run.data.metrics if "val_" in k]
    named = next(m for m in said if m.startswith("run spiralray-")).split(":")[0][len("run ") :]
    assert run.info.run_name == named  # the MLflow run is named as the Ray Train runs it printed


def test_the_worker_setup_hook_drops_only_the_state_api_warning():
    """The hook a local training cluster's workers run (by its dotted path, as Ray resolves it):
    a broken hook would stop every worker, so it is loaded and run here as Ray does."""
    import logging

    from ray._common.utils import load_class
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    from spiralray.train import ray_trainer

    assert placement_group_cleaner.logger.name == ray_trainer.PG_CLEANER_LOGGER  # Ray's own logger
    load_class(f"{ray_trainer.__name__}.quiet_pg_cleaner")()
    logger = logging.getLogger(ray_trainer.PG_CLEANER_LOGGER)

    def kept(msg):
        return logger.filter(logging.LogRecord(logger.name, logging.WARNING, "", 0, msg, None, None))

    assert not kept("Failed to query ... State API may be temporarily unavailable. Continuing to monitor.")
    assert kept("Failed to clean up placement group")


def test_a_bad_mlflow_store_fails_before_any_work(tmp_path, monkeypatch, dataset):
    """A mistyped store is found before training (not after hours of it), an unreachable server
    after one try (not MLflow's minutes of retries), and reading never creates a store."""
    from spiralray.train import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqllite:///x.db")
    with pytest.raises(
        SpiralrayError, match="cannot use the MLflow store at sqllite:///x.db: unsupported URI scheme"
    ):
        train(TrainJob(data=str(dataset), **TINY))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(SpiralrayError) as err:
        registry.load("models:/spiralnet@champion")
    assert str(err.value) == (  # MLflow's own text is 500 characters of urllib3
        "cannot use the MLflow store at http://127.0.0.1:9: cannot reach the tracking server"
        " ([Errno 111] Connection refused)"
    )
    typo = tmp_path / "typo.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{typo}")
    with pytest.raises(SpiralrayError, match="no MLflow store"):
        registry.load("models:/spiralnet@champion")
    assert not typo.exists()


def test_bad_training_input(ray_cluster, mlflow_store, tmp_path, dataset):
    with pytest.raises(SpiralrayError, match="no frame 7"):
        train(TrainJob(data=str(dataset), frames=[0, 7]))
    with pytest.raises(SpiralrayError, match="not found"):
        train(TrainJob(data=str(tmp_path / "missing")))
    tifffile.imwrite(tmp_path / "images.tif", np.zeros((2, 64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((2, 64, 64), np.uint16))
    with pytest.raises(SpiralrayError, match="no objects"):
        train(TrainJob(data=str(tmp_path)))
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((2, 64, 60), np.uint16))
    with pytest.raises(SpiralrayError, match="labels are"):
        train(TrainJob(data=str(tmp_path)))
    image, ids = generate(SyntheticSpec(96, 112), seed=3)
    tifffile.imwrite(tmp_path / "images.tif", np.stack([image[:40, :40]] * 2))
    tifffile.imwrite(tmp_path / "labels.tif", np.stack([ids[:40, :40]] * 2).astype(np.uint16))
    with pytest.raises(
        SpiralrayError,
        match=r"1 training image\(s\) are smaller than one region \(52 x 58 px\), e.g. 40 x 40",
    ):
        train(TrainJob(data=str(tmp_path), val_images=1))
