"""Dark nuclei on a bright background (brightfield, a stain's absorbance): ``--invert`` reads
the image inverted. The normalisation bounds are the negated image's, high first, so an
inverted field segments as its fluorescence twin, tiled or whole, in the CLI, the API and on
Ray, and a resumed run must match the setting."""

import json

import numpy as np
import pytest
import tifffile
import zarr

from spiralray import api
from spiralray.cli import main
from spiralray.core.config import SpiralNetConfig
from spiralray.core.metrics import evaluate
from spiralray.data.normalize import apply_stats
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.io.planes import choose_plane
from spiralray.io.readers import ImageReader
from spiralray.pipeline.plan import image_stats_of


@pytest.fixture(scope="module")
def engine():
    return api.load_engine(None)


@pytest.fixture(scope="module")
def field():
    """A synthetic fluorescence field, its brightfield-like inverse (uint16) and the truth."""
    image, truth = generate(SyntheticSpec(300, 360, offset=(800.0, 800.0)), seed=21)
    return image, (65535 - image).astype(np.uint16), truth


@pytest.fixture(scope="module")
def inverted(engine, field):
    """The inverse field segmented whole with ``invert=True``."""
    return api.segment_image(engine, field[1], invert=True)


def _reader(a: np.ndarray) -> ImageReader:
    return ImageReader("memory", a, choose_plane(a.shape, "yx", None, None), a.shape, True, "memory")


def test_inverted_bounds_are_the_negated_images_high_first(field):
    image, inverse, _ = field
    cfg = SpiralNetConfig()
    (lo, hi), _ = image_stats_of(_reader(image), cfg)
    (ilo, ihi), _ = image_stats_of(_reader(inverse), cfg, invert=True)
    assert ilo > ihi  # high first: the bright background maps to 0
    assert (ilo, ihi) == pytest.approx((65535 - lo, 65535 - hi), abs=1e-6)  # P1(-x) = -P99(x)...
    a, b = apply_stats(image, (lo, hi)), apply_stats(inverse, (ilo, ihi))
    assert np.allclose(a, b, atol=1e-6)  # ...so both normalise to the same numbers
    assert image_stats_of(_reader(np.full((60, 70), 9, np.uint8)), cfg, invert=True)[0] is None  # constant


def test_an_inverted_field_segments_as_its_fluorescence_twin(engine, field, inverted):
    image, inverse, truth = field
    native = api.segment_image(engine, image)
    assert np.array_equal(inverted.labels, native.labels) and native.labels.max() > 10
    assert inverted.diameter == native.diameter  # the estimate saw the same normalised pixels
    f1 = evaluate(native.labels, truth)["object_f1_50"]
    assert f1 > 0.7
    # read as it is, the background is taken for nuclei: the option is what makes it work
    assert evaluate(api.segment_image(engine, inverse).labels, truth)["object_f1_50"] < f1 - 0.3
    with pytest.raises(SpiralrayError, match="invert must be True or False, got 'yes'"):
        api.segment_image(engine, inverse, invert="yes")


