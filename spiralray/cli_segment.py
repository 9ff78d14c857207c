"""The ``segment`` command's arguments, their parsing, and the lines it prints."""

from __future__ import annotations

import argparse
import sys

from .errors import EXIT_FAILED_IMAGES, SpiralrayError


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("input", help="image: .zarr (array or OME-Zarr image), .tif, .png; a path or URL")
    s.add_argument("output", help="OUT.zarr or a URL (OME-Zarr labels), or OUT.tif (small images)")
    s.add_argument("--model", default=None, help="model directory or models:/NAME@ALIAS (default: shipped)")
    s.add_argument(
        "--channel",
        type=_channel,
        default=None,
        help="channel of a multi-channel image: its number, or its name (OME-Zarr, OME-TIFF)",
    )
    s.add_argument("--plane", default=None, help="plane of a stack: N, or e.g. z=3,t=0")
    s.add_argument("--tile-size", type=int, default=1024, help="tile core and output chunk size (>= 256)")
    s.add_argument(
        "--diameter",
        default="auto",
        help="nuclei's typical diameter in px, a length (e.g. 8um: converted by each image's recorded "
        "pixel size), or auto (estimated per image); far from the model's size, the image is "
        "segmented resampled and its labels come back at its resolution",
    )
    s.add_argument(
        "--pad-value",
        default=None,
        help="a fill value that is not data, e.g. 0 or nan where images were stitched, registered "
        "or padded: left out of the intensity statistics and read as background (negative: "
        "--pad-value=-5)",
    )
    s.add_argument(
        "--invert",
        action="store_true",
        help="nuclei darker than the background (brightfield, a stain's absorbance): the image is "
        "inverted before it is normalised",
    )
    s.add_argument("--semantic", action="store_true", help="TIFF output: the foreground mask instead of ids")
    s.add_argument(
        "--ids",
        choices=["sequential", "seed"],
        default="sequential",
        help="1..N per image in seed order, or archive-unique seed ids (uint64)",
    )
    s.add_argument(
        "--exclude-border", action="store_true", help="drop objects touching the image border (cut nuclei)"
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing spiralray output")
    s.add_argument("--strict", action="store_true", help="refuse an input with missing zarr chunks")
    s.add_argument(
        "--executor",
        choices=["auto", "local", "ray"],
        default="auto",
        help="auto: Ray for archives, URLs, large images or a Ray address; else in this process",
    )
    s.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    s.add_argument("--segment-actors", type=int, default=2, help="segmenter actors at most (Ray)")
    s.add_argument("--score-actors", type=int, default=1, help="scoring actors at most (Ray)")
    s.add_argument("--actor-cpus", type=float, default=0.75, help="CPUs per segmenter actor (Ray)")
    s.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per segmenter actor (Ray)")
    s.add_argument("--batch-regions", type=int, default=256, help="candidates per segmenter batch (Ray)")
    s.add_argument(
        "--actor-resources", default=None, help="custom resources per segmenter actor, e.g. segmenter=1 (Ray)"
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=256, help="regions per forward pass")
    s.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: CPUs this process may use)"
    )
    s.add_argument("--reference", action="store_true", help="the slow reference recursion")
    s.add_argument("--json", action="store_true")


def _channel(text: str):
    """--channel: a number, or a channel's name (resolved by the reader, which knows them)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("give a channel number or name")
    return int(text) if text.lstrip("-").isdigit() else text


def plane(text: str | None):
    """ "3" -> 3; "z=3,t=0" -> {"z": 3, "t": 0}."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return int(text)
        pairs = [(k.strip().lower(), int(v)) for k, v in (part.split("=", 1) for part in text.split(","))]
    except ValueError:
        raise SpiralrayError(f"bad --plane '{text}' (use N, or e.g. z=3,t=0)") from None
    names = [k for k, _ in pairs]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise SpiralrayError(f"bad --plane '{text}': axis {twice[0]} is named twice")
    return dict(pairs)


def diameter(text: str):
    from .pipeline.plan import parse_diameter

    return parse_diameter(text)


def resources(text: str | None) -> dict | None:
    """ "segmenter=1,fast_disk=0.5" -> {"segmenter": 1.0, "fast_disk": 0.5}."""
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise SpiralrayError(f"bad --actor-resources '{text}' (use e.g. segmenter=1)") from None


def summary_line(summary: dict, output: str, pad) -> str:
    """The one line a segment run prints (without ``--json``)."""
    extra = _missing(summary) + _already_done(summary) + _padding(summary, pad) + _scale(summary)
    if any(i.get("invert") for i in summary.get("per_image", [summary])):
        extra += "; inverted (dark nuclei)"
    extra += _polarity(summary)
    if summary.get("objects_table"):
        extra += f"; objects table {summary['objects_table']}"
    objects = f"{summary.get('objects', 0)} objects{_no_signal(summary)}"
    return (
        f"{objects} -> {output} ({summary.get('seconds', 0):.1f} s, "
        f"{summary.get('tiles', 0)} tiles, {summary.get('regions', 0)} regions{extra})"
    )


