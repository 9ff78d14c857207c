"""An empty field (an empty well, a field out of focus) holds only noise: per-image percentile
normalisation would stretch it to full contrast and the networks would find "nuclei" in it. An
image whose brightest 5 x 5 mean stands under ``NOISE_ONLY`` noise sigmas above its median gets
no objects, says why, and a sparse field's one nucleus is still found."""

import json

import numpy as np
import pytest
import tifffile

from spiralray import api
from spiralray.cli import main
from spiralray.data.normalize import NOISE_ONLY, NOISE_RANGE, local_peak, noise_sigma
from spiralray.data.synthetic import SyntheticSpec, generate


@pytest.fixture(scope="module")
def engine():
    return api.load_engine(None)


def _camera_noise(seed=0, shape=(400, 460)):
    return (100 + np.random.default_rng(seed).poisson(20, shape)).astype(np.uint16)


def test_the_noise_and_the_peak_are_measured():
    rng = np.random.default_rng(1)
    a = rng.normal(100, 5, (300, 300))
    assert noise_sigma([a]) == pytest.approx(5, rel=0.05)
    assert noise_sigma([np.full((50, 50), 7)]) == 0  # nothing to measure: the rule stays off
    spot = np.zeros((40, 40))
    spot[10:16, 20:26] = 25.0  # a 6 x 6 block: its 2 x 2 minima hold a 5 x 5 block, the peak
    small = np.zeros((40, 40))
    small[10:15, 20:25] = 25.0  # 5 x 5: its 2 x 2 minima, 4 x 4 of them, fill 16 of 25 pixels
    assert local_peak(small) == pytest.approx(16.0)
    hot = spot.copy()
    hot[30, 5] = hot[2, 30:38] = hot[0, 0] = hot[39, 39] = 1e6  # hot pixels (corners too), a hot line
    assert local_peak(hot) == pytest.approx(25.0)
    assert local_peak(spot) == pytest.approx(25.0) and local_peak(-spot, invert=True) == pytest.approx(25.0)
    assert local_peak(spot + 1e9) - 1e9 == pytest.approx(25.0)  # 64-bit data keeps its precision
    padded = spot.copy()
    padded[30:, :] = 1e6  # a pad value never makes the peak
    assert local_peak(padded, pad=1e6) == pytest.approx(25.0)


def _disks(shape, r, spacing):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, bool)
    for cy in range(r, shape[0], spacing):
        for cx in range(r, shape[1], spacing):
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


def test_an_empty_field_gets_no_objects_and_says_why(engine, tmp_path, capsys):
    noise = _camera_noise()
    r = api.segment_image(engine, noise)
    assert r.labels.max() == 0 and r.regions == 0  # before: ~120 objects in such a field
    assert r.diameter["reason"] == "noise only" and r.diameter["peak_over_noise"] < NOISE_ONLY
    tifffile.imwrite(tmp_path / "empty.tif", noise)
    assert main(["segment", str(tmp_path / "empty.tif"), str(tmp_path / "o.tif")]) == 0
    assert "0 objects (noise only) ->" in capsys.readouterr().out
    assert not tifffile.imread(tmp_path / "o.tif").any()
    assert api.segment_image(engine, noise, pad_value=0).diameter["reason"] == "noise only"  # a pad named
    padded = noise.copy()
    padded[:180] = 0  # a named pad value: its pixels are no noise (its flat block once hid the noise)
    for invert in (False, True):
        assert (
            api.segment_image(engine, padded, pad_value=0, invert=invert).diameter["reason"] == "noise only"
        )
    hot = noise.copy()
    hot[[17, 200, 333], [40, 99, 421]] = 4095  # hot camera pixels: before, 121 objects
    r = api.segment_image(engine, hot)
    assert r.labels.max() == 0 and r.diameter["reason"] == "noise only", r.diameter
    assert main(["segment", str(tmp_path / "empty.tif"), str(tmp_path / "o.zarr"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["objects"] == 0 and s["stats"] is None and s["diameter"]["reason"] == "noise only"


def test_a_sparse_fields_nuclei_and_a_dim_field_are_still_segmented(engine):
    sparse, truth = generate(SyntheticSpec(400, 460, density=0.00005), seed=3)
    r = api.segment_image(engine, sparse)
    assert truth.max() >= 2 and r.labels.max() >= truth.max() - 1  # a few nuclei, each found
    assert r.diameter["peak_over_noise"] > 2 * NOISE_ONLY
    # nuclei 4 noise sigmas above the background: dim, but not noise
    dim = _camera_noise(seed=4).astype(np.float32) + 4 * np.sqrt(20) * (truth > 0)
    r = api.segment_image(engine, dim)
    assert r.diameter["peak_over_noise"] > NOISE_ONLY and r.diameter.get("reason") != "noise only"


def test_a_confluent_field_of_even_nuclei_is_not_noise(engine):
    """Its median is a nucleus, so its peak stands little above it: its normalisation range,
    background to nuclei, is what tells it from noise (a reviewer's case: 0 objects before)."""
    rng = np.random.default_rng(0)
    cells = _disks((320, 320), 13, 28)
    assert cells.mean() > 0.5
    field = (100 + 80 * cells + rng.normal(0, 10, cells.shape)).astype(np.float32)
    for image, invert in ((field, False), (200 - field, True)):
        r = api.segment_image(engine, image, invert=invert)
        d = r.diameter
        assert d["peak_over_noise"] < NOISE_ONLY < NOISE_RANGE < d["range_over_noise"], d
        assert d.get("reason") != "noise only" and r.labels.max() > 80, (r.labels.max(), d)
