"""Which images train and which validate: a training job's sources split into (image, labels)
pairs, each ``H x W``, validation never drawn from training images; synthetic frames train only.
"""

from __future__ import annotations

from ..errors import SpiralrayError


def _split_one(path: str, frames, val_frames, val_images):
    """(training pairs, validation pairs) of one source. Explicit frames: ``val_frames`` alone
    trains on every other frame; ``frames`` alone has no validation (the frames left out may be
    the test set). Neither: the last 15% (``val_images``) validate. No validation data gives an
    empty list, never a training frame scored as "validation"."""
    from ..data.datasets import check_frames, load_pairs

    pairs = load_pairs(path)
    check_frames(len(pairs), (frames or []) + (val_frames or []), path)
    if frames is not None or val_frames is not None:
        val_idx = list(val_frames or [])
        both = sorted(set(frames or []) & set(val_idx))
        if both:
            raise SpiralrayError(f"frame {both[0]} is both a training and a validation frame")
        train_idx = frames if frames is not None else [i for i in range(len(pairs)) if i not in val_idx]
        if not train_idx:
            raise SpiralrayError(f"{path}: no training frames left besides the validation frames")
        return [pairs[i] for i in train_idx], [pairs[i] for i in val_idx]
    n_val = val_images if val_images is not None else max(1, round(0.15 * len(pairs)))
    n_val = n_val if len(pairs) > n_val else 0
    return pairs[: len(pairs) - n_val], pairs[len(pairs) - n_val :]


def split(job) -> tuple[list, list]:
    """(training pairs, validation pairs) of ``job``: each source split as ``_split_one`` (a
    ``PATH:FRAMES`` source is ``--frames FRAMES`` of that path), or, with ``val_data``, every
    source's images train and ``val_data``'s validate; then ``images`` caps the real training
    images and ``synthetic`` frames are added (never to validation). The ``conform`` sources'
    labels are first conformed to the manual outline convention (``data.outlines``)."""
    from ..data.datasets import (
        check_apart,
        check_conform,
        conform_pairs,
        load_sources,
        overlap,
        parse_source,
        synthetic_pairs,
    )

    sources = job.sources
    if not sources:
        raise SpiralrayError("no training data: give at least one --data PATH[:FRAMES]")
    check_conform(sources + list(job.val_data or []), job.conform, job.conform_level, job.conform_passes)
    if len(sources) > 1 and (job.frames is not None or job.val_frames is not None):
        raise SpiralrayError("with several --data sources give frames as PATH:FRAMES, not --frames")
    if job.val_data and job.val_frames is not None:
        raise SpiralrayError("give validation frames either as --val-frames or in --val-data, not both")
    if job.val_data:
        clash = overlap(sources, job.val_data)
        if clash:
            path, frame = clash
            raise SpiralrayError(f"{path} frame {frame} is both training and validation data")
    train, val = [], []
    held_out = (None, 0) if job.val_data else (job.val_frames, job.val_images)  # val_data: all train
    for spec in sources:
        path, frames = parse_source(spec)
        t, v = _split_one(path, frames if frames is not None else job.frames, *held_out)
        if spec in (job.conform or ()):  # its validation frames too: one convention per source
            t, v = (conform_pairs(p, job.conform_level, job.conform_passes) for p in (t, v))
        train, val = train + t, val + v
    if job.val_data:
        named = [c for c in job.conform or () if c in job.val_data]
        val = load_sources(job.val_data, named, job.conform_level, job.conform_passes)
    if job.val_data:
        check_apart(train, val)
    if job.images:
        train = train[: job.images]
    train += synthetic_pairs(job.synthetic, job.synthetic_preset, job.synthetic_size, seed=1000 + job.seed)
    return train, val
