"""The axes of a zarr image: NGFF multiscales metadata (0.4 in attributes, 0.5 under "ome"),
the OME-Zarr image holding a level named directly, or a zarr v3 array's ``dimension_names``;
and an image's channel names (NGFF omero labels, OME-XML), which ``--channel`` may give."""

from __future__ import annotations

from . import spacing


def ome_axes(attrs) -> tuple[dict | None, str | None]:
    """(multiscales[0], axes letters) of NGFF 0.4 (attrs) or 0.5 (attrs["ome"]) metadata."""
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not ms:
        return None, None
    axes = ms[0].get("axes")
    if axes is None:
        return ms[0], None
    return ms[0], "".join((a["name"] if isinstance(a, dict) else a)[0].lower() for a in axes)


def array_axes(url: str, node, storage_options=None) -> tuple[str | None, dict | None]:
    """(axes letters, spacing) of an array named directly: a level of the OME-Zarr
    image holding it (``img.ome.zarr/1``: that level's own pixel size), else the names a zarr
    v3 array gives its dimensions (``dimension_names``) where each is one of t, c, z, y, x."""
    import zarr

    from .readers import is_url, local

    parent, _, name = str(url).rstrip("/").rpartition("/")
    if parent and name:
        try:
            group = zarr.open_group(
                local(parent), mode="r", storage_options=storage_options if is_url(url) else None
            )
            ms, axes = ome_axes(dict(group.attrs))
            level = next((d for d in (ms or {}).get("datasets", []) if str(d.get("path")) == name), None)
        except Exception:  # no group above, or unreadable metadata: the array alone
            level = None
        if level is not None and axes and len(axes) == len(node.shape):
            return axes, spacing.from_ngff({**ms, "datasets": [level]})
    names = getattr(getattr(node, "metadata", None), "dimension_names", None)
    words = {"time": "t", "channel": "c", "channels": "c"}
    letters = [words.get(str(n).lower(), str(n).lower()) for n in names or ()]
    if len(letters) == len(node.shape) and all(a in "tczyx" and len(a) == 1 for a in letters):
        if len(set(letters)) == len(letters) and {"y", "x"} <= set(letters):
            return "".join(letters), None
    return None, None


def channel_names(attrs) -> list | None:
    """The channel labels of NGFF ``omero`` metadata (0.4 in attrs, 0.5 under "ome"), in order."""
    omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list):
        return None
    return [c.get("label") if isinstance(c, dict) else None for c in channels]


def ome_xml_channel_names(xml: str | None) -> list | None:
    """The first image's ``Channel`` names in OME-XML, in order (None where a channel has none)."""
    if not xml:
        return None
    import xml.etree.ElementTree as ET

    try:
        pixels = spacing.ome_pixels(xml)
    except ET.ParseError:
        return None
    if pixels is None:
        return None
    return [e.attrib.get("Name") for e in pixels if e.tag.rsplit("}", 1)[-1] == "Channel"]
