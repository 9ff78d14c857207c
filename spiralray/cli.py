"""The ``spiralray`` command. User mistakes print one line and exit 2; details go to the log
file (``SPIRALRAY_LOG``, default ``~/.cache/spiralray/spiralray.log``) or the terminal with
``--verbose``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import cli_segment
from .errors import EXIT_USAGE, SpiralrayError

log = logging.getLogger("spiralray")


def _log_path() -> str:
    return os.environ.get("SPIRALRAY_LOG", os.path.expanduser("~/.cache/spiralray/spiralray.log"))


def _setup_logging(verbose: bool) -> None:
    for h in list(log.handlers):  # main() called again in one process: no duplicate lines
        log.removeHandler(h)
        h.close()
    handlers: list[logging.Handler] = []
    try:
        os.makedirs(os.path.dirname(_log_path()) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(_log_path()))
    except OSError:
        pass  # an unwritable log location must not stop the work
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.DEBUG)  # the file always gets the details, a user error's traceback too


def _threads(n: int | None) -> int:
    """torch threads: ``n``, or the CPUs this process may use (not every core of the machine:
    on a busy machine torch's default of all cores made one frame 7x slower)."""
    from .pipeline.local import usable_cpus

    if n is not None and n < 1:
        raise SpiralrayError(f"--threads must be at least 1, got {n}")
    import torch

    n = n or usable_cpus()
    torch.set_num_threads(n)
    return n


def cmd_segment(args) -> int:
    from . import api
    from .core.engine import ReferenceEngine
    from .io import storage
    from .pipeline.local import Progress
    from .pipeline.ray_exec import RayOptions
    from .pipeline.run import Options
    from .pipeline.segment import check_output, segment

    threads = _threads(args.threads)
    opts = Options(
        tile_size=args.tile_size,
        channel=args.channel,
        plane=cli_segment.plane(args.plane),
        ids=args.ids,
        exclude_border=args.exclude_border,
        overwrite=args.overwrite,
        strict=args.strict,
        semantic=args.semantic,
        diameter=cli_segment.diameter(args.diameter),
        pad_value=args.pad_value,
        invert=args.invert,
    )
    check_output(args.input, args.output, opts)  # before the model loads
    engine = api.load_engine(args.model, device=args.device, batch_size=args.batch_size)
    if args.reference:
        engine = ReferenceEngine(engine.net, device=args.device, batch_size=args.batch_size)
    if args.exclude_border:  # the net's config travels to Ray actors; the engine's is used here
        engine.cfg = engine.net.config = engine.cfg.replace(candidates={"exclude_border": True})
    progress = Progress(0)
    ropts = RayOptions(
        score_actors=args.score_actors,
        segment_actors=args.segment_actors,
        segment_cpus=args.actor_cpus,
        segment_gpus=args.actor_gpus,
        batch_regions=args.batch_regions,
        engine_batch=args.batch_size,
        device=args.device,
        segment_resources=cli_segment.resources(args.actor_resources),
    )
    summary = segment(
        args.input, args.output, engine, opts, args.model, args.executor, args.address, ropts, progress
    )
    labels = summary.pop("labels", None)
    summary.pop("table", None)
    if labels is not None:
        storage.write_labels(args.output, labels, spacing=summary.get("spacing"))
    summary["threads"] = threads
    log.info("segment %s", summary)
    if args.json:
        print(json.dumps(summary))
    elif summary.get("images", 1) or not summary.get("failed"):  # "0 objects -> OUT" if none finished
        print(cli_segment.summary_line(summary, args.output, opts.pad_value))
    return cli_segment.report_failed(summary)


def _instances(frames, path, notes: list) -> list:
    """Each 2-D frame as instance labels (``metrics.as_instances``); a mask's note on stderr
    and in ``notes``."""
    from .core.metrics import as_instances

    out, noted = [], False
    for k, frame in enumerate(frames):
        try:
            labels, note = as_instances(frame)
        except ValueError as exc:
            where = f"{path} (frame {k})" if len(frames) > 1 else str(path)
            raise SpiralrayError(f"{where} is {exc}") from exc
        if note and not noted:  # once per file, at the first frame read as a mask
            where = f"{path} (frame {k} and maybe others)" if len(frames) > 1 else str(path)
            noted = True
            if f"{where} has {note}" not in notes:  # the same file given as both: said once
                notes.append(f"{where} has {note}")
                print(f"spiralray: {notes[-1]}", file=sys.stderr)
        out.append(labels)
    return out


def cmd_evaluate(args) -> int:
    from .core.metrics import evaluate_many
    from .core.prepare import squeezed_shape
    from .io.storage import is_output, read_labels

    pred, truth = read_labels(args.pred), read_labels(args.truth)
    # a one-frame stack is its frame (a 1 x H x W TIFF, as segment reads its input)
    pred, truth = (a.reshape(squeezed_shape(a.shape)) for a in (pred, truth))
    notes = []
    if is_output(args.truth) and not is_output(args.pred):  # precision and recall would swap
        notes.append(
            f"{args.truth} is spiralray's output and {args.pred} is not: scored as given, but the "
            "order is `evaluate PREDICTION TRUTH`"
        )
        print(f"spiralray: {notes[-1]}", file=sys.stderr)
    if pred.shape != truth.shape:
        raise SpiralrayError(f"shape mismatch: {args.pred} is {pred.shape}, {args.truth} is {truth.shape}")
    if pred.ndim not in (2, 3):
        raise SpiralrayError(f"label images must be 2-D (or a stack of 2-D frames), got {pred.shape}")
    if pred.ndim == 2:
        pred, truth = pred[None], truth[None]
    pairs = list(
        zip(_instances(list(pred), args.pred, notes), _instances(list(truth), args.truth, notes), strict=True)
    )
    scores = evaluate_many(pairs)
    if not args.json:
        for k, v in scores.items():
            print(f"{k:>22s}  {v:.4f}" if isinstance(v, float) else f"{k:>22s}  {v}")
    else:
        print(json.dumps({**scores, **({"notes": notes} if notes else {})}))
    return 0


def cmd_train(args) -> int:
    from .train.job_args import job_from_args, summarize
    from .train.ray_trainer import train

    out = train(job_from_args(args), address=args.address, log=lambda m: print(m, flush=True))
    print(json.dumps(summarize(out)))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out)


