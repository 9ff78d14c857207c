import os

import numpy as np
import pytest
import tifffile

from spiralray.data.datasets import load_pairs
from spiralray.data.normalize import image_stats, normalize
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError


def test_synthetic_nuclei_are_realistic_and_repeatable():
    image, labels = generate(SyntheticSpec(256, 256), seed=3)
    assert image.dtype == np.uint16 and labels.shape == image.shape
    again, _ = generate(SyntheticSpec(256, 256), seed=3)
    assert np.array_equal(image, again)
    ids = np.unique(labels)[1:]
    assert len(ids) > 20 and np.array_equal(ids, np.arange(1, len(ids) + 1))
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() >= 15 and areas.max() > 3 * np.median(areas) / 2  # a spread of sizes
    # touching nuclei: some pixel of one object is 4-adjacent to another object
    a, b = labels[:, :-1], labels[:, 1:]
    assert np.any((a > 0) & (b > 0) & (a != b))
    # brighter inside nuclei than outside, over a camera offset
    assert image[labels > 0].mean() > image[labels == 0].mean() and image.min() > 50


def test_normalisation_is_per_image_and_float32():
    img = np.arange(1000, dtype=np.uint16).reshape(10, 100) + 33000
    x = normalize(img, "minmax")
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    lo, hi = image_stats(img, "percentile", 1, 99.8)
    assert 33000 < lo < hi < 34000
    assert np.all(normalize(np.full((5, 5), 7), "minmax") == 0)  # constant: no signal, no NaN
    with pytest.raises(ValueError):
        normalize(img, "bogus")


@pytest.mark.parametrize(
    "dtype, offset", [(np.uint64, 2**40), (np.int64, -(2**45)), (np.uint32, 2**31), (np.float64, 1e12)]
)
def test_a_large_offset_keeps_every_level(dtype, offset):
    """16-bit data far from zero in a wide type: the offset goes before the float32 cast (a
    user's uint64 image 2^40 above zero came out blank, 0 objects, its peak 183 sigmas up)."""
    img = np.arange(3000, dtype=np.uint16).reshape(30, 100)
    want = normalize(img, "percentile")
    got = normalize(img.astype(dtype) + dtype(offset), "percentile")
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-6)


def test_the_same_values_in_any_dtype_normalise_alike():
    """From a user test: BBBC039 fields as uint16 and as float32 (same values) gave labels 1-3 px
    apart in 5 of 8 fields: one dtype was normalised in float32, the other in float64."""
    img, _ = generate(SyntheticSpec(128, 128), seed=1)
    want = normalize(img, "percentile")
    for dtype in (np.float32, np.float64, np.int32, np.uint32, np.int64):
        assert np.array_equal(normalize(img.astype(dtype), "percentile"), want), dtype


@pytest.mark.parametrize("factor, offset", [(3e-43, 1e-38), (2e35, -3e38)])
def test_float32_near_its_limits_keeps_every_level(factor, offset):
    """A user's float32 images near its limits (~1e-38; +-3e38) came out blank: the scale
    (or the offset subtracted) overflowed float32."""
    img = np.arange(3000, dtype=np.uint16).reshape(30, 100)
    scaled = (img * factor + offset).astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = normalize(scaled, "percentile")
    assert np.allclose(got, normalize(img, "percentile"), atol=1e-3)


@pytest.mark.parametrize("dtype", [">u2", ">i4", ">f4", ">f8", "<i2", "u1", "bool"])
def test_exact_order_statistics_in_every_byte_order(dtype):
    """The percentiles are exact whatever the dtype and its byte order: a big-endian zarr's
    '>u2' read as bytes in native order gave lo > hi and '0 objects (constant image)'."""
    from spiralray.data.normalize import order_statistics

    rng = np.random.default_rng(3)
    a = (rng.normal(0, 1000, (40, 70)) + (3000 if dtype[-2] == "u" else 0)).astype(dtype)
    ranks = [0, 27, 1400, 2771, 2799]
    got = order_statistics(lambda: [a[:13], a[13:]], a.dtype, ranks)
    assert got == np.sort(a.astype(np.float64).ravel())[ranks].tolist()
    if dtype.startswith(">"):
        native = a.astype(a.dtype.newbyteorder("="))
        assert image_stats(a, "percentile", 1, 99.8) == image_stats(native, "percentile", 1, 99.8)


def _write_stack(d, n=2):
    pairs = [generate(SyntheticSpec(64, 80), seed=s) for s in range(n)]
    tifffile.imwrite(d / "images.tif", np.stack([p[0] for p in pairs]))
    tifffile.imwrite(d / "labels.tif", np.stack([p[1] for p in pairs]).astype(np.uint16))
    return pairs


