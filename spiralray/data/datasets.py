"""Annotated image sets: (image, instance labels) pairs from the layouts users have.

- a directory with ``images.tif`` + ``labels.tif`` stacks (frames x H x W), as ``shared/data/hela``;
- a directory of pairs ``NAME.tif`` + ``NAME_labels.tif`` (or .png), or ``images/`` + ``labels/``
  subdirectories with matching file names;
- a zarr group with arrays ``images`` and ``labels`` (frames x H x W or H x W).
All reading goes through ``storage``.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import SpiralrayError
from ..io import storage

LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")
IMAGE_FILES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")  # a pairs folder's images and labels


def _frames(a: np.ndarray) -> list[np.ndarray]:
    return [a] if a.ndim == 2 else list(a)


def _check(
    images: list, labels: list, where: str, names: list[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``names``: each image's file (a folder of pairs), named in errors instead of its index."""
    if len(images) != len(labels):
        raise SpiralrayError(f"{where}: {len(images)} images but {len(labels)} label images")
    pairs = []
    for i, (im, lb) in enumerate(zip(images, labels, strict=True)):
        if im.shape != lb.shape:
            what = names[i] if names else f"image {i}"
            raise SpiralrayError(f"{where}: {what} is {im.shape} but its labels are {lb.shape}")
        if lb.dtype.kind not in "iub":
            raise SpiralrayError(f"{where}: labels {i} are {lb.dtype}, expected integer instance ids")
        pairs.append((im, lb.astype(np.int32)))
    if not pairs:
        raise SpiralrayError(f"{where}: no image/label pairs found")
    if not any(lb.any() for _, lb in pairs):
        raise SpiralrayError(f"{where}: the labels hold no objects at all")
    return pairs


def _stem(name: str) -> str:
    base = os.path.basename(name.rstrip("/"))
    return base.rsplit(".", 1)[0]


def check_region_size(pairs, region, what: str) -> None:
    """An image smaller than one region (``region.height`` x ``region.width``) has no centred
    region to learn from and cannot be segmented: refused before any training."""
    small = [im.shape for im, _ in pairs if im.shape[0] < region.height or im.shape[1] < region.width]
    if small:
        raise SpiralrayError(
            f"{len(small)} {what} image(s) are smaller than one region ({region.height} x {region.width} px),"
            f" e.g. {small[0][0]} x {small[0][1]}: use larger crops"
        )


