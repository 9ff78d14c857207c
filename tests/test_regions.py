import numpy as np
import pytest

from spiralray.core.config import RegionSpec
from spiralray.core.regions import (
    crop_pad,
    crop_regions,
    grid_centres,
    grid_shape,
    pad_image,
    region_score,
    reverse_distance_matrix,
    score_map_truth,
    three_channel_labels,
)

SPEC = RegionSpec()


def test_reverse_distance_matrix_peaks_at_centre_and_vanishes_at_far_corner():
    m = reverse_distance_matrix(SPEC)
    assert m.shape == (52, 58)
    assert m[26, 29] == 1.0 and m.argmax() == 26 * 58 + 29
    assert m[0, 0] == pytest.approx(0.0, abs=1e-6)
    # linear in distance: half-way along the row from the centre to the left edge
    d = np.hypot(26, 29)
    assert m[26, 0] == pytest.approx(1 - 29 / d, rel=1e-6)


def test_score_formula_on_hand_made_masks():
    mask = np.zeros((52, 58), bool)
    assert region_score(mask, SPEC) == 0.0
    mask[26, 29] = True  # only the centre pixel: M = 1 there, divided by c^2 = 25
    assert region_score(mask, SPEC) == pytest.approx(1 / 25)
    mask[:] = True
    m = reverse_distance_matrix(SPEC)
    assert region_score(mask, SPEC) == pytest.approx(m[24:29, 27:32].sum() / 25)
    assert 0.93 < region_score(mask, SPEC) < 0.97  # "~0.93-0.96 anywhere inside a nucleus"
    mask[:] = False
    mask[:, :29] = True  # left half of the window (cols 27, 28) only
    assert region_score(mask, SPEC) == pytest.approx(m[24:29, 27:29].sum() / 25)


def test_grid_matches_thesis_numbers():
    assert grid_shape(520, 696, SPEC, 16) == ((520 + 56 - 52) // 16 + 1, (696 + 56 - 58) // 16 + 1)
    c = grid_centres(100, 120, SPEC, 16)
    assert tuple(c[0, 0]) == (26 - 28, 29 - 28)
    assert tuple(c[1, 2]) == (16 - 2, 32 + 1)


def test_crop_regions_and_padding_are_symmetric_reflection():
    img = np.arange(60 * 70, dtype=np.float32).reshape(1, 60, 70)
    pad = crop_pad(SPEC)
    p = pad_image(img, pad)
    assert np.array_equal(p[0, pad - 1, pad:-pad], img[0, 0])  # edge row repeated
    assert np.array_equal(p[0, pad - 2, pad:-pad], img[0, 1])
    r = crop_regions(p, pad, np.array([[30, 35], [0, 0]]), SPEC)
    assert r.shape == (2, 1, 52, 58)
    assert r[0, 0, 26, 29] == img[0, 30, 35]
    assert r[1, 0, 26, 29] == img[0, 0, 0] and r[1, 0, 25, 29] == img[0, 0, 0]


def test_score_map_truth_equals_region_score_of_every_region():
    rng = np.random.default_rng(0)
    fg = rng.random((90, 110)) > 0.5
    s = score_map_truth(fg, SPEC, 16)
    padded = pad_image(fg[None].astype(np.float32), SPEC.pad)[0]
    gh, gw = grid_shape(90, 110, SPEC, 16)
    assert s.shape == (gh, gw)
    for i in range(gh):
        for j in range(gw):
            region = padded[i * 16 : i * 16 + 52, j * 16 : j * 16 + 58]
            assert s[i, j] == pytest.approx(region_score(region, SPEC), abs=1e-6)


def test_three_channel_labels():
    lab = np.zeros((52, 58), int)
    lab[20:33, 20:40] = 7  # under the centre (26, 29)
    lab[0:5, 0:5] = 3
    t = three_channel_labels(lab)
    assert t.shape == (3, 52, 58)
    assert np.array_equal(t[0] > 0, lab == 7)
    assert np.array_equal(t[1] > 0, lab == 3)
    assert np.array_equal(t[2] > 0, lab == 0)
    assert np.all(t.sum(0) == 1)
    lab[26, 29] = 0  # background under the centre: no central object, all instances are "other"
    t = three_channel_labels(lab)
    assert not t[0].any() and np.array_equal(t[1] > 0, lab > 0)


def test_centred_score_label_peaks_at_each_touching_nucleus():
    from spiralray.core.regions import centredness, score_foreground

    lb = np.zeros((40, 60), np.int32)
    yy, xx = np.mgrid[:40, :60]
    lb[(yy - 20) ** 2 + (xx - 20) ** 2 <= 81] = 1
    lb[((yy - 20) ** 2 + (xx - 37) ** 2 <= 81) & (lb == 0)] = 2  # touching on the right
    c = centredness(lb)
    assert c.dtype == np.float32 and c[lb == 0].max() == 0
    for i, centre in ((1, (20, 20)), (2, (20, 37))):
        assert c[lb == i].max() == 1 and c[centre] > 0.95  # one peak per nucleus, at its centre
    assert c[20, 29] < 0.15 and c[20, 30] < 0.15  # the touching border is a valley, not a plateau
    assert np.array_equal(score_foreground(lb, "thesis"), (lb > 0).astype(np.float32))
    with pytest.raises(ValueError, match="score label"):
        score_foreground(lb, "nope")
