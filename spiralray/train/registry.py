"""The only module that touches MLflow: runs, metrics, artifacts, the model registry.

A registered version is a models-from-code pyfunc (``mlflow_model.py`` logged as code) whose
artifact is a spiralray model directory (safetensors weights + config.json): nothing pickled,
no shapes frozen. Tracking URI: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
working directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import SpiralrayError
from ..io.readers import one_line

MODEL_CODE = os.path.join(os.path.dirname(__file__), "mlflow_model.py")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"


def _sqlite_file(uri: str) -> str | None:
    """The absolute path of a ``sqlite:///`` store's file; None for any other store."""
    return os.path.abspath(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_store(create: bool) -> None:
    """Fail at once, before any work, on a tracking store that cannot be used: an unsupported
    scheme, an unreachable server (one try, not MLflow's minutes of retries), or a sqlite file
    that does not exist when only reading (``create`` False): a mistyped path must not create
    an empty store, nor a run's hours end in an error at registration."""
    uri = tracking_uri()
    path = _sqlite_file(uri)
    if path:
        if not create and not os.path.isfile(path):
            raise SpiralrayError(f"no MLflow store at {path} (set MLFLOW_TRACKING_URI to yours)")
        if create and not os.path.isdir(os.path.dirname(path)):
            raise SpiralrayError(f"the MLflow store's folder does not exist: {os.path.dirname(path)}")
        if create:  # tried, not asked (os.access says yes to root): sqlite retries for minutes
            _check_writable(path)
    from unittest import mock

    mlflow = _mlflow()
    try:
        with mock.patch.dict(os.environ, _ONE_TRY):  # the user's settings back afterwards
            mlflow.MlflowClient().search_registered_models(max_results=1)
    except Exception as exc:
        raise SpiralrayError(f"cannot use the MLflow store at {uri}: {_store_problem(exc)}") from None


def _check_writable(path: str) -> None:
    import tempfile

    try:  # the file, and its folder (where sqlite makes its journal)
        if os.path.exists(path):
            open(path, "ab").close()
        tempfile.TemporaryFile(dir=os.path.dirname(path)).close()
    except OSError as exc:
        raise SpiralrayError(f"cannot write the MLflow store at {path}: {one_line(exc)}") from None


def check_registration(name: str | None, alias: str | None) -> None:
    """MLflow's own rules for a registered model's name and alias, before any training: a run's
    hours must not end in a refused registration ("latest" and "v3" are reserved aliases; a name
    holds no "/" or ":"). MLflow's validators are private and renamed between releases (3.18
    renamed the alias ones), so each is looked up by its names, and the reserved aliases, which
    MLflow documents, are also checked here."""
    if name is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation as v

    def rule(*names):
        return next((getattr(v, n) for n in names if hasattr(v, n)), lambda _: None)

    try:
        rule("_validate_model_name")(name)
        if alias is not None:
            rule("_validate_model_alias_name", "_validate_alias_name")(alias)
            rule("_validate_model_alias_name_reserved", "_validate_alias_name_reserved")(alias)
            _reserved_alias(alias)
    except (MlflowException, ValueError) as exc:
        raise SpiralrayError(
            f"cannot register as {name}{'@' + alias if alias else ''}: {getattr(exc, 'message', exc)}"
        ) from None


def _reserved_alias(alias: str) -> None:
    """MLflow reserves "latest" (any case) and "v" + a version number for itself."""
    if alias.lower() == "latest":
        raise ValueError("'latest' alias name (case insensitive) is reserved.")
    if re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"Version alias name '{alias}' is reserved.")


def check_job_store() -> None:
    """Inside a submitted Ray job (``ray job submit`` does not pass the shell's environment) an
    unset ``MLFLOW_TRACKING_URI`` means a store in the job's working directory, which Ray deletes
    with the job: the run and its registered model would be lost, the job "succeeded"."""
    if os.environ.get("MLFLOW_TRACKING_URI") or "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        return
    raise SpiralrayError(
        "MLFLOW_TRACKING_URI is not set in this Ray job (ray job submit does not pass your shell's"
        " environment), so the run would go to mlflow.db in the job's working directory, which Ray"
        " deletes: pass it with --runtime-env-json"
        """ '{"env_vars": {"MLFLOW_TRACKING_URI": "sqlite:////shared/mlflow.db"}}'"""
    )


