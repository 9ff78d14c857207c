"""The per-image plan: decisions made once per image, before any tile, and recorded in the
manifest so a resumed run (or any worker) uses the same ones: the normalisation statistics
(exact, streamed over the image's chunks), the scale, the tile grid and the image's index in
its archive (which the seed ids carry).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.config import SpiralNetConfig
from ..core.tiling import MIN_TILE, Tile, tile_grid
from ..data.normalize import streaming_stats
from ..errors import SpiralrayError

VERSION = 1


@dataclass
class ImagePlan:
    input: str  # redacted URL or absolute path
    index: int  # position in the archive's sorted path list (0 for one image)
    shape: tuple[int, int]
    dtype: str
    source: dict  # the reader's description: kind, axes, plane, chunks, missing chunks
    stats: tuple[float, float] | None  # normalisation bounds; None: a constant image
    tile_size: int
    scale: float = 1.0
    extra: dict = field(default_factory=dict)

    def tiles(self) -> list[Tile]:
        return tile_grid(self.shape, self.tile_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImagePlan:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["stats"] = tuple(d["stats"]) if d["stats"] is not None else None
        return cls(**d)


def check_tile_size(tile_size: int) -> None:
    if tile_size < MIN_TILE:
        raise SpiralrayError(f"tile size {tile_size} is below the minimum of {MIN_TILE} px")


def image_stats_of(reader, cfg: SpiralNetConfig) -> tuple[float, float] | None:
    """Exact per-image normalisation bounds, streamed over the reader's chunk bands."""
    m = cfg.model

    def chunks():
        for box in reader.windows():
            a = reader.read(*box)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise SpiralrayError(f"{reader.describe()['url']} contains NaN or infinite values")
            yield a

    lo, hi = streaming_stats(chunks, reader.dtype, m.norm, m.norm_low, m.norm_high)
    return (lo, hi) if hi > lo else None


def make_plan(reader, cfg: SpiralNetConfig, tile_size: int, index: int = 0) -> ImagePlan:
    check_tile_size(tile_size)
    H, W = reader.shape
    r = cfg.region
    if H < r.height or W < r.width:
        raise SpiralrayError(f"image is {H} x {W} px, smaller than one region ({r.height} x {r.width})")
    desc = reader.describe()
    return ImagePlan(
        input=desc["url"],
        index=index,
        shape=(H, W),
        dtype=desc["dtype"],
        source=desc,
        stats=image_stats_of(reader, cfg),
        tile_size=tile_size,
    )


def weights_hash(net) -> str:
    """sha256 of the model's tensors (names, shapes, bytes): which weights made an output."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def identity(manifest: dict) -> dict:
    """The parts of a manifest that must match for a run to resume an existing output."""
    return {
        "version": manifest.get("version"),
        "inputs": [
            (p["input"], list(p["shape"]), p["source"].get("plane")) for p in manifest.get("images", [])
        ],
        "model": manifest.get("model", {}).get("weights_sha256"),
        "params": manifest.get("params"),
    }


def mismatch(old: dict, new: dict) -> str | None:
    """What differs between an existing output's manifest and this run's (None: the same)."""
    a, b = identity(old), identity(new)
    for key, what in (
        ("version", "format version"),
        ("inputs", "input"),
        ("model", "model"),
        ("params", "parameters"),
    ):
        if a[key] != b[key]:
            if key == "params":
                diff = sorted(
                    k
                    for k in set(a[key] or {}) | set(b[key] or {})
                    if (a[key] or {}).get(k) != (b[key] or {}).get(k)
                )
                return f"parameters ({', '.join(diff)})"
            return what
    return None