def _polarity(summary: dict) -> str:
    """A hint where an image looks read the wrong way (``normalize.looks_inverted``): dark
    nuclei read without ``--invert``, or bright ones with it; where one value fills the dark
    tail, as padding nobody named does, ``--pad-value`` is named too."""
    from .data.normalize import looks_inverted, pad_text

    images = summary.get("per_image", [summary])
    wrong = [i for i in images if looks_inverted(i.get("diameter") or {})]
    if not wrong:
        return ""
    inverted = all(i.get("invert") for i in wrong)
    looks = "bright nuclei on a dark background" if inverted else "dark nuclei on a bright background"
    flag = "without --invert" if inverted else "with --invert"
    floors = {(i.get("diameter") or {}).get("polarity_floor") for i in wrong}
    floor = floors.pop() if len(floors) == 1 else None  # one pad value for all of them, if any
    if "per_image" in summary:
        what, rerun = (
            f"{len(wrong)} of {len(images)} images look like {looks} ({_names(summary, wrong)})",
            f"segment those {flag}",
        )
    else:
        how = " read inverted" if inverted else ""
        what = f"looks like {looks} (polarity {summary['diameter']['polarity']:+.2f}{how})"
        rerun = f"rerun {flag}"
    if floor is None:
        return f"; {what}: if so, {rerun}"
    v = pad_text(floor)  # one value fills the dark tail: padding looks like that too
    return (
        f"; {what}, or like padding at {v}: if {v} is padding, name it with --pad-value {v}; if not, {rerun}"
    )


def _names(summary: dict, images: list[dict]) -> str:
    """ "a.zarr, sub/b.tif, ...": an archive's images by their path in it, the first three."""
    root = str(summary.get("input", "")).rstrip("/") + "/"
    names = [str(i.get("input", "?")) for i in images[:3]]
    return ", ".join(n[len(root) :] if n.startswith(root) else n for n in names) + (
        ", ..." if len(images) > 3 else ""
    )


def _missing(summary: dict) -> str:
    """ ", N missing chunks read as fill value" (in an archive, with the images that have them)."""
    images = summary.get("per_image", [summary])
    gaps = [i for i in images if i.get("missing_chunks")]
    if not gaps:
        return ""
    where = f" (in {_names(summary, gaps)})" if "per_image" in summary else ""
    return f", {sum(i['missing_chunks'] for i in gaps)} missing chunks read as fill value{where}"


def _scale(summary: dict) -> str:
    """ "; nuclei 14 px across (given), resampled x1.98": one image's scale when it is not 1."""
    scale, d = summary.get("scale"), summary.get("diameter") or {}
    if not scale or scale == 1:
        return ""
    how = (
        f"given as {d['given']}" if d.get("given") else "given" if d.get("source") == "given" else "estimated"
    )
    nuclei = f"; nuclei {d['diameter']:.3g} px across ({how})," if d.get("diameter") else ";"
    return f"{nuclei} resampled x{scale:.3g}"


def report_failed(summary: dict) -> int:
    """Each image of an archive that could not be segmented, one line on stderr (the others are
    finished), and an archive table that could not be written; 0 when none, else
    ``EXIT_FAILED_IMAGES``."""
    failed = summary.get("failed") or []
    for f in failed:  # the error names the image already, most often
        what = f["error"] if f["input"] in f["error"] else f"{f['input']}: {f['error']}"
        print(f"spiralray: failed: {what}", file=sys.stderr)
    if failed:
        rest = "the others are finished" if summary.get("images") else "none finished"
        print(f"spiralray: {len(failed)} image(s) failed; {rest}", file=sys.stderr)
    if summary.get("objects_table_error"):
        print(f"spiralray: archive table not written: {summary['objects_table_error']}", file=sys.stderr)
    return EXIT_FAILED_IMAGES if failed or summary.get("objects_table_error") else 0


def _already_done(summary: dict) -> str:
    """ "; already complete" for a re-run that had nothing left to do (or "; N of M images ...")."""
    done = "already complete"
    if "per_image" not in summary:
        return f"; {done}: nothing done" if summary.get("resumed") == done else ""
    n = sum(i.get("resumed") == done for i in summary["per_image"])
    total = len(summary["per_image"]) + len(summary.get("failed") or [])  # failed ones too
    return f"; {n} of {total} images {done}" if n else ""


def _padding(summary: dict, pad) -> str:
    """ "; N padded pixels left out" when a pad value was named (so a value that matches no
    pixel, a likely mistake, is seen)."""
    images = summary["per_image"] if "per_image" in summary else [summary]
    if pad is None or not images:
        return ""
    n = sum(i.get("padded_pixels", 0) for i in images)
    return f"; {n} padded pixels left out" if n else f"; pad value {pad:g} found in no pixel"


def _no_signal(summary: dict) -> str:
    """ " (constant image)", " (all padding)" or " (noise only)" when one image had nothing to
    find, else ""."""
    d = summary.get("diameter")
    reason = d.get("reason") if isinstance(d, dict) else None
    return f" ({reason})" if reason in ("constant image", "all padding", "noise only") else ""