def cmd_bench(args) -> int:
    from .bench import engine as bench

    result = bench.run(args.which, args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's mistakes in one line, as every other user error (not a usage block); its
    subcommands' parsers are of this class too. No abbreviated options: a mistyped
    ``--segment-actor 2`` or a prefix that a later option makes ambiguous is an error, not a
    guess."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    p = _Parser(prog="spiralray", description="SpiralNet microscopy segmentation")
    p.add_argument("--verbose", "-v", action="store_true", help="log details to the terminal")
    try:
        p.add_argument("--version", action="version", version=f"spiralray {version('spiralray')}")
    except PackageNotFoundError:  # run from a checkout that is not installed
        pass
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "segment", help="segment an image of any size (zarr, OME-Zarr, TIFF, PNG; path or URL)"
    )
    cli_segment.add_arguments(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="compare a label image with the truth")
    e.add_argument("pred")
    e.add_argument("truth")
    e.add_argument("--json", action="store_true", help="last line: one JSON object")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train both stages with Ray Train, log and register in MLflow")
    from .train.job_args import add_arguments

    add_arguments(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="segment a synthetic image with the shipped model")
    d.add_argument("--out", default="demo_out")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks (write JSON to bench/results/)")
    b.add_argument("which", choices=["engine", "compare", "train", "tiles", "pipeline", "memory", "serve"])
    b.add_argument("--json", action="store_true", help="last line: one JSON object")
    b.add_argument("--data", default="../shared/data/hela")
    b.add_argument("--results", default="bench/results")
    b.add_argument("--regions", type=int, default=48, help="reference sample size (engine)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--device", default="auto")
    b.add_argument("--frames", default="17,18,19", help="HeLa frames (compare)")
    b.add_argument("--model", default=None, help="SpiralNet model (compare; default: shipped)")
    b.add_argument("--model-name", default=None, help="the model's name in the table, e.g. v12 (compare)")
    b.add_argument("--weights", default="bench/weights", help="baseline weight cache (compare)")
    b.add_argument("--unets", default="32", help="U-Net base widths to compare, e.g. 32,64 (compare)")
    b.add_argument("--dsb", default="bench/data/dsb2018", help="held-out DSB 2018 image (compare)")
    b.add_argument("--baseline-minutes", type=float, default=10, help="U-Net training budget if uncached")
    b.add_argument("--seconds", type=float, default=60, help="load-test phase length (serve)")
    b.add_argument("--clients", type=int, default=16, help="concurrent clients (serve)")
    b.add_argument("--overload-clients", type=int, default=100, help="clients of the overload phase (serve)")
    b.add_argument("--size", type=int, default=128, help="image side, px (serve)")
    b.set_defaults(func=cmd_bench)

    from .pipeline.ingest import add_parser as add_ingest  # argparse only: Ray loads when run
    from .serve.cli import add_parser as add_serve

    add_ingest(sub)
    add_serve(sub)
    for command in sub.choices.values():  # also after the command, where users put it
        command.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log details to the terminal",
        )
    return p


def _quiet_teardown() -> None:
    """After a failure, send 'Exception ignored in ...' reports to the log, not the terminal.

    Why: when an S3 read fails, the storage client's other in-flight coroutines are dropped
    and garbage-collected at exit, and Python prints their tracebacks after our one-line error
    (aiobotocore: "Token ... was created in a different Context"). They are teardown noise of
    an error already reported, so they go to the log file.
    """

    def hook(unraisable) -> None:
        log.debug(
            "ignored during teardown: %s",
            unraisable.err_msg or unraisable.object,
            exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
        )

    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except SpiralrayError as exc:
        log.debug("user error", exc_info=True)
        _quiet_teardown()
        print(f"spiralray: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _quiet_teardown()
        print("spiralray: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # a Python without spiralray's dependencies (a Ray node's)
        log.exception("missing dependency")
        _quiet_teardown()
        cause = getattr(exc, "cause", None)  # a Ray task's error: the node's Python lacks it
        ip = getattr(exc, "ip", None)
        where = sys.executable if cause is None else "a Ray node's Python" + (f" ({ip})" if ip else "")
        print(
            f"spiralray: error: {cause or exc} in {where}: run spiralray with the Python it is "
            "installed in (on a Ray cluster, `ray start` from that environment on every node)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as exc:  # a bug, not a user mistake: one line here, the traceback in the log
        log.exception("internal error")
        _quiet_teardown()
        print(
            f"spiralray: internal error: {exc.__class__.__name__}: {exc} (details: {_log_path()})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
