"""A named pad value (0 or NaN where images were stitched, registered or padded): left out of
the per-image statistics, read as background, recorded in the plan, and the same numbers
tiled or whole."""

import json

import numpy as np
import pytest
import tifffile

from spiralray import api
from spiralray.cli import main
from spiralray.core.config import SpiralNetConfig
from spiralray.core.metrics import evaluate
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.io.planes import choose_plane
from spiralray.io.readers import ImageReader
from spiralray.pipeline.local import Options, segment_array
from spiralray.pipeline.plan import image_stats_of

PAD_ROWS = 80


@pytest.fixture(scope="module")
def engine():
    return api.load_engine(None)


def _reader(a: np.ndarray) -> ImageReader:
    return ImageReader("memory", a, choose_plane(a.shape, "yx", None, None), a.shape, True, "memory")


def _padded(seed=3):
    """A synthetic field behind a 2000-count camera offset with its top rows zero-filled."""
    image, truth = generate(SyntheticSpec(320, 400, offset=(2000.0, 2000.0)), seed=seed)
    padded = image.copy()
    padded[:PAD_ROWS] = 0
    return image, padded, truth


def test_the_pad_value_is_left_out_of_the_statistics():
    cfg = SpiralNetConfig()
    rng = np.random.default_rng(0)
    a = rng.integers(300, 4000, (90, 70)).astype(np.uint16)
    a[:30] = 0
    stats, padded = image_stats_of(_reader(a), cfg, 0.0)
    assert padded == 30 * 70
    assert np.allclose(stats, np.percentile(a[30:], (1.0, 99.8)))
    assert image_stats_of(_reader(a), cfg)[0][0] == 0  # unnamed, the padding is data
    f = a.astype(np.float32)
    f[:30] = np.nan
    with pytest.raises(SpiralrayError, match="NaN or infinite values .if NaN marks padding"):
        image_stats_of(_reader(f), cfg)
    stats_nan, padded_nan = image_stats_of(_reader(f), cfg, float("nan"))
    assert padded_nan == padded and np.allclose(stats_nan, stats)
    f[40, 5] = np.inf  # NaN named as padding; an infinity is still bad data
    with pytest.raises(SpiralrayError, match="NaN or infinite"):
        image_stats_of(_reader(f), cfg, float("nan"))
    assert image_stats_of(_reader(np.zeros((20, 20), np.uint8)), cfg, 0.0) == (None, 400)  # all padding


def test_a_padded_field_segments_as_the_unpadded_one(engine):
    image, padded, truth = _padded()
    rows = slice(PAD_ROWS + 20, None)  # away from the padding's edge
    f1 = lambda r: evaluate(r.labels[rows], truth[rows])["object_f1_50"]  # noqa: E731
    whole = f1(api.segment_image(engine, image))
    named = api.segment_image(engine, padded, pad_value=0)
    # unnamed, the zeros drag the low percentile to 0 and few nuclei are found (0.06 here)
    assert f1(api.segment_image(engine, padded)) < 0.5
    assert f1(named) >= whole - 0.05 and whole > 0.7, (f1(named), whole)
    assert not named.labels[:PAD_ROWS].any()  # the padding reads as background
    as_nan = padded.astype(np.float32)
    as_nan[:PAD_ROWS] = np.nan
    kept = as_nan.copy()
    assert np.array_equal(api.segment_image(engine, as_nan, pad_value=float("nan")).labels, named.labels)
    assert np.array_equal(as_nan, kept, equal_nan=True)  # the caller's image is left as it was


def test_tiled_equals_whole_with_a_pad_value(engine):
    _, padded, _ = _padded(seed=4)
    padded[:, :50] = 0  # padding across several tiles
    whole = api.segment_image(engine, padded, ids="seed", pad_value=0)
    tiled = segment_array(padded, engine, Options(tile_size=256, ids="seed", pad_value=0))
    assert tiled["padded_pixels"] == int((padded == 0).sum())
    assert np.array_equal(tiled["labels"], whole.labels) and whole.labels.max() > 0


def test_options_and_the_api_check_the_pad_value(engine):
    with pytest.raises(SpiralrayError, match="pad value must be a number"):
        Options(pad_value="zero")
    with pytest.raises(SpiralrayError, match="pad value must be a number"):
        api.segment_image(engine, np.ones((100, 120), np.uint16), pad_value=10**400)
    assert Options(pad_value="0").pad_value == 0.0


@pytest.mark.parametrize("value,expected", [("abc", "must be a number"), ("inf", "must be finite")])
def test_bad_pad_values_are_one_line(tmp_path, capsys, value, expected):
    tifffile.imwrite(tmp_path / "i.tif", generate(SyntheticSpec(100, 120), seed=2)[0])
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.tif"), "--pad-value", value]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_the_cli_reports_the_padding_and_a_resume_must_match_it(tmp_path, capsys):
    _, padded, _ = _padded()
    tifffile.imwrite(tmp_path / "i.tif", padded)
    run = ["segment", str(tmp_path / "i.tif"), str(tmp_path / "o.zarr"), "--tile-size", "256", "--pad-value"]
    assert main([*run, "0"]) == 0
    assert f"; {PAD_ROWS * 400} padded pixels left out" in capsys.readouterr().out
    assert main([*run, "7"]) == 2
    assert "(parameters (pad_value) differ)" in capsys.readouterr().err
    assert main([*run, "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["resumed"] == "already complete" and s["padded_pixels"] == PAD_ROWS * 400
    assert main(["segment", str(tmp_path / "i.tif"), str(tmp_path / "p.tif"), "--pad-value", "65000"]) == 0
    assert "pad value 65000 found in no pixel" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((100, 120), np.uint16))
    assert main(["segment", str(tmp_path / "z.tif"), str(tmp_path / "z_out.tif"), "--pad-value", "0"]) == 0
    assert "0 objects (all padding)" in capsys.readouterr().out
