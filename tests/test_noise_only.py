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
from spiralray.data.normalize import NOISE_ONLY, local_peak, noise_sigma
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
    spot[10:15, 20:25] = 25.0  # a 5 x 5 block: its mean is the peak
    assert local_peak(spot) == pytest.approx(25.0) and local_peak(-spot, invert=True) == pytest.approx(25.0)


def test_an_empty_field_gets_no_objects_and_says_why(engine, tmp_path, capsys):
    noise = _camera_noise()
    r = api.segment_image(engine, noise)
    assert r.labels.max() == 0 and r.regions == 0  # before: ~120 objects in such a field
    assert r.diameter["reason"] == "noise only" and r.diameter["peak_over_noise"] < NOISE_ONLY
    tifffile.imwrite(tmp_path / "empty.tif", noise)
    assert main(["segment", str(tmp_path / "empty.tif"), str(tmp_path / "o.tif")]) == 0
    assert "0 objects (noise only) ->" in capsys.readouterr().out
    assert not tifffile.imread(tmp_path / "o.tif").any()
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