def _store_problem(exc: Exception) -> str:
    """The short reason a tracking store failed: MLflow's own messages run to 500 characters."""
    text = one_line(exc)
    if exc.__class__.__name__ == "UnsupportedModelRegistryStoreURIException":
        return "unsupported URI scheme (use sqlite:///PATH, http(s)://HOST:PORT or postgresql://...)"
    reason = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    if reason and ("Max retries exceeded" in text or "Failed to establish" in text):
        return f"cannot reach the tracking server ({reason.group(0).strip()})"
    return text if len(text) <= 300 else text[:297] + "..."


# MLflow's HTTP settings for check_store: one quick try
_ONE_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return mlflow


def _experiment(mlflow, name: str) -> None:
    """Make ``name`` the active experiment. A new one in a sqlite store keeps its artifacts
    beside the store's file (``mlartifacts/``), not in an ``mlruns/`` folder wherever training
    happened to be started (MLflow's default)."""
    store = _sqlite_file(tracking_uri())
    if store and mlflow.get_experiment_by_name(name) is None:
        folder = os.path.join(os.path.dirname(store), "mlartifacts")
        try:
            mlflow.create_experiment(name, artifact_location=Path(folder).as_uri())
        except mlflow.exceptions.MlflowException:
            if mlflow.get_experiment_by_name(name) is None:  # not another run creating it first
                raise
    mlflow.set_experiment(name)


