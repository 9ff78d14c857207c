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

# OME-XML's and ImageJ's symbols -> NGFF's names: case matters ("Mm" is not "mm")
_SI = {"Y": "yotta", "Z": "zetta", "E": "exa", "P": "peta", "T": "tera", "G": "giga", "M": "mega"}
_SI |= {"k": "kilo", "h": "hecto", "": "", "d": "deci", "c": "centi", "m": "milli", "µ": "micro"}
_SI |= {"n": "nano", "p": "pico", "f": "femto", "a": "atto", "z": "zepto", "y": "yocto"}
_SYMBOLS = {f"{k}m": f"{v}meter" for k, v in _SI.items()}
_SYMBOLS |= {"μm": "micrometer", "um": "micrometer", "Å": "angstrom", "in": "inch", "ft": "foot"}
_SYMBOLS |= {"yd": "yard", "mi": "mile", "pc": "parsec"}
# words, in any case
_WORDS = {"micron": "micrometer", "microns": "micrometer", "angstroms": "angstrom", "inches": "inch"}
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
_PREFIXES = ("", "atto", "femto", "pico", "nano", "micro", "milli", "centi", "deci", "kilo", "hecto")
_PREFIXES += ("mega", "giga", "tera", "peta", "exa", "yocto", "yotta", "zepto", "zetta")
_NGFF = {p + "meter" for p in _PREFIXES} | {"angstrom", "inch", "foot", "mile", "yard", "parsec"}
# lengths a diameter can be given in and a TIFF's resolution tags written in: per centimeter
_PER_CM = {"angstrom": 1e8, "picometer": 1e10, "nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0}
_PER_CM |= {"centimeter": 1.0, "meter": 0.01, "inch": 1 / 2.54}
# OME's Pixels types: the dtypes a TIFF output can carry OME-XML for (not uint64)
_OME_DTYPES = {"int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64", "bool"}


def unit_name(unit) -> str | None:
    """An NGFF unit name for ``unit`` (NGFF, OME-XML or ImageJ spelling), or None."""
    if not isinstance(unit, str):
        return None
    u = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")  # ImageJ escapes µ
    if u in _NGFF or u in _SYMBOLS:
        return _SYMBOLS.get(u, u)
    word = u.lower()
    for w in (word, word[:-1] if word.endswith("s") else word):  # "micrometers"
        if w in _NGFF or w in _WORDS:
            return _WORDS.get(w, w)
    return None


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
    # 12 digits: an ImageJ rational's 1 / (20/13) reads 0.65, not 0.6499999999999999
    sy, sx = float(f"{sy:.12g}"), float(f"{sx:.12g}")
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
        if "coordinateTransformations" in multiscale:  # applied after the dataset's
            outer = _compose(multiscale["coordinateTransformations"])
            if outer is None:
                return None  # present but not composable here: level 0's alone would be wrong
            gs, gt = outer
            trans = [g * t + o for g, t, o in zip(gs, trans, gt, strict=True)]
            scale = [g * s for g, s in zip(gs, scale, strict=True)]
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        return make(scale[iy], scale[ix], units[iy], units[ix], trans[iy], trans[ix])
    except Exception:  # malformed metadata: the pixels are still the image
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


def ome_pixels(xml: str):
    """The first image's ``Pixels`` element of OME-XML (namespace prefixes aside), or None."""
    import xml.etree.ElementTree as ET

    return next((e for e in ET.fromstring(xml).iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)


def _from_ome_xml(xml: str) -> dict | None:
    """The first image's ``Pixels`` PhysicalSizeX/Y (OME's default unit: µm)."""
    pixels = ome_pixels(xml)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib or "PhysicalSizeY" not in pixels.attrib:
        return None
    a = pixels.attrib
    ux, uy = a.get("PhysicalSizeXUnit", "µm"), a.get("PhysicalSizeYUnit", "µm")
    return make(a["PhysicalSizeY"], a["PhysicalSizeX"], uy, ux)


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


def tiff_metadata(spacing: dict | None, dtype) -> dict:
    """``tifffile.imwrite`` keywords recording the pixel size of a ``dtype`` label image: the
    resolution tags in pixels per cm, and OME-XML (what Bio-Formats, Fiji and QuPath read)
    where OME has the pixel type (not uint64: ``--ids seed``) and the unit; its ``Plane``
    PositionY/X carry an offset (the translation) where there is one."""
    if not spacing or not all(spacing.get("unit") or [None]):
        return {}
    (sy, sx), (uy, ux) = spacing["scale"], spacing["unit"]
    out = {}
    if uy in _PER_CM and ux in _PER_CM:
        out["resolution"] = (_PER_CM[ux] / sx, _PER_CM[uy] / sy)
        out["resolutionunit"] = "CENTIMETER"
    if str(dtype) in _OME_DTYPES and uy in _OME_SYMBOL and ux in _OME_SYMBOL:
        out["ome"] = True
        out["metadata"] = {
            "axes": "YX",
            "PhysicalSizeY": sy,
            "PhysicalSizeYUnit": _OME_SYMBOL[uy],
            "PhysicalSizeX": sx,
            "PhysicalSizeXUnit": _OME_SYMBOL[ux],
        }
        ty, tx = spacing.get("translation") or [0.0, 0.0]
        if ty or tx:  # where pixel (0, 0) lies (an OME-Zarr input's translation), as Fiji reads it
            out["metadata"]["Plane"] = {
                "PositionY": [ty],
                "PositionYUnit": [_OME_SYMBOL[uy]],
                "PositionX": [tx],
                "PositionXUnit": [_OME_SYMBOL[ux]],
            }
    return out


def micrometers(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` (an NGFF name) as micrometers; None for a unit without a length."""
    per_cm = _PER_CM.get(unit) if unit else None
    return None if per_cm is None else value * 1e4 / per_cm


def micrometer_frame(spacing: dict | None) -> tuple[float, float, float, float] | None:
    """(sy, sx, ty, tx) in micrometers: the pixel's height and width and pixel (0, 0)'s position
    (``core.objects.in_micrometers``), or None when the spacing is unknown or not a length."""
    if not spacing:
        return None
    (sy, sx), (ty, tx), (uy, ux) = spacing["scale"], spacing["translation"], spacing["unit"]
    out = (micrometers(sy, uy), micrometers(sx, ux), micrometers(ty, uy), micrometers(tx, ux))
    return None if None in out else out


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
