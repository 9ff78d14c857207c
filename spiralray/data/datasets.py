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
    """Each pair as training reads it (image ``H x W``, labels ``H x W`` int32), or a one-line
    error naming the file (``names``: a folder's files; else the frame's index). A grey image
    saved as RGB is read as grey, as ``segment`` reads it; whole-number float labels are ids."""
    from ..io.planes import grey_of_colour

    if len(images) != len(labels):
        raise SpiralrayError(f"{where}: {len(images)} images but {len(labels)} label images")
    pairs = []
    for i, (im, lb) in enumerate(zip(images, labels, strict=True)):
        what = names[i] if names else f"image {i}"
        im, lb = _squeezed(im), _squeezed(lb)  # a single frame saved as 1 x H x W
        if lb.ndim == 3 and lb.shape[-1] in (3, 4):
            raise SpiralrayError(f"{where}: the labels of {what} are a colour image {lb.shape}, not ids")
        grey = grey_of_colour(im) if im.ndim == 3 and im.shape[:2] == lb.shape else None
        im = grey if grey is not None else im
        if im.ndim == 3 and im.shape[:2] == lb.shape:
            raise SpiralrayError(f"{where}: {what} is a colour image {im.shape}: training reads grey images")
        if im.shape != lb.shape:
            raise SpiralrayError(f"{where}: {what} is {im.shape} but its labels are {lb.shape}")
        if im.ndim != 2:
            raise SpiralrayError(
                f"{where}: {what} is a stack {im.shape}, not one image: give one frame per file, or"
                " the stacks layout (images.tif + labels.tif, frames x H x W)"
            )
        pairs.append((im, _ids(lb, where, what)))
    if not pairs:
        raise SpiralrayError(f"{where}: no image/label pairs found")
    if not any(lb.any() for _, lb in pairs):
        raise SpiralrayError(f"{where}: the labels hold no objects at all")
    return pairs


def _ids(lb: np.ndarray, where: str, what: str) -> np.ndarray:
    """Instance labels as int32 ids, or a one-line error: a binary mask (one value over several
    separate regions: every nucleus would be one object), negative, fractional or too large ids."""
    from scipy import ndimage as ndi

    if lb.dtype.kind == "f" and np.all(np.isfinite(lb)) and np.array_equal(lb, np.round(lb)):
        lb = lb.astype(np.int64)  # a float export of whole-number ids
    if lb.dtype.kind not in "iub":
        raise SpiralrayError(f"{where}: the labels of {what} are {lb.dtype}, expected integer instance ids")
    if lb.size and lb.min() < 0:
        raise SpiralrayError(f"{where}: the labels of {what} hold negative ids (down to {lb.min()})")
    if lb.size and int(lb.max()) > np.iinfo(np.int32).max:
        raise SpiralrayError(f"{where}: the labels of {what} hold ids over 2^31 ({lb.max()})")
    ids = np.unique(lb[lb > 0])
    if len(ids) == 1:  # one value: one nucleus (perhaps cut in two by the crop), or a mask
        regions, n = ndi.label(lb > 0)
        areas = np.bincount(regions.ravel())[1:]
        big = int((areas >= 0.25 * areas.max()).sum()) if n else 0
        if big >= 3:  # several nuclei-sized regions under one id: a mask
            raise SpiralrayError(
                f"{where}: the labels of {what} are a mask (one value, {ids[0]}, over {n} separate"
                " regions), not instance ids: give each nucleus its own id (e.g."
                " skimage.measure.label of the mask, where no nuclei touch)"
            )
    return lb.astype(np.int32)


def _squeezed(a: np.ndarray) -> np.ndarray:
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


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
            names = [f"frame {i}" for i in range(len(images))]  # of the stacks: named by index
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


def overlap(train_specs, val_specs) -> tuple[str, object] | None:
    """A (path, frame) that is both training and validation data, or None; a source without
    frames stands for all of its frames."""

    def frames_by_path(specs):
        out: dict = {}
        for spec in specs:
            path, frames = parse_source(spec)
            key = path if "://" in path else os.path.realpath(path)  # ./a, /x/a and a link to a
            known = out.get(key, [])
            out[key] = None if frames is None or known is None else known + frames  # None: all
        return out

    val = frames_by_path(val_specs)
    for path, frames in frames_by_path(train_specs).items():
        if path in val:
            both = sorted(set(frames or []) & set(val[path] or [])) if frames and val[path] else ["all"]
            if both:
                return path, both[0]
    return None


def check_apart(train: list, val: list) -> None:
    """Refuse validation images that are training images (a copy of the training folder given
    as --val-data): validation figures would be training figures, and nothing would say so."""
    import hashlib

    def digest(image) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)

    seen = {digest(im) for im, _ in train}
    same = [i for i, (im, _) in enumerate(val) if digest(im) in seen]
    if same:
        raise SpiralrayError(
            f"{len(same)} of {len(val)} validation images are also training images (validation image "
            f"{same[0]}): give --val-data images that are not in --data"
        )
