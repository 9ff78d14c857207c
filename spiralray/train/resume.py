"""Continuing a named run (``--resume``): its latest checkpoint per stage, and the model it
started from. ``--init models:/NAME@ALIAS`` is pinned to a version when a run starts; the alias
may move before the run is resumed, so a resumed run takes the version its checkpoints
recorded, not the one the alias names now."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import replace

from ..errors import SpiralrayError
from ..io.storage import MODEL_CONFIG


def latest_checkpoint(storage: str, name: str, stage: str) -> str | None:
    """The checkpoint directory of run ``name``'s ``stage`` with the most epochs, or None.
    (Ray Train V2 deprecates ``resume_from_checkpoint``: the loop loads this path itself.)"""
    found = []
    for d in glob.glob(os.path.join(storage, f"{name}-{stage}", "checkpoint_*")):
        try:
            with open(os.path.join(d, "history.json")) as f:
                found.append((len(json.load(f)), d))
        except OSError:
            continue  # a checkpoint cut short by the kill: skip it
    return max(found)[1] if found else None


_UNRECORDED = object()


def started_from(job, storage: str, name: str, log=print):
    """``job`` whose ``init`` is the one run ``name`` recorded in its latest checkpoint when
    resuming (a checkpoint from before the record, or none yet: ``job`` as it is). A resume
    naming another model than the run started from is refused: its checkpoints are that
    model's fine-tuning."""
    if not job.resume:
        return job
    ckpt = latest_checkpoint(storage, name, "segmenter") or latest_checkpoint(storage, name, "scorer")
    recorded = _UNRECORDED
    if ckpt is not None:
        try:
            with open(os.path.join(ckpt, MODEL_CONFIG)) as f:
                recorded = json.load(f).get("init", _UNRECORDED)
        except (OSError, ValueError):
            pass
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
