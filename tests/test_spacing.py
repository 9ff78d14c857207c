"""The input's physical pixel size is read from its metadata (NGFF, OME-TIFF, ImageJ) and the
labels carry it, so that they overlay their image in physical units as they do in pixels."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile
import zarr

from spiralray.cli import main
from spiralray.core.objects import in_micrometers
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io import spacing
from spiralray.io.output import read_table
from spiralray.io.readers import open_image
from spiralray.io.storage import written_by_spiralray

UM = ["micrometer", "micrometer"]


def _multiscale(datasets_t, outer=None, units=("micrometer", "micrometer")):
    ms = {
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": units[0]},
            {"name": "x", "type": "space", "unit": units[1]},
        ],
        "datasets": [{"path": "0", "coordinateTransformations": datasets_t}],
    }
    if outer is not None:
        ms["coordinateTransformations"] = outer
    return ms


def test_ngff_level0_spacing_composes_dataset_and_multiscale_transforms():
    ds = [
        {"type": "scale", "scale": [1, 0.325, 0.4]},
        {"type": "translation", "translation": [0, 100.0, 50.0]},
    ]
    got = spacing.from_ngff(_multiscale(ds, outer=[{"type": "scale", "scale": [1, 2, 3]}]))
    # world = outer_scale * (scale * i + t): the y and x entries, not the channel's
    assert got == {"scale": [0.65, pytest.approx(1.2)], "translation": [200.0, 150.0], "unit": UM}
    assert spacing.from_ngff(_multiscale(ds[:1]))["translation"] == [0.0, 0.0]
    odd = spacing.from_ngff(_multiscale(ds[:1], units=("furlong", None)))
    assert odd["unit"] == [None, None] and odd["scale"] == [0.325, 0.4]  # no unit NGFF names
    for bad in ([{"type": "scale", "scale": [1, 0, 1]}], [{"type": "affine", "path": "x"}], []):
        assert spacing.from_ngff(_multiscale(bad)) is None  # not a pixel size: left out
    assert spacing.from_ngff({"axes": ["y", "x"], "datasets": [{"path": "0"}]}) is None  # NGFF 0.3
    # a multiscale transform this reader cannot compose: no spacing, not level 0's alone
    assert spacing.from_ngff(_multiscale(ds, outer=[{"type": "scale", "path": "s"}])) is None
    huge = [{"type": "scale", "scale": [1, 10**400, 1]}]  # malformed: never stops the image opening
    assert spacing.from_ngff(_multiscale(huge)) is None


def test_units_in_every_spelling_and_pyramid_transforms():
    for u in ("µm", "\\u00B5m", "micron", "um", "micrometer", "MICRON", "micrometers"):
        assert spacing.unit_name(u) == "micrometer", u
    assert spacing.unit_name("nm") == "nanometer" and spacing.unit_name("pixel") is None
    assert spacing.unit_name("Mm") == "megameter" and spacing.unit_name("mm") == "millimeter"  # case
    assert spacing._from_ome_xml(  # any namespace prefix, single quotes, entities
        "<ome:OME xmlns:ome='http://www.openmicroscopy.org/Schemas/OME/2016-06'><ome:Image>"
        "<ome:Pixels PhysicalSizeX='0.2' PhysicalSizeY='0.2' PhysicalSizeXUnit='&#181;m' "
        "PhysicalSizeYUnit='&#181;m'/></ome:Image></ome:OME>"
    ) == {"scale": [0.2, 0.2], "translation": [0.0, 0.0], "unit": UM}
    px = spacing.make(0.5, 0.25, "µm", "µm", 10, 0)
    assert spacing.ngff_transforms(px, 2) == [
        {"type": "scale", "scale": [2.0, 1.0]},  # every 4th pixel of level 0, nearest neighbour:
        {"type": "translation", "translation": [10.0, 0.0]},  # pixel 0 stays where it was
    ]
    assert spacing.ngff_transforms(None, 1) == [{"type": "scale", "scale": [2.0, 2.0]}]
    assert spacing.ngff_axes(px) == [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    assert spacing.make(float("nan"), 1) is None and spacing.make(-1, 1) is None


def test_tiff_pixel_size_from_ome_xml_and_imagej_but_not_resolution_tags_alone(tmp_path):
    a = np.zeros((40, 50), np.uint16)
    meta = {"axes": "YX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(tmp_path / "ome.tif", a, ome=True, metadata={**meta, "PhysicalSizeYUnit": "nm"})
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(4, 2), metadata={"unit": "\\u00B5m"})
    tifffile.imwrite(
        tmp_path / "dpi.tif", a, resolution=(72, 72), resolutionunit="INCH"
    )  # a writer's default
    got = open_image(str(tmp_path / "ome.tif")).spacing
    assert got == {"scale": [0.3, 0.2], "translation": [0.0, 0.0], "unit": ["nanometer"] * 2}
    assert open_image(str(tmp_path / "ij.tif")).spacing == {
        "scale": [0.5, 0.25],
        "translation": [0.0, 0.0],
        "unit": UM,
    }
    assert open_image(str(tmp_path / "dpi.tif")).spacing is None
    assert "spacing" not in open_image(str(tmp_path / "dpi.tif")).describe()


@pytest.fixture(scope="module")
def nuclei():
    return generate(SyntheticSpec(120, 140), seed=4)[0]


def test_micrometer_frames_convert_units_and_need_lengths():
    frame = spacing.micrometer_frame(spacing.make(325, 650, "nm", "nm", 7000, 3000))
    assert frame == pytest.approx((0.325, 0.65, 7.0, 3.0))
    assert spacing.micrometer_frame(spacing.make(1, 1)) is None  # no unit: not a length
    assert spacing.micrometer_frame(None) is None
    table = {
        "area": np.array([4, 10]),
        "centroid_y": np.array([0.0, 2.0]),
        "centroid_x": np.array([1.0, 1.0]),
    }
    got = in_micrometers(table, frame)
    assert got["area_um2"] == pytest.approx([4 * 0.325 * 0.65, 10 * 0.325 * 0.65])
    assert got["centroid_y_um"] == pytest.approx([7.0, 7.65]) and got["centroid_x_um"] == pytest.approx(
        [3.65] * 2
    )


def test_labels_carry_the_ome_zarr_inputs_pixel_size(tmp_path, nuclei, capsys):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    src = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w", zarr_format=2)
    src.create_array("0", data=np.stack([np.zeros_like(nuclei), nuclei]), chunks=(1, 64, 64))
    ds = [
        {"type": "scale", "scale": [1, 0.325, 0.325]},
        {"type": "translation", "translation": [0, 7.0, 3.0]},
    ]
    src.attrs["multiscales"] = [{"version": "0.4", **_multiscale(ds)}]
    out = tmp_path / "labels.zarr"
    assert main(["segment", str(tmp_path / "in.ome.zarr"), str(out), "--channel", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["spacing"] == {"scale": [0.325, 0.325], "translation": [7.0, 3.0], "unit": UM}
    for name in ("instances", "semantic"):
        node = next(n for n in Reader(parse_url(str(out / "labels")))() if n.metadata.get("name") == name)
        assert [a["unit"] for a in node.metadata["axes"]] == UM
        assert node.metadata["coordinateTransformations"][0] == [
            {"type": "scale", "scale": [0.325, 0.325]},
            {"type": "translation", "translation": [7.0, 3.0]},
        ]
    # the object table in micrometers too: areas, and centroids in the image's frame
    t = read_table(str(out))
    assert len(t["area"]) > 3 and np.allclose(t["area_um2"], t["area"] * 0.325**2)
    assert np.allclose(t["centroid_y_um"], 7.0 + 0.325 * t["centroid_y"])
    assert np.allclose(t["centroid_x_um"], 3.0 + 0.325 * t["centroid_x"])
    # a TIFF output: the offset as OME's plane position, in the pixel size's unit
    assert main(["segment", str(tmp_path / "in.ome.zarr"), str(tmp_path / "o.tif"), "--channel", "1"]) == 0
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        plane = next(e for e in ET.fromstring(tif.ome_metadata).iter() if e.tag.endswith("}Plane"))
        assert {k: plane.attrib[k] for k in ("PositionY", "PositionX", "PositionXUnit")} == {
            "PositionY": "7.0",
            "PositionX": "3.0",
            "PositionXUnit": "µm",
        }
    # the image recalibrated: the same command is refused (the labels' frame would be the old
    # one, and a diameter given as a length another number of pixels), --overwrite replaces
    ds[0]["scale"] = [1, 0.65, 0.65]
    src.attrs["multiscales"] = [{"version": "0.4", **_multiscale(ds)}]
    run = ["segment", str(tmp_path / "in.ome.zarr"), str(out), "--channel", "1", "--diameter", "9um"]
    assert main(["segment", str(tmp_path / "in.ome.zarr"), str(out), "--channel", "1"]) == 2
    assert "holds another run (pixel sizes differ): use --overwrite" in capsys.readouterr().err
    assert main([*run, "--overwrite", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        summary["diameter"]["diameter"] == pytest.approx(9 / 0.65)
        and summary["spacing"]["scale"] == [0.65] * 2
    )
    assert "source" not in zarr.open_group(str(out / "labels/instances")).attrs["ome"]["image-label"]
    # NGFF 0.5 (from a user test: validators refused every output): each level's array names the
    # multiscale's axes as its dimension_names
    for name in ("instances", "semantic"):
        group = zarr.open_group(str(out / "labels" / name))
        axes = [a["name"] for a in group.attrs["ome"]["multiscales"][0]["axes"]]
        for level in group.attrs["ome"]["multiscales"][0]["datasets"]:
            assert list(group[level["path"]].metadata.dimension_names) == axes == ["y", "x"]
    # an uncalibrated input keeps pixel units, as before
    tifffile.imwrite(tmp_path / "plain.tif", nuclei)
    assert main(["segment", str(tmp_path / "plain.tif"), str(tmp_path / "plain.zarr")]) == 0
    ms = zarr.open_group(str(tmp_path / "plain.zarr/labels/instances")).attrs["ome"]["multiscales"][0]
    assert ms["axes"] == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 1.0]}]
    assert np.isnan(read_table(str(tmp_path / "plain.zarr"))["area_um2"]).all()  # and no micrometers
    # a pixel size without a unit is named as such (a user test read 'does not record')
    ds = [{"type": "scale", "scale": [1, 0.325, 0.325]}]
    src.attrs["multiscales"] = [{"version": "0.4", **_multiscale(ds, units=(None, None))}]
    run = ["segment", str(tmp_path / "in.ome.zarr"), str(tmp_path / "nounit.zarr"), "--channel", "1"]
    assert main([*run, "--diameter", "8um"]) == 2
    assert "records 0.325 without a unit: give the diameter in px" in capsys.readouterr().err
    src.attrs["multiscales"] = [{"version": "0.4", **_multiscale(ds, units=("micrometer", None))}]
    assert main([*run, "--diameter", "8um"]) == 2
    assert "records 0.325 micrometer (y), 0.325 without a unit (x): give" in capsys.readouterr().err


def test_a_tiff_output_records_the_pixel_size_as_ome_xml_and_stays_recognised(tmp_path, nuclei):
    meta = {"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65}  # OME's default unit: µm
    tifffile.imwrite(tmp_path / "in.ome.tif", nuclei, ome=True, metadata=meta)
    out = tmp_path / "labels.tif"
    assert main(["segment", str(tmp_path / "in.ome.tif"), str(out)]) == 0
    labels = open_image(str(out))
    assert labels.spacing == {"scale": [0.65, 0.65], "translation": [0.0, 0.0], "unit": UM}
    with tifffile.TiffFile(out) as tif:
        rx, ry = tif.pages[0].get_resolution()
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert rx == pytest.approx(1e4 / 0.65, rel=1e-6) and ry == pytest.approx(1e4 / 0.65, rel=1e-6)
        assert tif.pages[0].dtype == np.uint32 and tif.asarray().max() > 3
    assert written_by_spiralray(str(out))  # still replaced by a re-run, never taken for the user's
    # seed ids are uint64, which OME-XML has no type for: the resolution tags alone
    assert main(["segment", str(tmp_path / "in.ome.tif"), str(tmp_path / "seed.tif"), "--ids", "seed"]) == 0
    with tifffile.TiffFile(tmp_path / "seed.tif") as tif:
        assert tif.pages[0].dtype == np.uint64 and not tif.is_ome
        assert tif.pages[0].get_resolution()[0] == pytest.approx(1e4 / 0.65, rel=1e-6)
    assert main(["segment", str(tmp_path / "in.ome.tif"), str(out), "--semantic", "--overwrite"]) == 0
    assert open_image(str(out)).dtype == np.uint8


def test_a_level_named_directly_has_its_own_pixel_size_and_a_v3_arrays_dimension_names_its_axes(
    tmp_path, nuclei, capsys
):
    """From a user test: ``img.ome.zarr/1`` (the one way to segment a coarser level) lost the
    image's axes and pixel size, and a zarr v3 array's ``dimension_names`` were not read."""
    src = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w")
    two = np.stack([np.zeros_like(nuclei), nuclei])
    src.create_array("0", data=two, chunks=(1, 64, 64))
    src.create_array("1", data=two[:, ::2, ::2], chunks=(1, 64, 64))
    ms = _multiscale([{"type": "scale", "scale": [1, 0.325, 0.325]}])
    ms["datasets"].append(
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.65, 0.65]}]}
    )
    src.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    level = open_image(str(tmp_path / "in.ome.zarr/1"), 1, None)
    assert level.shape == (nuclei.shape[0] // 2, nuclei.shape[1] // 2)
    assert level.spacing == {"scale": [0.65, 0.65], "translation": [0.0, 0.0], "unit": UM}
    out = tmp_path / "level1.zarr"
    assert main(["segment", str(tmp_path / "in.ome.zarr/1"), str(out), "--channel", "1"]) == 0
    ms_out = zarr.open_group(str(out / "labels/instances")).attrs["ome"]["multiscales"][0]
    assert ms_out["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [0.65, 0.65]}]
    # a bare zarr v3 array: its dimension names are its axes
    tc = zarr.create_array(
        str(tmp_path / "tc.zarr"),
        shape=(2, *two.shape),
        dtype=two.dtype,
        dimension_names=("t", "c", "y", "x"),
    )
    tc[1] = two
    picked = open_image(str(tmp_path / "tc.zarr"), 1, {"t": 1})
    assert picked.plane.axes == "tcyx" and np.array_equal(
        picked.read(0, nuclei.shape[0], 0, nuclei.shape[1]), nuclei
    )
    assert main(["segment", str(tmp_path / "tc.zarr"), str(tmp_path / "tc.tif"), "--channel", "1"]) == 2
    assert "--plane" in capsys.readouterr().err  # a stack named as such, not 'no axis metadata'
    # the object table says which frame and channel its objects came from (a user test: tables
    # of a time series' frames could not be told apart once concatenated)
    out = tmp_path / "t1.zarr"
    assert main(["segment", str(tmp_path / "tc.zarr"), str(out), "--channel", "1", "--plane", "t=1"]) == 0
    table = read_table(str(out))
    assert len(table["id"]) > 3 and set(table["t"]) == {1} and set(table["c"]) == {1} and "z" not in table
    # a singleton axis is no choice: the same pixels as a plain 2-D image give the same columns
    one = zarr.create_array(
        str(tmp_path / "one.zarr"),
        shape=(1, 1, *nuclei.shape),
        dtype=two.dtype,
        dimension_names=("t", "c", "y", "x"),
    )
    one[0, 0] = nuclei
    assert main(["segment", str(tmp_path / "one.zarr"), str(tmp_path / "one_out.zarr")]) == 0
    assert not {"t", "c", "z"} & set(read_table(str(tmp_path / "one_out.zarr")))