def test_readers_for_every_layout(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    pairs = _write_stack(stack)
    got = load_pairs(str(stack))
    assert len(got) == 2 and np.array_equal(got[1][1], pairs[1][1])
    assert len(load_pairs(str(stack), frames=[1])) == 1
    with pytest.raises(SpiralrayError, match="no frame 5"):
        load_pairs(str(stack), frames=[5])

    folder = tmp_path / "folder"
    folder.mkdir()
    for i, (im, lb) in enumerate(pairs):
        tifffile.imwrite(folder / f"cell{i}.tif", im)
        tifffile.imwrite(folder / f"cell{i}_labels.tif", lb)
    assert [np.array_equal(a[0], b[0]) for a, b in zip(load_pairs(str(folder)), pairs, strict=True)] == [
        True
    ] * 2

    import imageio.v3 as iio

    sub = tmp_path / "sub"
    (sub / "images").mkdir(parents=True)
    (sub / "labels").mkdir()
    for i, (im, lb) in enumerate(pairs):
        iio.imwrite(sub / "images" / f"a{i}.png", (im // 256).astype(np.uint8))
        iio.imwrite(sub / "labels" / f"a{i}.png", lb.astype(np.uint16))
    got = load_pairs(str(sub))
    assert len(got) == 2 and np.array_equal(got[0][1], pairs[0][1])

    import zarr

    g = zarr.open_group(str(tmp_path / "set.zarr"), mode="w")
    g.create_array("images", data=np.stack([p[0] for p in pairs]))
    g.create_array("labels", data=np.stack([p[1] for p in pairs]))
    got = load_pairs(str(tmp_path / "set.zarr"))
    assert np.array_equal(got[1][0], pairs[1][0])


def test_bad_training_input_gets_clear_errors(tmp_path):
    with pytest.raises(SpiralrayError, match="not found"):
        load_pairs(str(tmp_path / "nope"))
    only = tmp_path / "only"
    only.mkdir()
    tifffile.imwrite(only / "cell.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(SpiralrayError, match="missing labels"):
        load_pairs(str(only))
    bad = tmp_path / "bad"
    bad.mkdir()
    tifffile.imwrite(bad / "images.tif", np.zeros((2, 8, 8), np.uint16))
    tifffile.imwrite(bad / "labels.tif", np.zeros((2, 8, 9), np.uint16))
    with pytest.raises(SpiralrayError, match="labels are"):
        load_pairs(str(bad))
    pair = tmp_path / "pair"
    pair.mkdir()
    tifffile.imwrite(pair / "f0.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(pair / "f0_labels.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(SpiralrayError, match="f0.tif is"):  # the file, not its index
        load_pairs(str(pair))
    some = tmp_path / "some"  # an image without labels beside paired ones is named, not dropped
    some.mkdir()
    nuclei, ids = generate(SyntheticSpec(64, 64), seed=1)
    for name, a in (("f0", nuclei), ("f0_labels", ids), ("f1", nuclei), ("f1_seg", ids)):
        tifffile.imwrite(some / f"{name}.tif", a)
    (some / "notes.txt").write_text("not an image: ignored")
    (some / "class_labels.csv").write_text("id,class")  # nor a table named like labels
    with pytest.raises(
        SpiralrayError, match=r"some: missing labels for f1, f1_seg \(expected e.g. f1_labels.tif"
    ):
        load_pairs(str(some))
    (some / "f1.tif").unlink()
    (some / "f1_seg.tif").rename(some / "f1_masks.tif")
    with pytest.raises(SpiralrayError, match="some: labels without an image: f1_masks.tif"):
        load_pairs(str(some))
    (some / "f1_masks.tif").unlink()
    assert len(load_pairs(str(some))) == 1  # f0 and its labels; the text files left alone
    tifffile.imwrite(bad / "labels.tif", np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(SpiralrayError, match="no objects"):
        load_pairs(str(bad))


def test_labels_that_are_not_instance_ids_are_refused_by_file(tmp_path):
    """From a user test: a 0/255 or 0/1 mask was trained on as one object holding every nucleus,
    negative ids gave garbage, a stack in the pairs layout was called 'smaller than one region',
    and a grey image saved as RGB was refused for its shape."""
    nuclei, ids = generate(SyntheticSpec(96, 96, density=0.002), seed=3)
    assert len(np.unique(ids)) > 3
    cases = {
        "mask255": (
            (ids > 0).astype(np.uint8) * 255,
            r"mask255.tif are a mask \(one value, 255, over \d+",
        ),
        "mask01": ((ids > 0).astype(np.uint8), r"mask01.tif are a mask \(one value, 1, over"),
        "negative": (-ids.astype(np.int32), r"negative.tif hold negative ids \(down to -\d+\)"),
        "fraction": (
            ids.astype(np.float32) + 0.5,
            r"fraction.tif are float32, expected integer",
        ),
    }
    for name, (labels, words) in cases.items():
        d = tmp_path / name
        d.mkdir()
        tifffile.imwrite(d / f"{name}.tif", nuclei)
        tifffile.imwrite(d / f"{name}_labels.tif", labels)
        with pytest.raises(SpiralrayError, match=words):
            load_pairs(str(d))
    stack = tmp_path / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "s.tif", np.stack([nuclei] * 3))
    tifffile.imwrite(stack / "s_labels.tif", np.stack([ids] * 3))
    with pytest.raises(SpiralrayError, match=r"s.tif is a stack \(3, 96, 96\), not one image"):
        load_pairs(str(stack))
    ok = tmp_path / "ok"  # accepted: grey saved as RGB, whole-number float ids, one nucleus as 0/1
    ok.mkdir()
    tifffile.imwrite(ok / "rgb.tif", np.stack([nuclei] * 3, axis=-1), photometric="rgb")
    tifffile.imwrite(ok / "rgb_labels.tif", ids.astype(np.float32))
    one = (ids == ids.max()).astype(np.uint8)
    one[0, 0] = one[-1, -1] = 1  # a stray annotated pixel or two: still one nucleus (a review)
    tifffile.imwrite(ok / "one.tif", nuclei)
    tifffile.imwrite(ok / "one_labels.tif", one)
    tifffile.imwrite(ok / "single.tif", nuclei[None])  # one frame saved as 1 x H x W
    tifffile.imwrite(ok / "single_labels.tif", ids[None])
    got = dict(zip(("one", "rgb", "single"), load_pairs(str(ok)), strict=True))
    assert np.array_equal(got["single"][1], ids)
    assert np.array_equal(got["rgb"][0], nuclei) and np.array_equal(got["rgb"][1], ids)
    assert got["rgb"][1].dtype == np.int32 and np.array_equal(got["one"][1], one)
    tifffile.imwrite(ok / "single_labels.tif", np.stack([ids] * 3, axis=-1), photometric="rgb")
    with pytest.raises(SpiralrayError, match=r"the labels of single.tif are a colour image \(96, 96, 3\)"):
        load_pairs(str(ok))
    (ok / "single.tif").unlink()
    (ok / "single_labels.tif").unlink()
    colour = np.stack([nuclei, nuclei // 2, nuclei], axis=-1)
    tifffile.imwrite(ok / "rgb.tif", colour, photometric="rgb")
    with pytest.raises(SpiralrayError, match=r"rgb.tif is a colour image \(96, 96, 3\)"):
        load_pairs(str(ok))


def test_acquisition_shifts_keep_the_objects():
    from spiralray.data.shifts import shifted

    image, labels = generate(SyntheticSpec(128, 160), seed=5)
    out = shifted([(image, labels)], seed=1)
    assert set(out) == {"8-bit", "half magnification", "dim + noisy"}
    im8, lb8 = out["8-bit"][0]
    assert im8.dtype == np.uint8 and np.array_equal(lb8, labels)
    assert im8[labels > 0].mean() > im8[labels == 0].mean() + 20  # contrast survives requantising
    half, lbh = out["half magnification"][0]
    assert half.shape == lbh.shape == (64, 80) and half.dtype == image.dtype
    big = np.flatnonzero(np.bincount(labels.ravel())[1:] > 100) + 1
    assert set(big) <= set(np.unique(lbh))  # every sizeable nucleus is still there
    dim, lbd = out["dim + noisy"][0]
    contrast = image[labels > 0].mean() - image[labels == 0].mean()
    assert np.array_equal(lbd, labels)
    assert 0.2 * contrast < dim[labels > 0].mean() - dim[labels == 0].mean() < 0.3 * contrast
    again = shifted([(image, labels)], seed=1)["dim + noisy"][0][0]
    assert np.array_equal(dim, again)  # deterministic given the seed


def test_held_out_dsb_image_is_readable():
    pairs = load_pairs(os.path.join(os.path.dirname(__file__), "..", "bench", "data", "dsb2018"), None)
    ((image, labels),) = pairs
    assert image.shape == labels.shape == (512, 512)
    assert len(np.unique(labels)) - 1 == 125
