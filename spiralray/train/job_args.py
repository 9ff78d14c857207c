"""The training job's command-line arguments, shared by ``jobs/train.py`` and ``spiralray train``:
one definition of the flags and of how they become a ``TrainJob``."""

from __future__ import annotations

import argparse
import json

from ..data.datasets import CONFORM_LEVEL, CONFORM_PASSES, SYNTHETIC_PRESETS, check_conform, parse_frames
from ..errors import SpiralrayError


def add_arguments(t: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``train`` flags on parser ``t`` (returned)."""
    t.add_argument(
        "--data",
        action="append",
        required=True,
        help="PATH[:FRAMES] (images.tif+labels.tif dir, pairs folder or zarr group), repeatable",
    )
    t.add_argument("--val-data", action="append", default=None, help="validation PATH[:FRAMES], repeatable")
    add_conform_argument(t)
    t.add_argument("--images", type=int, default=None, help="use the first N training images only")
    t.add_argument("--frames", default=None, help="training frames of a single --data, e.g. 0-13")
    t.add_argument("--val-frames", default=None, help="validation frames of a single --data, e.g. 14-16")
    t.add_argument("--synthetic", type=int, default=0, help="synthetic training frames added")
    t.add_argument("--synthetic-preset", default="diverse", choices=SYNTHETIC_PRESETS)
    t.add_argument(
        "--init",
        default=None,
        help="fine-tune this model: default (the shipped one), a directory or models:/ URI",
    )
    t.add_argument("--zoom", default="0.75,1.0,1.33", help="zoom factors of the training images")
    t.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (cosine decay)")
    add_growth_argument(t)
    add_sampling_arguments(t)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--gpu", action="store_true", help="one GPU per worker")
    t.add_argument("--samples", type=int, default=2048, help="scorer regions per epoch")
    t.add_argument("--register", default=None, help="register the model under this name")
    t.add_argument("--alias", default=None, help="alias for the new version (needs --register)")
    t.add_argument("--experiment", default="spiralray")
    t.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or local)")
    t.add_argument("--storage", default=None, help="checkpoint storage path")
    t.add_argument("--name", default=None, help="run name (needed to --resume)")
    t.add_argument("--resume", action="store_true", help="continue run --name from its checkpoints")
    return t


def add_conform_argument(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--conform-outlines SOURCE``, ``--conform-level``, ``--conform-passes`` on ``p`` (the
    job's flags and ``bench/train_default.py``'s)."""
    p.add_argument(
        "--conform-outlines",
        action="append",
        default=None,
        metavar="SOURCE",
        help="a --data or --val-data source (as given) whose outlines are peeled to the manual annotations'"
        " convention first (spiralray.data.outlines; e.g. HeLa's ERR_SEG labels), repeatable",
    )
    p.add_argument(
        "--conform-level",
        type=float,
        default=CONFORM_LEVEL,
        help="peel outline pixels under this fraction of the way from the local background to the"
        f" interior (default {CONFORM_LEVEL}: BBBC039's convention)",
    )
    p.add_argument("--conform-passes", type=int, default=CONFORM_PASSES, help="peel this many times")
    return p


def add_growth_argument(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--skip-inner N``: the segmenter's skip modules grown to N inner channels before training,
    keeping the initial model's masks exactly (``train.widen``)."""
    p.add_argument(
        "--skip-inner",
        type=int,
        default=0,
        help="grow the segmenter's skip modules to this many inner channels first (0: as they are)",
    )
    return p


def add_sampling_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Training aimed at hard cases, on ``p``: the job's flags and ``bench/train_default.py``'s.
    ``--contact-weight`` / ``--contact-fraction``: touching nuclei; ``--small-fraction`` /
    ``--small-area``: micronuclei and blebs; ``--tissue-fraction``: a textured background."""
    p.add_argument("--contact-weight", type=float, default=0.0, help="segmenter loss weight at contacts")
    p.add_argument(
        "--contact-fraction", type=float, default=0.0, help="share of object regions on touching objects"
    )
    p.add_argument(
        "--small-fraction", type=float, default=0.0, help="share of object regions on small objects"
    )
    p.add_argument("--small-area", type=float, default=60.0, help="small: under this area at native size, px")
    p.add_argument(
        "--tissue-fraction",
        type=float,
        default=0.0,
        help="share of regions given a tissue section's autofluorescent background",
    )
    return p


def check_sampling_arguments(args: argparse.Namespace) -> None:
    """A clear error for a share outside 0-1 or a negative weight, area or ``--skip-inner``."""
    for flag in ("contact_fraction", "small_fraction", "tissue_fraction"):
        if not 0 <= getattr(args, flag) <= 1:
            raise SpiralrayError(f"bad --{flag.replace('_', '-')} {getattr(args, flag)} (a share: 0 to 1)")
    if args.contact_weight < 0:
        raise SpiralrayError(f"bad --contact-weight {args.contact_weight} (0 or more; 0: off)")
    if args.small_area <= 0:
        raise SpiralrayError(f"bad --small-area {args.small_area} (an area in px, more than 0)")
    if args.skip_inner < 0:
        raise SpiralrayError(f"bad --skip-inner {args.skip_inner} (channels; 0: as they are)")


def job_from_args(args: argparse.Namespace):
    """The ``TrainJob`` the parsed flags describe."""
    from .ray_trainer import TrainJob
    from .sampling import hard_case_options

    if args.alias and not args.register:
        raise SpiralrayError("--alias needs --register NAME")
    check_sampling_arguments(args)
    try:
        zoom = tuple(float(v) for v in args.zoom.split(","))
    except ValueError:
        raise SpiralrayError(f"bad --zoom '{args.zoom}' (use e.g. 0.5,0.75,1.0,1.33)") from None
    data = list(args.data) if isinstance(args.data, list | tuple) else [args.data]
    check_conform(
        data + list(args.val_data or []), args.conform_outlines, args.conform_level, args.conform_passes
    )
    return TrainJob(
        data=data[0] if len(data) == 1 else data,
        val_data=args.val_data,
        conform=args.conform_outlines,
        conform_level=args.conform_level,
        conform_passes=args.conform_passes,
        images=args.images,
        frames=parse_frames(args.frames),
        val_frames=parse_frames(args.val_frames),
        synthetic=args.synthetic,
        synthetic_preset=args.synthetic_preset,
        init=args.init,
        zoom=zoom,
        lr=args.lr,
        skip_inner=args.skip_inner,
        contact_weight=args.contact_weight,
        **hard_case_options(args),
        epochs=args.epochs,
        workers=args.workers,
        use_gpu=args.gpu,
        samples_per_epoch=args.samples,
        register=args.register,
        alias=args.alias,
        experiment=args.experiment,
        storage=args.storage,
        name=args.name,
        resume=args.resume,
    )


def run(argv=None) -> int:
    """Parse ``argv``, train, print the run's summary as one JSON line."""
    from .ray_trainer import train

    args = add_arguments(argparse.ArgumentParser(prog="train")).parse_args(argv)
    out = train(job_from_args(args), address=args.address, log=lambda m: print(m, flush=True))
    print(json.dumps(summarize(out)))
    return 0


def summarize(out: dict) -> dict:
    """The one-line summary of a finished run (``train``'s result): run id, registered version,
    validation object and pixel F1 (None without validation data)."""
    metrics = out["metrics"] or {}
    return {
        "run_id": out["run_id"],
        "version": out["version"],
        **{k: metrics.get(k) for k in ("object_f1_50", "pixel_f1")},
    }
