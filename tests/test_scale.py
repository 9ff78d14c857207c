"""Nucleus-size estimate and the rescale factor (spiralray.core.scale) on synthetic nuclei."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from spiralray.core.scale import (
    MODEL_DIAMETER,
    choose_scale,
    estimate_diameter,
    median_diameter,
    model_diameter,
)
from spiralray.data.normalize import image_stats
from spiralray.data.synthetic import SyntheticSpec, generate


def nuclei(
    diameter: float, seed: int = 0, cover: float = 0.25, overlap: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic nuclei ~``diameter`` px across covering ~``cover`` of a frame ~10 nuclei a side.
    SyntheticSpec's radius is a semi-axis and elongation up to 1.8 shrinks the other one, so the
    semi-axes are scaled to put the median equivalent diameter near ``diameter``."""
    a = diameter / 2 * 1.15
    side = int(np.clip(diameter * 10, 192, 1100))
    spec = SyntheticSpec(
        side,
        side,
        density=cover / (np.pi * (diameter / 2) ** 2),
        radius=(0.8 * a, 1.2 * a),
        max_overlap=overlap,
        artifacts=2,
    )
    return generate(spec, seed)


def paint(labels: np.ndarray, seed: int, nucleoli: bool = True) -> np.ndarray:
    """A 16-bit image of instance labels: every nucleus its own brightness (0.2-1: dim beside
    bright), a dome profile (the rim at 60%, so touching nuclei meet at a shallow dip), chromatin
    grain, 1-3 dark nucleoli, an uneven background, blur and noise."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        m = np.pad(labels[sl] == i, 1)
        r = np.sqrt(m.sum() / np.pi)
        inner = np.minimum(ndi.distance_transform_edt(m) / r, 1)  # 0 at the edge, 1 inside
        grain = ndi.gaussian_filter(rng.normal(0, 1, m.shape), max(r / 8, 0.7))
        dome = 0.6 + 0.4 * np.sqrt(1 - (1 - inner) ** 2)
        v = rng.uniform(0.2, 1.0) * dome * (1 + 0.25 * grain / grain.std())
        ys, xs = np.nonzero(inner > 0.4)
        if nucleoli and len(ys):
            yy, xx = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
            for k in rng.integers(0, len(ys), rng.integers(1, 4)):
                hole = (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= (rng.uniform(0.12, 0.22) * r) ** 2
                v = np.where(hole, 0.25 * v, v)
        signal[sl][m[1:-1, 1:-1]] = v[1:-1, 1:-1][m[1:-1, 1:-1]]
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    signal = ndi.gaussian_filter(signal, 1.2) + 0.3 * (xx + 0.5 * np.sin(4 * yy))
    signal += rng.normal(0, 0.04, signal.shape)
    return np.clip(1000 + 3000 * signal, 0, 65535).astype(np.uint16)


def touching(diameter: float, n: int = 9, seed: int = 0) -> np.ndarray:
    """Labels of n x n nuclei packed on a hexagonal lattice, each touching its six neighbours
    (centres 0.9 diameters apart; each pixel belongs to its nearest centre)."""
    rng = np.random.default_rng(seed)
    step = 0.9 * diameter
    side = int(step * (n + 1))
    centres = np.array(
        [
            ((j + 0.5) * step * np.sqrt(3) / 2 + diameter / 2, (i + 0.5 * (j % 2) + 0.5) * step)
            for j in range(n)
            for i in range(n)
        ]
    )
    centres += rng.uniform(-0.05, 0.05, centres.shape) * diameter
    yy, xx = np.mgrid[0:side, 0:side]
    d2 = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    nearest = np.argmin(d2, axis=-1)
    inside = np.take_along_axis(d2, nearest[..., None], -1)[..., 0] <= (diameter / 2) ** 2
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def within(estimate, truth: float, tolerance: float = 0.2) -> bool:
    return estimate.diameter is not None and abs(estimate.diameter / truth - 1) <= tolerance


@pytest.mark.parametrize("diameter", [8, 16, 32, 64, 150])
def test_synthetic_sizes_within_20_percent(diameter):
    image, labels = nuclei(diameter, seed=diameter)
    truth = median_diameter(labels)
    est = estimate_diameter(image)
    assert within(est, truth), (diameter, truth, est)
    assert est.objects >= 10 and est.confident


@pytest.mark.parametrize("diameter", [12, 30, 75])
def test_nucleoli_dim_beside_bright_uneven_background(diameter):
    # The shipped model broke 75-px textured nuclei with nucleoli into 3-4 pieces: the size
    # estimate must still see whole nuclei.
    _, labels = nuclei(diameter, seed=100 + diameter, cover=0.3)
    est = estimate_diameter(paint(labels, seed=diameter))
    assert within(est, median_diameter(labels)), (median_diameter(labels), est)


@pytest.mark.parametrize("diameter", [14, 40])
def test_touching_nuclei_are_not_measured_as_clumps(diameter):
    labels = touching(diameter)
    est = estimate_diameter(paint(labels, seed=1, nucleoli=False))
    assert within(est, median_diameter(labels)), (median_diameter(labels), est)


@pytest.mark.parametrize("diameter", [10, 40])
def test_dense_overlapping_nuclei(diameter):
    image, labels = nuclei(diameter, seed=7, cover=0.6, overlap=0.25)
    est = estimate_diameter(image)
    assert within(est, median_diameter(labels)), (median_diameter(labels), est)


def test_no_nuclei_gives_no_estimate():
    rng = np.random.default_rng(0)
    blank = [
        np.zeros((256, 256), np.uint16),
        np.full((300, 200), 1234, np.uint16),
        np.full((64, 64), 0.5, np.float32),
        (1000 + 40 * rng.normal(size=(384, 384))).astype(np.uint16),  # white noise
        rng.poisson(4, (384, 384)).astype(np.uint16),  # photon noise
        ndi.gaussian_filter(rng.normal(size=(384, 384)), 4).astype(np.float32),  # smooth texture
    ]
    for image in blank:
        est = estimate_diameter(image)
        assert est.diameter is None and not est.confident and est.reason, est


def test_dtype_stats_and_windows_agree():
    image, labels = nuclei(24, seed=3, cover=0.3)
    est = estimate_diameter(image)
    # np.percentile inside gives the numbers normalize.image_stats streams: the same estimate.
    assert estimate_diameter(image, stats=image_stats(image)) == est
    eight = (255 * np.clip((image - image.min()) / np.ptp(image), 0, 1)).astype(np.uint8)
    assert abs(estimate_diameter(eight).diameter / est.diameter - 1) < 0.05
    half = image.shape[1] // 2
    pooled = estimate_diameter([image[:, :half], image[:, half:]])
    assert abs(pooled.diameter / est.diameter - 1) < 0.1


def test_few_nuclei_are_not_confident():
    _, labels = nuclei(30, seed=5)
    labels = np.where(np.isin(labels, [1, 2, 3]), labels, 0)
    est = estimate_diameter(paint(labels, seed=2, nucleoli=False))
    assert est.diameter is not None and not est.confident and "nuclei" in est.reason


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        estimate_diameter(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="H x W"):
        estimate_diameter(np.zeros((2, 32, 32)))


def test_choose_scale_dead_band_and_clip():
    m = MODEL_DIAMETER
    assert choose_scale(None) == 1.0
    assert choose_scale(float("nan")) == 1.0
    assert choose_scale(0.0) == 1.0
    assert choose_scale(m) == 1.0
    assert choose_scale(0.81 * m) == 1.0 and choose_scale(1.19 * m) == 1.0  # within +-20%
    assert choose_scale(m / 2) == pytest.approx(2.0)
    assert choose_scale(2.5 * m) == pytest.approx(0.4)
    assert choose_scale(1.0) == 4.0  # clipped: at most 4x larger
    assert choose_scale(1000 * m) == 0.125  # at most 8x smaller
    assert choose_scale(14.0, model=28.0, dead_band=0.0) == pytest.approx(2.0)


def test_model_diameter_and_label_medians():
    assert model_diameter() == MODEL_DIAMETER
    assert model_diameter(SimpleNamespace(diameter=31.5)) == 31.5
    assert model_diameter(SimpleNamespace(diameter=None)) == MODEL_DIAMETER
    yy, xx = np.mgrid[0:100, 0:100]
    labels = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 100).astype(np.int32)
    labels[(yy - 70) ** 2 + (xx - 70) ** 2 <= 100] = 2
    assert median_diameter(labels) == pytest.approx(20.0, rel=0.05)
    assert median_diameter([labels, labels]) == median_diameter(labels)
    assert median_diameter(np.zeros((8, 8), np.int32)) is None