def _loss_plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5))
    for ax, (stage, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        epochs = [h["epoch"] for h in r["history"]]
        ax.plot(epochs, [h[f"{stage}_loss"] for h in r["history"]], "o-", label="train loss")
        # each stage's own validation: the scorer's score error, the segmenter's object F1 (its
        # score MSE is the frozen scorer's)
        key, what = (
            ("val_score_mse", "val score MSE") if stage == "scorer" else ("val_object_f1_50", "val object F1")
        )
        if key in r["history"][0]:
            ax.plot(epochs, [h[key] for h in r["history"]], "s--", label=what)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _overlay(image: np.ndarray, labels: np.ndarray, truth: np.ndarray, path: str) -> None:
    """RGB PNG: the image in grey, predicted outlines in green, true outlines in magenta."""
    import imageio.v3 as iio
    from skimage.segmentation import find_boundaries

    from ..data.normalize import normalize

    g = (np.clip(normalize(image), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([g, g, g], -1)
    rgb[find_boundaries(truth, mode="inner")] = (255, 0, 255)
    rgb[find_boundaries(labels, mode="inner")] = (0, 255, 0)
    iio.imwrite(path, rgb)


def log_training(job, cfg, weights: dict, results: dict, val_pairs, train_images: int) -> dict:
    """Log a finished training run, register its model and set the alias. Without validation
    pairs no validation metrics are logged (tag ``validation``: "none"; ``metrics``: None).
    Tag ``training``: how many training images (synthetic ones included) it learned from."""
    import torch

    from .. import modelzoo
    from ..core.engine import Engine
    from ..core.metrics import evaluate_many
    from ..core.net import SpiralNet

    mlflow = _mlflow()
    net = SpiralNet.build(cfg, seed=None).load_state_dict(
        {k: torch.from_numpy(v) for k, v in weights.items()}
    )
    _experiment(mlflow, job.experiment)
    with mlflow.start_run(run_name=job.name) as run, tempfile.TemporaryDirectory() as tmp:
        params = {k: v for k, v in asdict(job).items() if k not in ("config",)}
        mlflow.log_params({k: str(v) for k, v in params.items()})
        for stage, r in results.items():
            for h in r["history"]:
                mlflow.log_metrics(
                    {f"{stage}/{k}": float(v) for k, v in h.items() if k != "epoch"}, step=int(h["epoch"])
                )
        _loss_plot(results, os.path.join(tmp, "loss_curves.png"))
        mlflow.log_artifact(os.path.join(tmp, "loss_curves.png"), "plots")
        final = None  # no validation data: say so rather than score a training image
        mlflow.set_tag("validation", f"{len(val_pairs)} images" if val_pairs else "none")
        mlflow.set_tag("training", f"{train_images} images")
        if val_pairs:
            engine = Engine(net, device="cpu")
            preds = [engine.segment(im).labels for im, _ in val_pairs]
            final = evaluate_many(zip(preds, [lb for _, lb in val_pairs], strict=True))
            mlflow.log_metrics({f"val_{k}": float(v) for k, v in final.items()})
            _overlay(val_pairs[0][0], preds[0], val_pairs[0][1], os.path.join(tmp, "val_overlay.png"))
            mlflow.log_artifact(os.path.join(tmp, "val_overlay.png"), "plots")
        model_dir = os.path.join(tmp, "spiralnet")
        modelzoo.save(net, model_dir, extra={"trained_on": job.data, "validation": final})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MODEL_CODE,
            artifacts={"spiralnet": model_dir},
            pip_requirements=["spiralray", "torch", "numpy"],
        )
        version = register(info.model_uri, job.register, job.alias) if job.register else None
        return {"run_id": run.info.run_id, "version": version, "metrics": final, "stages": results}


def register(model_uri: str, name: str, alias: str | None = None) -> str:
    """Register a logged model (its source run is the run that logged it) and set an alias."""
    mlflow = _mlflow()
    mv = mlflow.register_model(model_uri, name)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


STAGES = ("none", "staging", "production", "archived")  # MLflow's (deprecated) model stages


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, read as
    MLflow reads them: VERSION is a number, ``latest`` or a stage (Production, ...; any case);
    a name may hold '@' when a version follows. A logged model's id (``models:/m-...``) is
    (id, None, None). Anything else is one clear error: MLflow would read ``models:/NAME`` as a
    logged model's id and say that none exists."""
    rest = uri[len("models:/") :] if uri.startswith("models:/") else ""
    parts = rest.split("/")
    if len(parts) == 2 and parts[0]:
        name, version = parts
        if version.isdigit() or version.lower() == "latest" or version.lower() in STAGES:
            return name, None, version
    elif len(parts) == 1 and "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif len(parts) == 1 and rest.startswith("m-"):
        return rest, None, None
    elif len(parts) == 1 and rest:
        raise SpiralrayError(f"{uri} names no version: use models:/{rest}@ALIAS or models:/{rest}/VERSION")
    raise SpiralrayError(
        f"not a registry model URI: {uri!r} (use models:/NAME@ALIAS or models:/NAME/VERSION)"
    )


def load(uri: str):
    """A SpiralNet from ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    from .. import modelzoo

    parse(uri)
    check_store(create=False)
    mlflow = _mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp())
    except Exception as exc:
        raise SpiralrayError(
            f"cannot load {uri} from the registry at {tracking_uri()}: {one_line(exc)}"
        ) from exc
    for root, _dirs, files in os.walk(local):
        if "model.safetensors" in files and "config.json" in files:
            return modelzoo.load(root)
    raise SpiralrayError(f"{uri} holds no spiralray model directory")


def describe(uri: str) -> dict:
    """Which version ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) names now, with its
    aliases and its source run's metrics; ``pinned`` is ``models:/NAME/VERSION``, so a caller can
    load exactly the version described even if the alias moves meanwhile."""
    name, alias, version = parse(uri)
    check_store(create=False)
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version is None:
            raise SpiralrayError(f"{uri} is a logged model, not a registered one: use models:/NAME@ALIAS")
        elif version.isdigit():
            mv = client.get_model_version(name, version)
        else:  # latest, or the latest in a stage
            quoted = name.replace("'", "\\'")
            found = [
                v
                for v in client.search_model_versions(f"name='{quoted}'")
                if version.lower() == "latest" or (v.current_stage or "None").lower() == version.lower()
            ]
            if not found:
                raise SpiralrayError(
                    f"{uri}: no version of {name} is {version} in the registry at {tracking_uri()}"
                )
            mv = max(found, key=lambda v: int(v.version))
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    except SpiralrayError:
        raise
    except Exception as exc:
        raise SpiralrayError(
            f"cannot find {uri} in the registry at {tracking_uri()}: {one_line(exc)}"
        ) from exc
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": sorted(mv.aliases or []),
        "run_id": mv.run_id,
        "metrics": dict(metrics),
        "pinned": f"models:/{name}/{mv.version}",
    }


def pinned_init(job, log=print):
    """``job`` with its ``--init models:/NAME@ALIAS`` replaced by the version the alias names
    now (``models:/NAME/VERSION``): the run's parameters record what it started from, which the
    alias stops saying once it moves."""
    from dataclasses import replace

    if not (job.init or "").startswith("models:/"):
        return job
    pinned = describe(job.init)["pinned"]
    if pinned != job.init:
        log(f"--init {job.init} is {pinned}")
    return replace(job, init=pinned)
