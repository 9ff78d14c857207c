"""Frozen configuration: the geometry contract shared by training and inference.

Every number of the thesis (Dekret 2019) lives here once; modules take these specs
instead of loose keyword arguments so training and inference cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegionSpec:
    """Stage-1 regions: reflect padding, region size and the crop grid.

    Regions of ``height x width`` are cut from the image reflect-padded by ``pad`` px, top-left
    corners every ``stride`` px of the padded image. A region's centre is ``(height // 2,
    width // 2)`` in region coordinates, so in image coordinates the grid of centres is
    ``(i * stride + offset_y, j * stride + offset_x)``.
    """

    height: int = 52
    width: int = 58
    pad: int = 28
    stride: int = 16  # the thesis's training grid
    centre_window: int = 5  # c of formula (2)

    @property
    def centre(self) -> tuple[int, int]:
        return self.height // 2, self.width // 2

    @property
    def offset(self) -> tuple[int, int]:
        """Image coordinates of the centre of the region whose padded top-left is (0, 0)."""
        cy, cx = self.centre
        return cy - self.pad, cx - self.pad


@dataclass(frozen=True)
class SpiralSpec:
    """Stage-2 recursion: field of view, block size and border continuation."""

    block: int = 8  # n: the n x n centre of each prediction is written
    threshold: float = 0.5  # central-channel threshold applied after the last step
    max_hops: int = 8  # border continuation: extra regions per object at most
    continuation: bool = True
    # A region whose central object covers half its border and a quarter of each side continues
    # no further (``spiral.is_flood``): at the model's scale no nucleus does; a flood on out-of-domain
    # input (an inverted frame: 85-90% of candidates) would run all max_hops. On for every model,
    # older ones included: a bound on work, which changes no validation label of v12.
    stop_floods: bool = True
    # "centred": the first block centred on the region (63 steps for 52 x 58, n = 8);
    # "fewest": the block grid shifted so the fewest blocks cover the region (56 steps).
    layout: str = "centred"


@dataclass(frozen=True)
class CandidateSpec:
    """Which scored regions are segmented and how their masks become objects."""

    threshold: float = 0.4  # t: regions scoring >= t go to stage 2
    stride: int = 8  # prediction grid stride (the thesis used 16; 8 + NMS covers more nuclei)
    nms_radius: float = 10.0  # keep score-map local maxima within this radius (px)
    overlap: float = 0.5  # intersection / smaller mask above this: the same object
    min_area: int = 12  # objects smaller than this (px) are dropped
    # A mask whose seed lies inside an accepted object's mask while it leaves that object's seed
    # out is a neighbour the accepted mask swallowed: carve it out instead of dropping it as a
    # duplicate (see candidates.py).
    split_swallowed: bool = True
    fill_holes: bool = True  # nuclei are simply connected: a hole in a mask is a missed pixel
    # Split a resolved object where its mask narrows to a neck (core.necks): a saddle of the
    # distance transform at most this times the smaller lobe's peak. 0 = never split.
    neck: float = 0.0
    # Peel each object's outline pixels dimmer than this fraction of the way from its local
    # background to its interior (core.outline), before the resolve. 0 = never.
    outline_level: float = 0.0
    # Drop objects under faint_area px whose interior stands less than faint_contrast (normalised
    # intensity, 1 = the image's bright nuclei) above their local background (core.outline),
    # before the resolve: textured background the scorer passes as nuclei. 0 = never.
    faint_contrast: float = 0.0
    faint_area: int = 0
    # Drop objects touching the image border: a cut nucleus biases size and intensity readouts
    # (CellProfiler's and skimage's clear_border convention). Off: a cut nucleus is still one.
    exclude_border: bool = False

    @property
    def faint(self) -> tuple[float, int]:
        """``core.outline.refine_objects``'s faint rule: (contrast, area)."""
        return self.faint_contrast, self.faint_area


@dataclass(frozen=True)
class ModelSpec:
    """Network shapes; stored beside the weights so a model directory describes itself."""

    in_channels: int = 1
    seg_width: int = 32  # each input branch
    seg_trunk: int = 64
    seg_skip_modules: int = 2
    seg_skip_inner: int = 0  # channels inside each skip module; 0: seg_trunk // 2 (the thesis's 32)
    scorer_hidden: int = 128
    norm: str = "percentile"  # "percentile" (1st-99.8th) or "minmax" (the thesis)
    norm_low: float = 1.0
    norm_high: float = 99.8
    # The scorer's training label: "thesis" is formula (2), ~0.95 anywhere inside a nucleus, so
    # NMS keeps one seed of two touching nuclei; "centred" weights formula (2) by each pixel's
    # distance to its object's border (1 at the object's centre), so each nucleus has its own peak.
    score_label: str = "thesis"
    # The nucleus diameter (px, median equivalent diameter) the networks were trained at: an
    # image whose nuclei differ by more than the dead band is resampled to it (core/scale.py).
    diameter: float = 27.7


@dataclass(frozen=True)
class SpiralNetConfig:
    region: RegionSpec = field(default_factory=RegionSpec)
    spiral: SpiralSpec = field(default_factory=SpiralSpec)
    candidates: CandidateSpec = field(default_factory=CandidateSpec)
    model: ModelSpec = field(default_factory=ModelSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpiralNetConfig:
        """The config of ``to_dict``'s form (sections may be partial: the rest are defaults).
        A misspelt or mistyped setting raises ``ValueError`` naming it: a hand-edited
        ``config.json`` whose typo left a rule off would otherwise say nothing."""
        sections = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        _no_unknown(d, sections, "")
        return cls(**{name: _section(name, kind, d.get(name)) for name, kind in sections.items()})

    def replace(self, **sections) -> SpiralNetConfig:
        """Copy with some fields of some sections changed: ``cfg.replace(candidates={"stride": 16})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)


def _no_unknown(values: dict, known, where: str) -> None:
    import difflib

    unknown = sorted(set(values) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" (did you mean {where}{close[0]}?)" if close else f" (known: {', '.join(known)})"
        raise ValueError(f"unknown setting {where}{unknown[0]}{hint}")


def _section(name: str, kind, values: dict | None):
    """One section of the config from its dict, each value checked against its default's type."""
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"setting {name} is {values!r}, expected a section of settings")
    defaults = kind()
    _no_unknown(values or {}, [f.name for f in dataclasses.fields(kind)], f"{name}.")
    return kind(**{k: _typed(f"{name}.{k}", v, getattr(defaults, k)) for k, v in (values or {}).items()})


def _typed(where: str, value, default):
    """``value`` as its default's type (a whole float where an int is wanted: the int), or a
    ValueError naming the setting."""
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    else:
        ok, want = True, ""
    if not ok:
        raise ValueError(f"setting {where} is {value!r}, expected {want}")
    return value
