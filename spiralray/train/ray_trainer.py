"""Distributed training: Ray Data streams augmented region samples into Ray Train
``TorchTrainer`` workers; one trainer per stage (scorer, then segmenter); checkpoints through
``ray.train.report``; the driver logs and registers the result in MLflow (``registry``).

Each worker holds a full copy of the (small) networks and averages gradients with an
all-reduce after every backward pass. Plain DDP wrapping does not fit here: the segmenter is
trained through ``logits(padding=0)`` on spiral windows and run through its parts by the
spiral, not through ``forward``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..core.config import SpiralNetConfig
from ..data.datasets import CONFORM_LEVEL, CONFORM_PASSES, check_region_size
from ..errors import SpiralrayError
from .split import split


@dataclass(frozen=True)
class TrainJob:
    """Everything a training run needs; stored as MLflow params.

    ``data``: one ``PATH[:FRAMES]`` source or a list of them (e.g. ``["bbbc039/train",
    "hela:0-13"]``); ``synthetic`` frames of ``synthetic_preset`` are added to the training set.
    """

    data: str | list[str]
    images: int | None = None  # first N training images only (smoke runs)
    val_images: int | None = None  # held-out images per source for validation (default: 15%, >= 1)
    frames: list[int] | None = None  # explicit training frames of a single source (e.g. HeLa 0-13)
    val_frames: list[int] | None = None  # explicit validation frames of a single source (HeLa 14-16)
    val_data: list[str] | None = None  # validation sources PATH[:FRAMES]; then every data image trains
    conform: list[str] | None = None  # data/val_data sources conformed to the manual outlines
    conform_level: float = CONFORM_LEVEL  # ... peeled under this fraction of the way to the interior
    conform_passes: int = CONFORM_PASSES  # ... this many times (spiralray.data.outlines)
    synthetic: int = 0  # synthetic training frames added
    synthetic_preset: str = "diverse"  # "plain" or "diverse" (spiralray.data.datasets.synthetic_pairs)
    synthetic_size: int = 384
    init: str | None = None  # fine-tune from this model (directory or models:/ URI); its config too
    skip_inner: int = 0  # grow the segmenter's skip modules to this many inner channels (train.widen)
    epochs: int = 3
    workers: int = 2
    use_gpu: bool = False
    samples_per_epoch: int = 2048  # scorer regions per epoch (the segmenter gets 1/8: each runs a spiral)
    scorer_batch: int = 128
    spiral_regions: int = 32
    lr: float = 1e-3
    contact_weight: float = 0.0  # segmenter loss weight where touching objects meet (TrainSpec)
    contact_fraction: float = 0.0  # share of object-centred regions on touching objects
    small_fraction: float = 0.0  # share of object-centred regions on small objects (micronuclei)
    small_area: float = 60.0  # "small": under this area at native size, px
    tissue_fraction: float = 0.0  # share of regions given a tissue's autofluorescent background
    zoom: tuple[float, ...] = (0.75, 1.0, 1.33)  # zoomed copies of the training images
    seed: int = 0
    experiment: str = "spiralray"
    register: str | None = None  # registered model name
    alias: str | None = None  # alias set on the new version (e.g. "champion")
    storage: str | None = None  # Ray Train storage path (checkpoints); default ~/ray_results
    name: str | None = None  # run name (checkpoint folder); default spiralray-<time>
    resume: bool = False  # continue run ``name`` from its latest checkpoints
    config: dict = field(default_factory=dict)  # SpiralNetConfig overrides

    @property
    def sources(self) -> list[str]:
        return [self.data] if isinstance(self.data, str) else list(self.data)


_SAMPLERS: dict = {}  # per Ray worker process: datasets by object-store key


def region_dataset(
    images,
    labels,
    cfg: SpiralNetConfig,
    rows: int,
    seed: int,
    zoom: tuple[float, ...],
    scores: bool = False,
    sampling: dict | None = None,
):
    """Ray Data: augmented region samples drawn from the images, fresh on every pass.

    Rows: ``image`` (1 x h x w float32, normalised), ``labels`` (h x w int32 instance ids) and,
    with ``scores``, ``score`` (float32, the target of ``cfg``'s score label). ``sampling``:
    ``RegionSampler`` keyword options (``sampling.hard_case_options``).
    """
    import ray

    from .sampling import RegionSampler

    refs = ray.put((images, labels))
    key = refs.hex()
    per_task = 256
    tasks = max(1, -(-rows // per_task))

    def draw(batch):
        # Build the sampler (padding, zoomed copies) once per worker process, not per task.
        sampler = _SAMPLERS.get(key)
        if sampler is None:
            _SAMPLERS.clear()  # one dataset per process at a time: memory stays bounded
            imgs, labs = ray.get(refs)
            sampler = _SAMPLERS[key] = RegionSampler(imgs, labs, cfg, scales=zoom, **(sampling or {}))
        out: dict[str, list] = {"image": [], "labels": [], "score": []}
        for task in batch["task"]:
            sampler.rng = np.random.default_rng(int(seed * 100003 + task + time.time_ns() % 10**6))
            # the last task draws the rest: an epoch is the rows asked for, not whole tasks
            n = min(per_task, rows - int(task) * per_task)
            im, lb, sc = sampler.sample(n, cfg.model.score_label if scores else None)
            out["image"].append(im)
            out["labels"].append(lb.astype(np.int32))
            out["score"].append(sc)
        if not scores:
            del out["score"]
        return {k: np.concatenate(v) for k, v in out.items()}

    return ray.data.range(tasks).rename_columns({"id": "task"}).map_batches(draw, batch_size=1)


def _cpus_per_worker(workers: int) -> float:
    """Leave a CPU for the Ray Data tasks that feed the workers, or the pipeline starves."""
    import ray

    total = ray.cluster_resources().get("CPU", 1)
    return max(0.25, min(1.0, (total - 1) / max(workers, 1)))


PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def _not_state_api_absent(record: logging.LogRecord) -> bool:
    return "State API may be temporarily unavailable" not in record.getMessage()


def quiet_pg_cleaner() -> None:
    """Worker setup hook (see ``train``): Ray Train's placement-group cleaner drops its warning
    that the State API is absent; its other messages (a dead controller's clean-up) stay."""
    logging.getLogger(PG_CLEANER_LOGGER).addFilter(_not_state_api_absent)


def train(job: TrainJob, address: str | None = None, log=print) -> dict:
    """Train both stages; returns {"model_dir", "run_id", "version", "metrics", ...}."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..data.normalize import normalize
    from ..io.readers import redact
    from . import registry
    from .interrupt import fit
    from .resume import (
        latest_checkpoint,
        mark_finished,
        recorded_init,
        resumed_config,
        run_record,
        started_from,
    )
    from .sampling import hard_case_options
    from .widen import widen_skips
    from .worker_loop import train_loop

    storage = job.storage or os.path.expanduser("~/ray_results")
    name = job.name or f"spiralray-{time.strftime('%Y%m%d-%H%M%S')}"
    check_job(job, storage)  # before any work: a mistake must not cost the run
    registry.check_registration(job.register, job.alias)
    registry.check_job_store()
    check_data(job)
    registry.check_store(create=True)
    log(f"MLflow: {redact(registry.tracking_uri())}")  # where the run goes, without credentials
    cfg, weights = SpiralNetConfig(), None
    job = replace(job, init=recorded_init(job.init))
    record = run_record(storage, name) if job.resume else None
    if job.resume and record is None:
        log(f"run {name} has no checkpoint to continue: it starts afresh, from these flags")
    job = started_from(job, record, name, log)  # a resume: the model its checkpoints recorded
    if job.init:  # fine-tune: the model's weights, and its config (score label, thresholds)
        from .. import modelzoo

        job = registry.pinned_init(job, log)
        base = modelzoo.load(job.init)
        if job.skip_inner:  # the same masks as the model given, with room to learn more
            base = widen_skips(base, job.skip_inner)
        cfg, weights = base.config, {k: v.numpy() for k, v in base.state_dict().items()}
    elif job.skip_inner:
        cfg = cfg.replace(model={"seg_skip_inner": job.skip_inner})
    cfg = resumed_config(SpiralNetConfig.from_dict({**cfg.to_dict(), **job.config}), record, name, log)
    if record and cfg.model.seg_skip_inner and job.skip_inner != cfg.model.seg_skip_inner:
        job = replace(job, skip_inner=cfg.model.seg_skip_inner)  # MLflow records the network trained
    train_pairs, val_pairs = split(job)
    check_region_size(train_pairs, cfg.region, "training")
    check_region_size(val_pairs, cfg.region, "validation")
    log(f"{len(train_pairs)} training images, {len(val_pairs)} validation images")
    if not val_pairs:
        log(
            "no validation data (give --val-data, --val-frames or more images):"
            " no validation metrics are reported"
        )
    m = cfg.model
    norm = [normalize(im, m.norm, m.norm_low, m.norm_high) for im, _ in train_pairs]
    labels = [lb for _, lb in train_pairs]
    if not ray.is_initialized():
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        # A local cluster of our own runs no dashboard, so the State API that Ray Train's
        # placement-group cleaner polls is absent: it would warn every few seconds.
        quiet = {"worker_process_setup_hook": f"{__name__}.quiet_pg_cleaner"} if where == "local" else None
        ray.init(address=where, include_dashboard=False, runtime_env=quiet)
    where = f" --storage {storage}" if job.storage else ""
    resume = f"--name {name}{where} --resume"
    log(f"run {name}: checkpoints in {storage}/{name}-scorer and -segmenter (resume: {resume})")
    cpus = _cpus_per_worker(job.workers)
    shared = {
        "job": asdict(job),
        "spiralnet": cfg.to_dict(),
        "val": ray.put([(im, lb) for im, lb in val_pairs]),
        "threads": max(1, int(cpus)),
    }
    results = {}
    for stage, rows in (
        ("scorer", job.samples_per_epoch),
        # at least one spiral batch per worker (two for one or two workers: earlier recipes' streams)
        ("segmenter", max(job.spiral_regions * max(2, job.workers), job.samples_per_epoch // 8)),
    ):
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                **shared,
                "stage": stage,
                "init": weights,
                # a local run's latest checkpoint (on a URL Ray Train restores the run itself)
                "resume": latest_checkpoint(storage, name, stage)
                if job.resume and "://" not in storage
                else None,
            },
            scaling_config=ScalingConfig(
                num_workers=job.workers, use_gpu=job.use_gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(
                name=f"{name}-{stage}",
                storage_path=storage,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
            datasets={
                "train": region_dataset(
                    norm,
                    labels,
                    cfg,
                    rows,
                    job.seed,
                    tuple(job.zoom),
                    scores=stage == "scorer",
                    sampling=hard_case_options(job),
                )
            },
        )
        t0 = time.time()
        try:
            result = fit(trainer)
        except KeyboardInterrupt:
            log(f"interrupted: continue with {resume}")
            raise
        if result.error:
            raise SpiralrayError(f"{stage} training failed: {result.error}")
        with result.checkpoint.as_directory() as d:
            with open(os.path.join(d, "history.json")) as f:
                history = json.load(f)
            from ..io.storage import load_model_dir

            weights, _ = load_model_dir(d)
            weights = {k: v.numpy() for k, v in weights.items()}
        results[stage] = {
            "history": history,
            "seconds": time.time() - t0,
            "checkpoint": result.checkpoint.path,
        }
        log(f"{stage}: {len(history)} epochs, last {history[-1]}")
    # the MLflow run is named as the Ray Train runs (a generated name too, not MLflow's own)
    out = registry.log_training(replace(job, name=name), cfg, weights, results, val_pairs, len(train_pairs))
    try:
        mark_finished(storage, name, out, job.register, job.epochs)
    except Exception as exc:  # the model is logged: a missing marker only lets a resume redo it
        log(f"could not record run {name} as finished in {storage}: {exc.__class__.__name__}: {exc}")
    return out


def check_job(job: TrainJob, storage: str) -> None:
    """One clear line, before Ray starts, for a run that would train nothing or write over
    another: ``epochs``/``workers`` under 1, fewer ``samples_per_epoch`` than one scorer batch
    per worker, ``resume`` without a name, or a name already used without ``resume`` (Ray Train
    would silently restore that run's finished state instead of training)."""
    if job.epochs < 1:
        raise SpiralrayError(f"--epochs must be at least 1, got {job.epochs}")
    if job.workers < 1:
        raise SpiralrayError(f"--workers must be at least 1, got {job.workers}")
    least = job.scorer_batch * job.workers
    if job.samples_per_epoch < least:
        raise SpiralrayError(
            f"--samples {job.samples_per_epoch} is under one scorer batch per worker"
            f" ({job.scorer_batch} x {job.workers} = {least}): nothing would train"
        )
    if job.resume and not job.name:
        raise SpiralrayError("--resume needs the --name of the run to continue")
    if job.name:
        from ..io.storage import exists
        from .resume import finished

        used = any(exists(f"{storage}/{job.name}-{stage}") for stage in ("scorer", "segmenter"))
        if used and not job.resume:
            raise SpiralrayError(
                f"a run named {job.name} exists in {storage}: add --resume to continue it,"
                " or choose another --name"
            )
        if job.resume and not used:
            raise SpiralrayError(f"no run named {job.name} in {storage} to resume")
        done = finished(storage, job.name) if job.resume else None
        if done is not None and job.epochs <= done.get("epochs", 0):  # more epochs: trains on
            raise SpiralrayError(
                f"run {job.name} has finished its {done['epochs']} epochs (MLflow run {done.get('run_id')}"
                + (f", registered as {done['registered']}" if done.get("registered") else "")
                + "): nothing to resume; give more --epochs to train it on, or another --name"
            )


def check_data(job: TrainJob) -> None:
    """Every --data and --val-data source exists: said before the MLflow store is made."""
    from ..data.datasets import parse_source
    from ..io.storage import exists

    for spec in [*job.sources, *(job.val_data or [])]:
        if not exists(parse_source(spec)[0]):
            raise SpiralrayError(f"data not found: {parse_source(spec)[0]}")
