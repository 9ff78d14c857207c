"""Continuing a named run (``--resume``): its latest checkpoint per stage, and the model it
started from. ``--init models:/NAME@ALIAS`` is pinned to a version when a run starts; the alias
may move before the run is resumed, so a resumed run takes the version its checkpoints
recorded, not the one the alias names now."""

from __future__ import annotations

import json
import os
from dataclasses import replace

from ..errors import SpiralrayError
from ..io.readers import one_line
from ..io.storage import MODEL_CONFIG


def latest_checkpoint(storage: str, name: str, stage: str) -> str | None:
    """The checkpoint directory of run ``name``'s ``stage`` with the most epochs (a URL where
    ``storage`` is one), or None."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(storage)
    found = []
    try:  # listed, not globbed: a '[' in the storage path or the name is no pattern
        entries = fs.ls(f"{root.rstrip('/')}/{name}-{stage}", detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:
        d = entry["name"]  # checkpoint folders (Ray's checkpoint_manager_snapshot.json is a file)
        if entry.get("type") != "directory" or not d.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_"):
            continue
        try:
            found.append((len(json.loads(fs.cat_file(f"{d}/history.json"))), d))
        except (FileNotFoundError, ValueError, TypeError):
            continue  # a checkpoint cut short by the kill: skip it
        except OSError as exc:  # unreadable (permissions, the store): not "no checkpoint"
            raise SpiralrayError(f"cannot read the checkpoint {d}: {one_line(exc)}") from exc
    if not found:
        return None
    d = max(found)[1]
    return d if "://" not in storage else f"{storage.split('://')[0]}://{d}"


def run_record(storage: str, name: str) -> dict | None:
    """The ``config.json`` of run ``name``'s latest checkpoint (the segmenter's, else the
    scorer's): its model's ``spiralnet`` config and, since 2026-12, its ``init``; None if none."""
    import fsspec

    ckpt = latest_checkpoint(storage, name, "segmenter") or latest_checkpoint(storage, name, "scorer")
    if ckpt is None:
        return None
    try:
        with fsspec.open(f"{ckpt.rstrip('/')}/{MODEL_CONFIG}") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


_UNRECORDED = object()


def started_from(job, record: dict | None, name: str, log=print):
    """``job`` whose ``init`` is the one run ``name`` recorded (``record``: ``run_record``)
    when resuming (a checkpoint from before the record, or none yet: ``job`` as it is). A
    resume naming another model than the run started from is refused: its checkpoints are
    that model's fine-tuning."""
    if not job.resume:
        return job
    recorded = (record or {}).get("init", _UNRECORDED)
    if recorded is _UNRECORDED or recorded == job.init:
        return job
    if job.init is not None and (
        _model(job.init) != _model(recorded) or _version(job.init) not in (None, _version(recorded))
    ):
        started = f"from {recorded}" if recorded else "without --init"
        raise SpiralrayError(f"run {name} started {started}: --init {job.init} is another model")
    if recorded:
        log(f"--init {job.init or '(not given)'}: resuming from {recorded}, what run {name} started from")
    return replace(job, init=recorded)


def resumed_config(cfg, record: dict | None, name: str, log=print):
    """The config a resumed run continues with: its checkpoints' (``record``) network, regions
    and spiral, which their weights and training data fit, where this run's flags would build
    another (``--skip-inner`` given otherwise than at the start); the candidate rules (thresholds)
    as this run gives them, but the scoring grid. ``cfg`` where there is no record."""
    from ..core.config import SpiralNetConfig

    if not record or "spiralnet" not in record:
        return cfg
    old = record["spiralnet"]
    rules = {**cfg.to_dict()["candidates"], "stride": old.get("candidates", {}).get("stride")}
    theirs = SpiralNetConfig.from_dict({**old, "candidates": rules})
    if theirs != cfg:
        mine, old = cfg.to_dict(), theirs.to_dict()
        differ = sorted(f"{k}.{q}" for k in old for q in old[k] if mine.get(k, {}).get(q) != old[k][q])
        changed = ", ".join(differ) or "config"
        log(f"resuming run {name} with its checkpoints' settings ({changed} differ from these flags)")
    return theirs


def recorded_init(init: str | None) -> str | None:
    """``--init`` as a run records it: a model directory by its absolute path (a resume from
    another directory, or the path spelt otherwise, names the same model); else as given."""
    if init in (None, "", "default") or init.startswith("models:/"):
        return init
    return os.path.abspath(init)


def _model(init: str | None) -> str | None:
    """The registered model's name of a ``models:/`` URI; a path absolute; None as it is."""
    if not (init or "").startswith("models:/"):
        return recorded_init(init)
    from .registry import parse

    return parse(init)[0]


def _version(init: str | None) -> str | None:
    """The version number a ``models:/NAME/N`` URI names (an alias, ``latest`` or a stage:
    None, whatever version it named when the run started)."""
    if not (init or "").startswith("models:/"):
        return None
    from .registry import parse

    version = parse(init)[2]
    return version if version and version.isdigit() else None


FINISHED = "finished.json"  # beside a run's checkpoints (NAME-finished.json), once it is logged


def mark_finished(storage: str, name: str, out: dict, register: str | None, epochs: int) -> None:
    """Record that run ``name`` ended its ``epochs`` and was logged (``out``:
    ``registry.log_training``'s): a later ``--resume`` of it with no more epochs is refused,
    not a second MLflow run and model version of the same weights."""
    import fsspec

    registered = f"{register} version {out['version']}" if register and out.get("version") else None
    with fsspec.open(f"{storage}/{name}-{FINISHED}", "w") as f:
        json.dump({"run_id": out.get("run_id"), "registered": registered, "epochs": epochs}, f)


def finished(storage: str, name: str) -> dict | None:
    """What ``mark_finished`` recorded for run ``name``, None while it has not finished."""
    import fsspec

    try:
        with fsspec.open(f"{storage}/{name}-{FINISHED}", "r") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # a record that cannot be read: finished all the same