def test_the_cli_tiles_as_the_whole_says_so_and_a_resume_must_match_it(tmp_path, field, inverted, capsys):
    _, inverse, _ = field
    tifffile.imwrite(tmp_path / "bf.tif", inverse)
    run = ["segment", str(tmp_path / "bf.tif"), str(tmp_path / "o.zarr"), "--tile-size", "256"]
    assert main([*run, "--invert"]) == 0
    assert "; inverted (dark nuclei)" in capsys.readouterr().out
    tiled = zarr.open_array(str(tmp_path / "o.zarr/labels/instances/0"), mode="r")[:]
    assert np.array_equal(tiled, inverted.labels) and tiled.max() > 10  # tiled == whole
    assert main(run) == 2
    assert "(parameters (invert) differ)" in capsys.readouterr().err
    assert main([*run, "--invert", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["resumed"] == "already complete" and s["invert"] is True and s["stats"][0] > s["stats"][1]


def test_on_ray_as_in_this_process(ray_cluster, tmp_path, field, inverted, capsys):
    """Tiled on Ray equals the whole image segmented in this process (the local executor's
    tiles equal it too: test_the_cli_tiles_as_the_whole...)."""
    _, inverse, _ = field
    tifffile.imwrite(tmp_path / "bf.tif", inverse)
    out = tmp_path / "ray.tif"
    flags = ["--tile-size", "256", "--invert", "--executor", "ray"]
    assert main(["segment", str(tmp_path / "bf.tif"), str(out), *flags]) == 0, capsys.readouterr().err
    assert np.array_equal(tifffile.imread(out), inverted.labels) and inverted.labels.max() > 0


def test_missing_chunks_must_be_named_as_padding_when_inverted(tmp_path, field, capsys):
    """A missing chunk reads as the fill value (0): background for bright nuclei, the brightest
    signal when inverted. Refused in one line unless the fill is named as padding."""
    _, inverse, _ = field
    z = zarr.create_array(
        str(tmp_path / "bf.zarr"), shape=inverse.shape, chunks=(128, 128), dtype=inverse.dtype
    )
    z[...] = inverse
    (tmp_path / "bf.zarr" / "c" / "1" / "1").unlink()  # rows and columns 128-256
    run = ["segment", str(tmp_path / "bf.zarr"), str(tmp_path / "o.tif"), "--invert"]
    assert main(run) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.endswith(
            "1 chunks are missing and read as 0, which --invert reads as the brightest signal:"
            " name it as padding (--pad-value 0)"
        )
        and len(err.splitlines()) == 1
    ), err
    assert main([*run, "--pad-value", "0"]) == 0
    labels = tifffile.imread(tmp_path / "o.tif")
    assert labels.max() > 10 and (labels[140:244, 140:244] == 0).all()  # the hole is background


def test_an_archive_summary_says_inverted():
    from spiralray.cli_segment import summary_line

    archive = {"per_image": [{"invert": False}, {"invert": True}], "objects": 3}
    assert "; inverted (dark nuclei)" in summary_line(archive, "out", None)
    assert "inverted" not in summary_line({"per_image": [{"invert": False}]}, "out", None)


def test_dark_nuclei_read_as_they_are_get_a_hint_naming_the_flag(tmp_path, field, capsys):
    """The model knows bright nuclei on a dark background: where the image's tails say the
    objects are dark (dark nuclei read as they are, or bright ones read with --invert) the
    summary names the flag to try; an image read the right way gets no hint."""
    from spiralray.data.normalize import looks_inverted, pad_text
    from spiralray.data.normalize import polarity as polarity_of
    from spiralray.pipeline.plan import make_plan

    image, inverse, _ = field
    cfg = SpiralNetConfig()

    def polarity(a, invert):
        return make_plan(_reader(a), cfg, 1024, invert=invert).diameter["polarity"]

    assert polarity(image, False) > 0.3 and polarity(inverse, True) > 0.3  # read the right way
    assert polarity(inverse, False) < -0.3 and polarity(image, True) < -0.3  # the wrong way
    sparse = generate(SyntheticSpec(512, 512, density=0.00002), seed=3)[0]  # few dark nuclei: noise only
    d = make_plan(_reader((65535 - sparse).astype(np.uint16)), cfg, 1024).diameter
    assert d["reason"] == "noise only" and looks_inverted(d), d  # ...but the hint still comes
    # 8-bit rounding tilts pure noise's tails (-0.33 here): a noise-only field needs twice the cue
    assert not looks_inverted({"reason": "noise only", "polarity": -0.45}) and looks_inverted(
        {"polarity": -0.45}
    )
    # padding nobody named (a block of 0) fills the dark tail; named, it is left out
    padded = image.astype(np.float32) + 100000  # a camera offset far above the nuclei's contrast
    padded[:40] = 0
    d = make_plan(_reader(padded), cfg, 1024).diameter
    assert looks_inverted(d) and d["polarity_floor"] == 0, d
    d = make_plan(_reader(padded), cfg, 1024, pad_value=0).diameter
    assert d["polarity"] > 0.3 and "polarity_floor" not in d, d
    clipped = np.clip(inverse // 256 - 100, 0, 255).astype(np.uint8)  # dark nuclei clipped at 0
    assert polarity_of([clipped])[0] < -0.3 and polarity_of([clipped])[1] is None  # 1, 2.. sit right above
    dark_field = inverse.copy()
    dark_field[:200] = 0  # two thirds of a dark-nuclei field padded: named, the rest still reads dark
    assert make_plan(_reader(dark_field), cfg, 1024, pad_value=0).diameter["polarity"] < -0.3
    dark = "dark nuclei on a bright background (polarity -0.{}): if so, rerun with --invert)"
    bright = (
        "bright nuclei on a dark background (polarity -0.{} read inverted): if so, rerun without --invert)"
    )
    for pixels, flags, expected in ((image, [], None), (inverse, [], dark), (image, ["--invert"], bright)):
        tifffile.imwrite(tmp_path / "in.tif", pixels[:128, :128])  # the wrong way runs long: small
        assert (
            main(["segment", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--overwrite", *flags]) == 0
        )
        out = capsys.readouterr().out
        if expected is None:
            assert "looks like" not in out, out
        else:
            head, tail = expected.split("{}")
            assert f"; looks like {head}" in out and tail in out.split(head)[1], out
    tifffile.imwrite(tmp_path / "in.tif", padded[:128, :160])
    assert main(["segment", str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert (
        "or like padding at 0: if 0 is padding, name it with --pad-value 0; if not, rerun with --invert)"
        in out
    )
    archive = {"input": "s3://b/plate.zarr", "per_image": [
        {"input": f"s3://b/plate.zarr/{k}/0", "diameter": {"polarity": v}}
        for k, v in (("A/1", 0.9), ("A/2", -0.93), ("B/1", 0.2), ("B/2", -0.88))
    ], "objects": 3}  # fmt: skip
    from spiralray.cli_segment import summary_line

    line = summary_line(archive, "out", None)
    assert (
        "; 2 of 4 images look like dark nuclei on a bright background (A/2/0, B/2/0): if so, segment those"
        in line
    )
    for i in archive["per_image"]:
        i["diameter"]["polarity_floor"] = 1234567.0  # padding nobody named, in every hinted image
    line = summary_line(archive, "out", None)
    assert (
        "(A/2/0, B/2/0), or like padding at 1234567: if 1234567 is padding, name it with --pad-value 1234567;"
        in line
    )
    assert pad_text(0.0) == "0" and pad_text(0.123456789) == "0.123456789"


def test_an_archive_summary_counts_missing_chunks_and_failed_images():
    """From a user test: an archive run never said that an image had missing chunks (read as
    the fill value: few objects there), which a one-image run says; and '1 of 2 images already
    complete' left out the image that failed."""
    from spiralray.cli_segment import summary_line

    archive = {"input": "s3://b/arc", "per_image": [
        {"input": "s3://b/arc/a.zarr", "missing_chunks": 0, "resumed": "already complete"},
        {"input": "s3://b/arc/sub/gap.zarr", "missing_chunks": 3},
    ], "failed": [{"input": "s3://b/arc/bad.tif", "error": "truncated"}], "objects": 9}  # fmt: skip
    line = summary_line(archive, "out", None)
    assert ", 3 missing chunks read as fill value (in sub/gap.zarr)" in line
    assert "; 1 of 3 images already complete" in line
    assert "missing" not in summary_line({**archive, "per_image": archive["per_image"][:1]}, "out", None)
    assert summary_line({"missing_chunks": 2}, "out", None).endswith(", 2 missing chunks read as fill value)")