def load_pairs(path: str, frames: list[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """All (image ``H x W``, labels ``H x W`` int32) pairs of a dataset; ``frames`` selects some."""
    path = str(path).rstrip("/")
    if not storage.exists(path):
        raise SpiralrayError(f"data not found: {path}")  # training or validation data
    names = None
    if storage.is_zarr(path):
        group = storage.open_zarr_group(path)
        if "images" not in group or "labels" not in group:
            raise SpiralrayError(f"{path}: a zarr dataset needs arrays 'images' and 'labels'")
        images, labels = _frames(np.asarray(group["images"][...])), _frames(np.asarray(group["labels"][...]))
    else:
        names = storage.list_dir(path)
        stems = {_stem(n): n for n in names}
        if "images" in stems and "labels" in stems and not os.path.isdir(stems["images"]):
            images = _frames(storage.read_image(stems["images"]))
            labels = _frames(storage.read_image(stems["labels"]))
        elif "images" in stems and "labels" in stems:
            imgs = {_stem(n): n for n in storage.list_dir(stems["images"])}
            labs = {_stem(n): n for n in storage.list_dir(stems["labels"])}
            missing = sorted(set(imgs) - set(labs))
            if missing:
                raise SpiralrayError(f"{path}: missing labels for {', '.join(missing[:5])}")
            names = [os.path.basename(imgs[k]) for k in sorted(imgs)]
            images = [storage.read_image(imgs[k]) for k in sorted(imgs)]
            labels = [storage.read_image(labs[k]) for k in sorted(imgs)]
        else:
            label_of = {}  # image files only: "class_labels.csv" is not a label image
            for stem, name in stems.items():
                if not name.lower().endswith(IMAGE_FILES):
                    continue
                for suf in LABEL_SUFFIXES:
                    if stem.endswith(suf):
                        label_of[stem[: -len(suf)]] = name
            keys = sorted(k for k in stems if k in label_of)
            unlabelled = sorted(
                k
                for k, n in stems.items()
                if k not in label_of and not k.endswith(LABEL_SUFFIXES) and n.lower().endswith(IMAGE_FILES)
            )
            if unlabelled:  # an image left out unsaid would train on less than the user thinks
                raise SpiralrayError(
                    f"{path}: missing labels for {', '.join(unlabelled[:5])}"
                    f"{' and more' if len(unlabelled) > 5 else ''}"
                    f" (expected e.g. {unlabelled[0]}_labels.tif beside {unlabelled[0]}; labels end in"
                    f" {', '.join(LABEL_SUFFIXES)})"
                )
            orphans = sorted(os.path.basename(n) for k, n in label_of.items() if k not in stems)
            if orphans:
                raise SpiralrayError(f"{path}: labels without an image: {', '.join(orphans[:5])}")
            names = [os.path.basename(stems[k]) for k in keys]
            images = [storage.read_image(stems[k]) for k in keys]
            labels = [storage.read_image(label_of[k]) for k in keys]
    pairs = _check(images, labels, path, names)
    if frames is not None:
        check_frames(len(pairs), frames, path)
        pairs = [pairs[i] for i in frames]
    return pairs


def check_frames(n: int, frames, path: str) -> None:
    """A clear error for a frame index outside a dataset of ``n`` images."""
    bad = [i for i in frames if not 0 <= i < n]
    if bad:
        raise SpiralrayError(f"{path} has {n} images; no frame {bad[0]}")


def parse_frames(text: str | None) -> list[int] | None:
    """ "0-13" or "14,15,16" (or "0-3,7") -> frame indices; None or "" -> None (all frames)."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SpiralrayError(f"bad frame list '{text}' (use e.g. 0-13 or 14,15,16)") from None
    return out


# A frame list after the last colon: "PATH:0-13". Only digits, commas and dashes, so the colon
# of a URL scheme ("s3://bucket/set") or of a drive letter is never read as one.
_FRAMES_SUFFIX = re.compile(r"^(.+):([0-9][0-9,\-]*)$")


def parse_source(spec: str) -> tuple[str, list[int] | None]:
    """``PATH`` or ``PATH:FRAMES`` (e.g. ``../shared/data/hela:0-13``) -> (path, frames or None)."""
    m = _FRAMES_SUFFIX.match(str(spec))
    return (m.group(1), parse_frames(m.group(2))) if m else (str(spec), None)


# Outline conforming's defaults for data sets (``outlines.conform_outlines``): BBBC039's manual
# convention, one pass. Kept here so the flags and the job read them without importing SciPy.
CONFORM_LEVEL, CONFORM_PASSES = 0.41, 1


def load_sources(
    specs, conform=(), level: float = CONFORM_LEVEL, passes: int = CONFORM_PASSES
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs of several ``PATH[:FRAMES]`` sources, concatenated in the order given; the
    sources named in ``conform`` (as given in ``specs``) with their outlines conformed to the
    manual convention (``conform_pairs`` at ``level``, ``passes``)."""
    conform = conform or ()
    check_conform(specs, conform, level, passes)
    pairs = []
    for spec in specs:
        got = load_pairs(*parse_source(spec))
        pairs += conform_pairs(got, level, passes) if spec in conform else got
    return pairs


def check_conform(specs, conform, level: float = CONFORM_LEVEL, passes: int = CONFORM_PASSES) -> None:
    """A clear error for a ``--conform-outlines`` source that is not one of ``specs`` (the
    ``--data`` and ``--val-data`` sources), or a level outside (0, 1) or fewer than one pass."""
    for spec in conform or ():
        if spec not in specs:
            known = ", ".join(specs)
            raise SpiralrayError(f"--conform-outlines {spec} is not one of the data sources ({known})")
    if not 0 < level < 1:
        raise SpiralrayError(f"bad --conform-level {level} (a fraction of the way to the interior: 0 to 1)")
    if passes < 1:
        raise SpiralrayError(f"bad --conform-passes {passes} (1 or more)")


def conform_pairs(
    pairs, level: float = CONFORM_LEVEL, passes: int = CONFORM_PASSES
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` with each label image's outlines peeled to the manual annotations' convention
    (``outlines.conform_outlines``)."""
    from .outlines import conform_outlines

    return [(im, conform_outlines(im, lb, level, passes)) for im, lb in pairs]


SYNTHETIC_PRESETS = ("plain", "diverse")


def synthetic_pairs(n: int, preset: str = "diverse", size: int = 384, seed: int = 1000):
    """``n`` synthetic ``size x size`` (image, labels) pairs: ``"plain"`` is the original look
    (``SyntheticSpec``), ``"diverse"`` every appearance feature (``SyntheticSpec.diverse``)."""
    from .synthetic import SyntheticSpec, generate_many

    if preset not in SYNTHETIC_PRESETS:
        raise SpiralrayError(f"unknown synthetic preset '{preset}' (expected one of {SYNTHETIC_PRESETS})")
    if n <= 0:
        return []
    spec = SyntheticSpec.diverse(size, size) if preset == "diverse" else SyntheticSpec(size, size)
    return generate_many(n, spec, seed=seed)


HELA_SPLIT = {"train": list(range(0, 14)), "validation": [14, 15, 16], "test": [17, 18, 19]}
# Measured with spiralray.core.metrics.evaluate on the labels alone: one frame's labels scored as
# a prediction of the next frame's. Every HeLa figure the code prints or stores carries this note.
HELA_NOTE = (
    "HeLa frames 0-19 are one time-lapse movie and neighbouring frames are near-duplicates: frame"
    " 16's labels scored as a prediction of frame 17 give object F1@0.5 0.87 (frame 13 -> 14: 0.87)."
    " Validation (14-16) is therefore not independent of test (17-19), nor test of training (0-13)."
)
