"""Conforming a label set's outline convention (spiralray.data.outlines) on drawn nuclei."""

import numpy as np
from scipy import ndimage as ndi

from spiralray.data.outlines import conform_outlines


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def blurred(mask, low=100.0, high=1100.0, sigma=1.0):
    """A nucleus image: the mask's indicator blurred (its edge at half height), on a background."""
    return low + (high - low) * ndi.gaussian_filter(mask.astype(np.float64), sigma)


def test_a_generous_outline_is_peeled_to_the_edge():
    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    labels = disc(shape, 32, 32, 12).astype(np.int32)  # drawn two pixels too wide
    out = conform_outlines(blurred(true), labels, level=0.41, passes=2)
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert not (out & ~labels.astype(bool)).any()  # only removes
    # Two passes take the 2 px excess back to within a pixel of the true edge.
    assert abs(int((out > 0).sum()) - int(true.sum())) < 0.2 * true.sum()
    assert (out > 0).sum() < 0.85 * labels.sum()


def test_a_tight_outline_is_left_alone():
    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    labels = disc(shape, 32, 32, 9).astype(np.int32)
    out = conform_outlines(blurred(true), labels)
    assert (out == labels).all()


def test_touching_nuclei_keep_their_shared_border_and_half_their_area():
    shape = (64, 96)
    a, b = disc(shape, 32, 34, 12), disc(shape, 32, 58, 12)
    labels = np.zeros(shape, np.int32)
    labels[a] = 1
    labels[b & ~a] = 2
    # Dim nuclei: every outline pixel is below the level, so only the guards hold them.
    image = blurred(disc(shape, 32, 34, 4) | disc(shape, 32, 58, 4))
    out = conform_outlines(image, labels, level=0.41, passes=20)
    for i in (1, 2):
        assert (out == i).sum() >= (labels == i).sum() / 2
    # Where the two labels touch, both sides stay.
    shared = (labels == 1) & (ndi.maximum_filter(labels, size=3) == 2)
    assert shared.any() and (out[shared] == 1).all()


def test_a_nucleus_without_background_around_it_is_left_alone():
    """The same generous label is peeled on its own, but not when other nuclei cover the ring
    its background is read from (no background level: nothing to normalise by)."""
    shape = (80, 80)
    true = disc(shape, 40, 40, 8)
    alone = disc(shape, 40, 40, 10).astype(np.int32)
    enclosed = alone.copy()
    yy, xx = np.mgrid[:80, :80]
    enclosed[np.hypot(yy - 40, xx - 40) >= 13] = 2  # a nucleus all around, 3 px away
    image = blurred(true)
    assert (conform_outlines(image, alone) == 1).sum() < alone.sum()
    assert (conform_outlines(image, enclosed) == enclosed).all()


def test_ids_and_dtype_survive_and_border_objects_are_peeled():
    """uint8 labels whose largest id fills the dtype, and a nucleus cut by the image edge (its
    edge pixels are not outline; its free outline is peeled as any other)."""
    shape = (64, 64)
    true = disc(shape, 32, 32, 10) | disc(shape, 2, 2, 8)
    labels = np.zeros(shape, np.uint8)
    labels[disc(shape, 32, 32, 12)] = 255
    labels[disc(shape, 2, 2, 10)] = 7
    out = conform_outlines(blurred(true), labels, passes=2)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 7, 255}
    for i in (7, 255):
        assert (out == i).sum() < (labels == i).sum()
        assert not ((out == i) & (labels != i)).any()
    assert (out[0, :2] == 7).all()  # the cut nucleus's pixels on the image edge stay


def generous_set(path, frames=3, offset=0):
    """A dataset dir (images.tif + labels.tif) of blurred discs labelled 2 px too wide; sets of
    another ``offset`` hold other images (a set's copy as validation data is refused)."""
    import tifffile

    shape = (64, 64)
    true = disc(shape, 32, 32, 10)
    images = np.stack([blurred(true) + k + 10 * offset for k in range(frames)]).astype(np.uint16)
    labels = np.stack([disc(shape, 32, 32, 12)] * frames).astype(np.uint16)
    path.mkdir()
    tifffile.imwrite(path / "images.tif", images, photometric="minisblack")
    tifffile.imwrite(path / "labels.tif", labels, photometric="minisblack")
    return str(path), int(labels[0].sum())


def test_training_sources_conformed_by_name(tmp_path):
    import pytest

    from spiralray.data.datasets import load_sources
    from spiralray.errors import SpiralrayError
    from spiralray.train.ray_trainer import TrainJob
    from spiralray.train.split import split as _split

    a, area = generous_set(tmp_path / "a")
    b, _ = generous_set(tmp_path / "b", offset=1)
    pairs = load_sources([a, f"{b}:0-1"], conform=[f"{b}:0-1"])
    assert [int((lb > 0).sum()) for _, lb in pairs][:3] == [area] * 3  # a: as drawn
    assert all((lb > 0).sum() < area for _, lb in pairs[3:])  # b: peeled
    assert len(pairs) == 5
    # The Ray Train job's split: the named source's training and validation frames alike.
    train, val = _split(TrainJob(data=[a, b], val_images=1, conform=[b]))
    assert [int((lb > 0).sum()) < area for _, lb in train] == [False, False, True, True]
    assert [int((lb > 0).sum()) < area for _, lb in val] == [False, True]
    with pytest.raises(SpiralrayError, match="--conform-outlines .* is not one of the data sources"):
        load_sources([a], conform=[b])
    with pytest.raises(SpiralrayError, match="is not one of the data sources"):
        _split(TrainJob(data=[a], conform=[f"{a}:0-1"]))
    # A --val-data source named too is conformed; the others are not.
    c, _ = generous_set(tmp_path / "c", offset=2)
    train, val = _split(TrainJob(data=[a], val_data=[f"{b}:0-1", f"{c}:0"], conform=[f"{b}:0-1"]))
    assert [int((lb > 0).sum()) < area for _, lb in val] == [True, True, False]
    assert load_sources([a], conform=None)[0][1].sum() == area
    # Level and passes reach the peeling: a higher level peels at least as much.
    low = load_sources([b], conform=[b], level=0.2)
    high = load_sources([b], conform=[b], level=0.6, passes=3)
    assert (high[0][1] > 0).sum() < (low[0][1] > 0).sum() <= area
