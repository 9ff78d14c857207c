"""Physical pixel size: read from an input's metadata, written into the labels' metadata, so
that labels overlay their image in physical units (napari, Fiji, QuPath) as they do in pixels.

A spacing is a plain JSON dict (it is kept in the manifest with the reader's description):
``{"scale": [sy, sx], "translation": [ty, tx], "unit": [uy, ux]}``, each unit an NGFF
(UDUNITS-2) spatial unit name or None. Level 0's pixel (i, j) is at (ty + sy*i, tx + sx*j).
Only metadata that says it is a pixel size is read: NGFF coordinate transformations, OME-XML
``PhysicalSizeX/Y`` and ImageJ's calibration. A plain TIFF's resolution tags are not (most
writers put 72 dpi there whatever the pixels are).
"""

from __future__ import annotations

import math
import re

# OME-XML's and ImageJ's unit spellings -> NGFF's
_UNITS = {
    "å": "angstrom",
    "angstrom": "angstrom",
    "pm": "picometer",
    "nm": "nanometer",
    "nanometer": "nanometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometer": "micrometer",
    "mm": "millimeter",
    "millimeter": "millimeter",
    "cm": "centimeter",
    "centimeter": "centimeter",
    "m": "meter",
    "meter": "meter",
    "inch": "inch",
    "in": "inch",
}
_OME_SYMBOL = {
    "angstrom": "Å",
    "picometer": "pm",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "inch": "in",
}
_NGFF = {
    *(p + "meter" for p in ("", "atto", "femto", "pico", "nano", "micro", "milli", "centi", "deci")),
    *(p + "meter" for p in ("kilo", "hecto", "mega", "giga", "tera", "peta", "exa", "yocto", "yotta")),
    *(p + "meter" for p in ("zepto", "zetta")),
    "angstrom",
    "inch",
    "foot",
    "mile",
    "yard",
    "parsec",
}
_PER_CM = {"nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0, "centimeter": 1.0, "meter": 0.01}


def unit_name(unit) -> str | None:
    """An NGFF unit name for ``unit`` (NGFF, OME-XML or ImageJ spelling), or None."""
    if not isinstance(unit, str):
        return None
    u = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")  # ImageJ escapes µ
    if u in _NGFF:
        return u
    return _UNITS.get(u) or _UNITS.get(u.lower())


def _positive(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def make(sy, sx, uy=None, ux=None, ty=0.0, tx=0.0) -> dict | None:
    """A spacing, or None when either size is not a positive finite number."""
    sy, sx = _positive(sy), _positive(sx)
    if sy is None or sx is None:
        return None
    ty, tx = (float(t) if isinstance(t, int | float) and math.isfinite(t) else 0.0 for t in (ty, tx))
    return {"scale": [sy, sx], "translation": [ty, tx], "unit": [unit_name(uy), unit_name(ux)]}


def _compose(transforms) -> tuple[list[float], list[float]] | None:
    """(scale, translation) of an NGFF list [scale] or [scale, translation]; None otherwise."""
    scale = trans = None
    for t in transforms or []:
        if not isinstance(t, dict):
            return None
        if t.get("type") == "scale" and isinstance(t.get("scale"), list):
            scale = [float(v) for v in t["scale"]]
        elif t.get("type") == "translation" and isinstance(t.get("translation"), list):
            trans = [float(v) for v in t["translation"]]
        elif t.get("type") not in ("identity",):
            return None  # a path to a transform, or a kind this reader does not compose
    if scale is None:
        return None
    return scale, trans or [0.0] * len(scale)


def from_ngff(multiscale: dict) -> dict | None:
    """Level 0's spacing in an NGFF 0.4/0.5 ``multiscales[0]`` entry (its dataset transforms,
    then the multiscale's own, applied after them, as the spec orders them)."""
    try:
        axes = multiscale["axes"]
        names = [(a["name"] if isinstance(a, dict) else a).lower() for a in axes]
        iy, ix = names.index("y"), names.index("x")
        level0 = _compose(multiscale["datasets"][0].get("coordinateTransformations"))
        if level0 is None:
            return None
        scale, trans = level0
        outer = (
            _compose(multiscale.get("coordinateTransformations"))
            if "coordinateTransformations" in multiscale
            else None
        )
        if outer is not None:
            gs, gt = outer
            trans = [g * t + o for g, t, o in zip(gs, trans, gt, strict=True)]
            scale = [g * s for g, s in zip(gs, scale, strict=True)]
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        return make(scale[iy], scale[ix], units[iy], units[ix], trans[iy], trans[ix])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def from_tiff(tif) -> dict | None:
    """The pixel size an OME-TIFF (first image's ``Pixels``) or an ImageJ TIFF records; None
    when neither does or its metadata cannot be read (the pixels are still the image)."""
    try:
        return _from_tiff(tif)
    except Exception:
        return None


def _from_tiff(tif) -> dict | None:
    if tif.is_ome and tif.ome_metadata:
        found = _from_ome_xml(tif.ome_metadata)
        if found is not None:
            return found
    meta = tif.imagej_metadata if tif.is_imagej else None
    if meta:
        unit = unit_name(meta.get("unit"))
        rx, ry = tif.pages[0].get_resolution()
        if unit is not None and _positive(rx) and _positive(ry):
            return make(1.0 / ry, 1.0 / rx, unit, unit)
    return None


def _from_ome_xml(xml: str) -> dict | None:
    m = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
    if m is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if "PhysicalSizeX" not in attrs or "PhysicalSizeY" not in attrs:
        return None
    ux, uy = attrs.get("PhysicalSizeXUnit", "µm"), attrs.get("PhysicalSizeYUnit", "µm")  # OME's default
    return make(attrs["PhysicalSizeY"], attrs["PhysicalSizeX"], uy, ux)


def ngff_axes(spacing: dict | None) -> list:
    """The labels' axes: y and x, with their units where known."""
    units = (spacing or {}).get("unit") or [None, None]
    out = []
    for name, unit in zip("yx", units, strict=True):
        axis = {"name": name, "type": "space"}
        if unit:
            axis["unit"] = unit
        out.append(axis)
    return out


def ngff_transforms(spacing: dict | None, level: int) -> list[dict]:
    """Pyramid level ``level``'s transforms: every 2**level-th pixel of level 0 (nearest
    neighbour keeps pixel 0 where it was, so the translation is level 0's)."""
    sy, sx = (spacing or {}).get("scale") or [1.0, 1.0]
    out = [{"type": "scale", "scale": [sy * 2.0**level, sx * 2.0**level]}]
    trans = (spacing or {}).get("translation") or [0.0, 0.0]
    if any(trans):
        out.append({"type": "translation", "translation": list(trans)})
    return out


def tiff_metadata(spacing: dict | None) -> dict:
    """``tifffile.imwrite`` keywords recording the pixel size: OME-XML (what Bio-Formats, Fiji
    and QuPath read) and, where the unit converts, the resolution tags in pixels per cm."""
    if not spacing or not all(spacing.get("unit") or [None]):
        return {}
    (sy, sx), (uy, ux) = spacing["scale"], spacing["unit"]
    if uy not in _OME_SYMBOL or ux not in _OME_SYMBOL:
        return {}
    meta = {
        "axes": "YX",
        "PhysicalSizeY": sy,
        "PhysicalSizeYUnit": _OME_SYMBOL[uy],
        "PhysicalSizeX": sx,
        "PhysicalSizeXUnit": _OME_SYMBOL[ux],
    }
    out = {"ome": True, "metadata": meta}
    if uy in _PER_CM and ux in _PER_CM:
        out["resolution"] = (_PER_CM[ux] / sx, _PER_CM[uy] / sy)
        out["resolutionunit"] = "CENTIMETER"
    return out


def micrometers(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` (an NGFF name) as micrometers; None for a unit without a length."""
    per_cm = _PER_CM.get(unit) if unit else None
    return None if per_cm is None else value * 1e4 / per_cm


def pixel_micrometers(spacing: dict | None) -> float | None:
    """The pixel's side in micrometers (the geometric mean of y and x when they differ), or None
    when the spacing is unknown or has no convertible unit."""
    if not spacing:
        return None
    sides = [micrometers(s, u) for s, u in zip(spacing["scale"], spacing["unit"], strict=True)]
    if None in sides:
        return None
    return math.sqrt(sides[0] * sides[1])


def parse_length(text: str) -> tuple[float, str] | None:
    """ "8um", "8 µm", "8.5micron", "800nm" -> (value, NGFF unit); None when ``text`` names no
    length unit (a bare number, "8px")."""
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([^\d\s.][^\s]*)\s*", str(text))
    if m is None:
        return None
    unit = unit_name(m.group(2))
    if unit is None or unit not in _PER_CM:
        return None
    try:
        return float(m.group(1)), unit
    except ValueError:
        return None
