"""Which 2-D plane of an N-D image is segmented: the axes' meaning (from OME or TIFF metadata,
or guessed from the shape), the channel and the stack plane a user chose, and a one-line error
for every choice that does not fit the image. Pure: shapes and letters in, a ``Plane`` out
(and ``grey_of_colour``: a grey image saved as colour is one plane).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SpiralrayError


@dataclass
class Plane:
    """How a 2-D plane sits in an N-D array: ``index`` holds an int for every non-YX axis."""

    axes: str  # one letter per array axis, e.g. "tczyx", "cyx", "yx"
    index: tuple = field(default_factory=tuple)  # ints, with slices for y and x


FIRST_PLANE = "first"  # ``plane``: the first plane along every stack axis the image has


def resolve_channel(channel, names: list | None, where: str) -> int | None:
    """``channel`` as an index: an int, a number given as text, or the name of one of the
    image's channels (``names``: NGFF omero labels, OME-XML channel names; case ignored)."""
    if channel is None or isinstance(channel, int):
        return channel
    text = str(channel).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    listed = ", ".join(f"{i} {n!r}" for i, n in enumerate(names or []))
    if not names or not any(names):
        raise SpiralrayError(f"{where} names no channels: give --channel {text} as a number")
    found = [i for i, n in enumerate(names) if isinstance(n, str) and n.strip().lower() == text.lower()]
    if len(found) != 1:
        what = "several channels named" if found else "no channel named"
        raise SpiralrayError(f"{where} has {what} {text!r} (its channels: {listed}): give its number")
    return found[0]


def choose_plane(shape: tuple[int, ...], axes: str | None, channel: int | None, plane) -> Plane:
    """Pick the 2-D plane: singleton axes are squeezed, C by ``channel``, T / Z by ``plane``
    (an int for the one stack axis left, a dict like {"t": 0, "z": 5} naming axes the image
    has, or ``FIRST_PLANE``).

    ``axes`` (lower-case letters, one per axis) comes from OME or TIFF metadata; without it the
    last two axes are y, x, unless the last is small (<= 4: channels-last RGB(A) or stacks)."""
    nd = len(shape)
    guessed = axes is None or "q" in axes.lower()
    if axes is None:
        if nd == 2:
            axes = "yx"
        elif nd == 3 and shape[-1] <= 4 < min(shape[:2]):
            axes = "yxc"
        elif nd == 3:
            axes = "cyx" if channel is not None or plane is None else "zyx"
        else:
            axes = "q" * (nd - 2) + "yx"
    axes = axes.lower()
    unknown = [i for i, (a, n) in enumerate(zip(axes, shape, strict=False)) if a == "q" and n > 1]
    if len(unknown) > 1:  # which is the channel and which the stack? nothing says
        raise SpiralrayError(
            f"array of shape {shape} does not say what its axes {', '.join(str(i) for i in unknown)} are "
            "(no axis metadata): save it with axes (OME-Zarr, OME-TIFF) or as a 2-D or 3-D array"
        )
    if len(unknown) == 1 and (channel is not None or plane is not None) and "c" not in axes:
        k = unknown[0]  # one axis of unknown meaning: it is what the user selects along
        axes = axes[:k] + ("c" if channel is not None else "z") + axes[k + 1 :]
    if "y" not in axes or "x" not in axes or len(axes) != nd:
        raise SpiralrayError(f"array of shape {shape} (axes '{axes}') is not an image with y and x axes")
    if plane == FIRST_PLANE:
        plane = {a: 0 for a in axes if a not in "cyx"}
    picks = dict(plane) if isinstance(plane, dict) else {}
    rest = [a for a, n in zip(axes, shape, strict=True) if a not in "yx" and n > 1]
    stack = [a for a in rest if a != "c"]
    absent = sorted(set(picks) - set(axes))
    if absent:
        raise SpiralrayError(
            f"--plane names axis '{absent[0]}', which the image does not have (axes '{axes}', shape {shape})"
        )
    if isinstance(plane, int):
        if not stack and "c" in rest:  # e.g. a 3-page TIFF its writer marked as RGB
            n = shape[axes.index("c")]
            raise SpiralrayError(
                f"--plane {plane}: the image's {n} planes are channels by its metadata (axes '{axes}', "
                f"shape {shape}): use --channel {plane}"
            )
        if not stack:
            raise SpiralrayError(
                f"--plane {plane}: the image is a single plane (axes '{axes}', shape {shape})"
            )
        if len(stack) != 1:
            raise SpiralrayError(
                f"--plane {plane} is ambiguous for axes '{axes}' of shape {shape}; "
                "name the axis, e.g. --plane z=3,t=0"
            )
        picks[stack[0]] = plane
    which = "N" if len(stack) == 1 else ",".join(f"{a}=N" for a in stack)  # what --plane needs
    unpicked = [a for a in stack if a not in picks]
    if "c" in rest and channel is None and unpicked and not guessed:  # both at once, not one by one
        raise SpiralrayError(
            f"image has {shape[axes.index('c')]} channels and is a stack (axes '{axes}', shape {shape}); "
            f"choose a channel with --channel and a plane with --plane {which}"
        )
    index = []
    for a, n in zip(axes, shape, strict=True):
        if a in "yx":
            index.append(slice(None))
            continue
        if a == "c" and n > 1:
            if channel is None:
                raise SpiralrayError(
                    f"image has {n} channels (axes '{axes}', shape {shape}); choose one with --channel"
                )
            k = channel
        elif n > 1:
            if a not in picks and guessed:
                raise SpiralrayError(
                    f"image has shape {shape}: expected a 2-D image; choose a channel with --channel "
                    "or a plane with --plane"
                )
            if a not in picks:
                raise SpiralrayError(
                    f"image is a stack (axes '{axes}', shape {shape}); choose a plane with --plane {which}"
                )
            k = picks[a]
        else:
            k = 0
        if not 0 <= k < n:
            what = "channel" if a == "c" else f"plane {a}"
            raise SpiralrayError(f"{what} {k} out of range: the image has {n} along axis '{a}'")
        index.append(int(k))
    if (
        channel is not None
        and "c" not in [a for a, n in zip(axes, shape, strict=True) if n > 1]
        and channel != 0
    ):
        raise SpiralrayError(f"channel {channel} out of range: image has 1 channel")
    if axes.index("y") > axes.index("x"):
        raise SpiralrayError(f"axes '{axes}': x before y is not supported")
    return Plane(axes, tuple(index))


def grey_of_colour(image: np.ndarray) -> np.ndarray | None:
    """The ``H x W`` grey image an ``H x W x C`` grey+alpha, RGB or RGBA one (C = 2 to 4) holds
    when its colour channels are equal (alpha aside: it is transparency, not signal), else None.
    Grey images saved as colour PNGs are common (the 2018 Data Science Bowl's are all RGBA)."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] not in (2, 3, 4) or min(a.shape[:2]) <= 4:
        return None
    colour = a[..., : 1 if a.shape[-1] == 2 else 3]
    first = colour[..., 0]
    rest = range(1, colour.shape[-1])
    if not all(np.array_equal(first[:8], colour[:8, :, k]) for k in rest):
        return None  # a colour image, most often seen in its first rows
    if all(np.array_equal(first, colour[..., k]) for k in rest):
        return np.ascontiguousarray(first)
    return None
