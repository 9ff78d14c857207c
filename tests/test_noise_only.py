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
from spiralray.data.noise import NOISE_ONLY, NOISE_RANGE, flatten, local_peak, noise_sigma
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
    # on a 200 x 200 field, the illumination surface takes a negligible share of a 6 px spot
    spot = np.zeros((200, 200))
    spot[90:96, 120:126] = 25.0  # a 6 x 6 block: its 2 x 2 minima hold a 5 x 5 block, the peak
    small = np.zeros((200, 200))
    small[90:95, 120:125] = 25.0  # 5 x 5: its 2 x 2 minima, 4 x 4 of them, fill 16 of 25 pixels
    assert local_peak(small) == pytest.approx((16.0, 16.0), abs=0.25)  # (as stored, above the surface)
    hot = spot.copy()
    hot[130, 5] = hot[2, 30:38] = hot[0, 0] = hot[199, 199] = 1e6  # hot pixels (corners too), a hot line
    assert local_peak(hot) == pytest.approx((25.0, 25.0), abs=0.25)
    assert local_peak(spot) == pytest.approx((25.0, 25.0), abs=0.25)
    assert local_peak(-spot, invert=True) == pytest.approx(local_peak(spot))
    assert local_peak(spot + 1e9)[1] == pytest.approx(local_peak(spot)[1], abs=1e-3)  # 64-bit precision kept
    padded = spot.copy()
    padded[150:, :] = 1e6  # a pad value never makes the peak
    assert local_peak(padded, pad=1e6) == pytest.approx((25.0, 25.0), abs=0.25)


def test_uneven_illumination_is_no_peak():
    """A vignette (a 50% fall-off to the corners, centred off the image, the cos^4 law of an
    uncorrected objective) is taken out by the fitted surface; a spot on it still stands out."""
    yy, xx = np.mgrid[:300, :340]
    r2 = ((yy - 80) ** 2 + (xx - 230) ** 2) / 250.0**2
    light = 1000 * (1 + r2 / 3.9) ** -2  # 50% at the farthest corner
    assert light.min() == pytest.approx(500, abs=5)
    assert np.abs(flatten(light)).max() < 2.5  # 0.5% of the fall-off
    spot = light.copy()
    spot[200:206, 60:66] += 25.0
    assert local_peak(light)[1] < 2.5 and local_peak(spot)[1] == pytest.approx(25.0, abs=1.5)
    keep = np.ones(light.shape, bool)
    keep[:100] = False  # pixels left out of the fit (padding) do not bend the surface
    assert np.abs(flatten(np.where(keep, light, 0.0), keep)[keep]).max() < 2.5


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


def _vignetted(counts, corner, shape=(400, 460), seed=0):
    """An empty well under a lamp centred off the image, falling to ``1 - corner`` at the
    farthest corner (the cos^4 law of an uncorrected widefield objective)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - 0.3 * shape[0]) ** 2 + (xx - 0.65 * shape[1]) ** 2
    light = (1 + r2 / r2.max() * ((1 - corner) ** -0.5 - 1)) ** -2
    return (100 + np.random.default_rng(seed).poisson(counts * light)).astype(np.uint16)


def test_an_empty_field_under_uneven_illumination_gets_no_objects(engine):
    """Before, a 10-30% fall-off stretched the noise just past 6 sigmas: 47-64 "nuclei" in it."""
    for counts, corner in ((1000, 0.1), (100, 0.3), (10000, 0.5)):
        r = api.segment_image(engine, _vignetted(counts, corner))
        assert r.labels.max() == 0 and r.diameter["reason"] == "noise only", (counts, corner, r.diameter)
    sparse, truth = generate(SyntheticSpec(400, 460, density=0.00005), seed=3)
    dim = _vignetted(1000, 0.3, seed=5).astype(np.float32) + 5 * np.sqrt(1000) * (truth > 0)
    r = api.segment_image(engine, dim)  # nuclei 5 noise sigmas bright on the same vignette
    assert r.diameter.get("reason") != "noise only" and r.labels.max() >= truth.max() - 1, r.diameter


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
        assert d["peak_over_noise"] < 2 * NOISE_ONLY and d["range_over_noise"] > 1.5 * NOISE_RANGE, d
        assert d.get("reason") != "noise only" and r.labels.max() > 80, (r.labels.max(), d)
