"""The Serve application's pure parts, without Ray: request decoding and its refusals, response
encoding, the configuration, and several images segmented together (labels unchanged)."""

import copy
import io
import json
import re
import threading
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from spiralray import api
from spiralray.core.objects import COLUMNS
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.serve import codecs
from spiralray.serve.batching import Item, segment_many
from spiralray.serve.config import ServeConfig
from spiralray.serve.deploy import app_config

LIMIT = 512 * 512


def tiff_bytes(a, **kw):
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def npy_bytes(a, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def png_header(width, height):
    """A PNG signature and IHDR chunk declaring a width x height 8-bit grey image (no data)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return codecs.PNG_SIGNATURE + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_decode_round_trips_every_media_type(dtype):
    a = (np.arange(60 * 70).reshape(60, 70) % 251).astype(dtype)
    assert np.array_equal(codecs.decode(tiff_bytes(a), "tiff", LIMIT), a)
    assert np.array_equal(codecs.decode(npy_bytes(a), "npy", LIMIT), a)
    if dtype != np.float32:  # PNG holds integers only
        assert np.array_equal(codecs.decode(iio.imwrite("<bytes>", a, extension=".png"), "png", LIMIT), a)


@pytest.mark.parametrize(
    "content_type,kind",
    [("image/tiff", "tiff"), ("image/PNG", "png"), ("application/x-npy; charset=binary", "npy")],
)
def test_media_kind(content_type, kind):
    assert codecs.media_kind(content_type) == kind


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "image/jpeg", "application/octet-stream"])
def test_media_kind_refuses_415(content_type):
    with pytest.raises(codecs.RequestError) as e:
        codecs.media_kind(content_type)
    assert e.value.status == 415 and "image/tiff" in str(e.value)


BOMB = tiff_bytes(np.zeros((2048, 2048), np.uint8), compression="zlib")  # ~4 kB declaring 4 Mpx


@pytest.mark.parametrize(
    "body,kind,status,words",
    [
        (b"", "tiff", 400, "empty"),
        (b"not an image", "tiff", 400, "cannot decode"),
        (b"not an image", "png", 400, "cannot decode"),
        (b"not an image", "npy", 400, "cannot decode"),
        (npy_bytes(np.zeros((80, 80)))[:-100], "npy", 400, "cannot decode"),
        (BOMB, "tiff", 413, "over the limit"),
        (png_header(100_000, 100_000), "png", 413, "over the limit"),
        (npy_bytes(np.zeros((1, 1)))[:10].ljust(128, b" "), "npy", 400, "cannot decode"),
        (npy_bytes(np.zeros((80, 80), np.complex64)), "npy", 422, "dtype"),
        (npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True), "npy", 422, "dtype"),
        (npy_bytes(np.zeros((2, 3, 80, 80), np.uint16)), "npy", 422, "shape"),
        (npy_bytes(np.zeros(80, np.uint16)), "npy", 422, "shape"),
        (tiff_bytes(np.zeros((2, 3, 80, 80), np.uint16), photometric="minisblack"), "tiff", 422, "shape"),
    ],
)
def test_decode_refusals(body, kind, status, words):
    with pytest.raises(codecs.RequestError) as e:
        codecs.decode(body, kind, LIMIT)
    assert e.value.status == status and words in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_tiff_body_of_several_images_is_refused_and_its_calibration_read():
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:  # a preview, then the image
        w.write(np.zeros((16, 16), np.uint16))
        w.write(np.ones((80, 90), np.uint16))
    with pytest.raises(codecs.RequestError, match=r"the TIFF holds 2 images \(16x16, 80x90\)") as err:
        codecs.decode(buf.getvalue(), "tiff", 10**6)
    assert err.value.status == 422 and str(err.value).startswith("the TIFF")  # no server path in front
    ome = tiff_bytes(
        np.ones((80, 90), np.uint16), ome=True, metadata={"PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4}
    )
    assert codecs.tiff_pixel_size(ome) == pytest.approx(0.4)
    assert codecs.tiff_pixel_size(tiff_bytes(np.ones((80, 90), np.uint16))) is None


def test_pixel_limit_is_read_from_the_header_before_decoding():
    # The bomb is refused although its body is small; the same image under a larger limit decodes.
    assert len(BOMB) < 64 << 10
    assert codecs.decode(BOMB, "tiff", 2048 * 2048).shape == (2048, 2048)


def test_singleton_axes_are_squeezed_and_errors_name_the_real_shape():
    image = np.arange(60 * 70, dtype=np.uint16).reshape(60, 70)

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    assert np.array_equal(codecs.decode(npy(image[None, None]), "npy", 10**6), image)  # 1 x 1 x H x W
    assert codecs.decode(npy(np.stack([image] * 3)[None]), "npy", 10**6).shape == (3, 60, 70)
    bads = [(np.zeros(5, np.uint8), "(5,)"), (np.zeros((2, 2, 60, 70), np.uint8), "(2, 2, 60, 70)")]
    for bad, shape in bads:
        with pytest.raises(codecs.RequestError, match=f"image has shape {re.escape(shape)}") as e:
            codecs.decode(npy(bad), "npy", 10**6)
        assert e.value.status == 422


def test_length_and_channel_checks():
    codecs.check_length(10, 10)
    with pytest.raises(codecs.RequestError, match="exceeds") as e:
        codecs.check_length(11, 10)
    assert e.value.status == 413
    codecs.check_channel((3, 80, 80), 1)
    codecs.check_channel((80, 80), None)
    for shape, channel in [((3, 80, 80), None), ((80, 80), 0)]:
        with pytest.raises(codecs.RequestError, match="channel") as e:
            codecs.check_channel(shape, channel)
        assert e.value.status == 422


def test_plane_of_a_stack():
    stack = np.arange(5 * 60 * 70).reshape(5, 60, 70)
    assert codecs.take_plane(stack, None, None) is stack
    assert np.array_equal(codecs.take_plane(stack, 3, None), stack[3])
    for image, plane, channel, match in [
        (stack, 5, None, "plane 5 out of range: the stack has 5 planes"),
        (stack, 1, 0, "not both"),
        (stack[0], 0, None, "2-D"),
        (np.zeros((60, 70, 3)), 0, None, "channels last"),
        (np.zeros((512, 512, 6)), 0, None, "channels last"),
    ]:
        with pytest.raises(codecs.RequestError, match=match) as e:
            codecs.take_plane(image, plane, channel)
        assert e.value.status == 422


def test_encode_formats_round_trip():
    labels = np.zeros((64, 70), np.uint32)
    labels[5:20, 5:20], labels[30:50, 40:60] = 1, 2
    assert np.array_equal(tifffile.imread(io.BytesIO(codecs.encode(labels, "tiff"))), labels)
    with tifffile.TiffFile(io.BytesIO(codecs.encode(labels, "tiff"))) as tif:  # as the CLI's output
        assert tif.pages[0].software == "spiralray"
    got = np.load(io.BytesIO(codecs.encode(labels, "npy")), allow_pickle=False)
    assert got.dtype == np.uint32 and np.array_equal(got, labels)
    png = iio.imread(codecs.encode(labels, "png"), extension=".png")
    assert png.dtype == np.uint16 and np.array_equal(png, labels)
    semantic = iio.imread(codecs.encode((labels > 0).astype(np.uint8), "png"), extension=".png")
    assert semantic.dtype == np.uint8 and np.array_equal(semantic, labels > 0)
    labels[0, 0] = 70_000
    with pytest.raises(codecs.RequestError, match="16-bit PNG") as e:
        codecs.encode(labels, "png")
    assert e.value.status == 422


@pytest.fixture(scope="module")
def engine():
    return api.load_engine(None, device="cpu")


def test_table_json_has_every_column(engine):
    image, _ = generate(SyntheticSpec(128, 128), seed=4)
    result = api.segment_image(engine, image)
    out = codecs.table_json(result.table, image.shape)
    assert out["count"] == int(result.labels.max()) > 0 and out["columns"] == list(COLUMNS)
    assert [o["id"] for o in out["objects"]] == list(range(1, out["count"] + 1))
    areas = np.bincount(result.labels.ravel())[1:]
    assert [o["area"] for o in out["objects"]] == areas.tolist()
    assert all(o["area_um2"] is None for o in out["objects"])  # no pixel size: null, not NaN
    json.dumps(out, allow_nan=False)  # strict JSON
    huge = dict(result.table, area_um2=np.full(len(result.table["id"]), np.inf))
    assert all(o["area_um2"] is None for o in codecs.table_json(huge, image.shape)["objects"])
    calibrated = api.segment_image(engine, image, pixel_size=0.5)
    out = codecs.table_json(calibrated.table, image.shape)
    assert [o["area_um2"] for o in out["objects"]] == (areas * 0.25).tolist()
    assert [o["centroid_x_um"] for o in out["objects"]] == [o["centroid_x"] * 0.5 for o in out["objects"]]


def test_segment_many_equals_one_at_a_time(engine):
    """Regions of several images share forward passes; every image's labels stay the per-image
    ones (bitwise here: same machine, same code), and a bad image fails alone."""
    images = [
        generate(SyntheticSpec(h, w), seed=s)[0]
        for s, (h, w) in enumerate([(128, 128), (96, 160), (128, 112)])
    ]
    items = [
        Item(images[0]),
        Item(images[1], ids="seed"),
        Item(np.ones((30, 300))),
        Item(images[2], exclude_border=True),
    ]
    stats, threads = {}, set()
    recorded = copy.copy(engine)  # every torch entry point notes the thread that runs it
    for name in ("probs_of", "_score_window", "regions_at"):
        fn = getattr(engine, name)
        setattr(recorded, name, lambda *a, fn=fn: threads.add(threading.get_ident()) or fn(*a))
    got = segment_many(recorded, items, stats)
    # rounds of different images ran in shared passes (the resampled path's too)
    assert stats["passes"] < stats["requests"], stats
    # ... and every torch call on the caller's thread, none on the images' threads
    assert threads == {threading.get_ident()}
    assert isinstance(got[2], SpiralrayError) and "smaller than one region" in str(got[2])
    assert np.array_equal(got[0].labels, api.segment_image(engine, images[0]).labels)
    assert np.array_equal(got[1].labels, api.segment_image(engine, images[1], ids="seed").labels)
    border = copy.copy(engine)
    border.cfg = border.cfg.replace(candidates={"exclude_border": True})
    assert np.array_equal(got[3].labels, api.segment_image(border, images[2]).labels)
    assert got[0].labels.max() > 0 and got[3].labels.max() > 0
    # the unbatched reference: the images in turn, the same labels
    turn = segment_many(engine, items, share=False)
    assert isinstance(turn[2], SpiralrayError)
    assert all(np.array_equal(turn[k].labels, got[k].labels) for k in (0, 1, 3))


def test_config_from_strings_and_refusals():
    cfg = ServeConfig.from_dict(
        {"max_batch_size": "4", "num_gpus": "0.5", "model": "none", "autoscaling": "{}"}
    )
    assert cfg.max_batch_size == 4 and cfg.num_gpus == 0.5 and cfg.model is None
    assert cfg.segmenter_max_ongoing == 8
    for bad, words in [
        ({"bogus": 1}, "unknown"),
        ({"max_batch_size": 0}, "at least 1"),
        ({"replicas": "x"}, "int"),
    ]:
        with pytest.raises(SpiralrayError, match=words):
            ServeConfig.from_dict(bad)
    with pytest.raises(SpiralrayError, match="batches never fill"):
        ServeConfig(max_batch_size=8, max_ongoing=4)


def test_app_config_splits_restart_args_from_user_config():
    entry = app_config(ServeConfig(model="models:/m@a", max_bytes=100, num_cpus=1.0, generation=3))
    assert entry["import_path"] == "spiralray.serve.app:build_app"
    assert entry["args"] == {"max_bytes": 100, "num_cpus": 1.0}  # defaults left out
    user = entry["deployments"][0]["user_config"]
    assert entry["deployments"][0]["name"] == "Segmenter" and user["model"] == "models:/m@a"
    assert user["generation"] == 3 and "max_bytes" not in user


def test_serve_command_line():
    import argparse

    from spiralray.serve.cli import add_parser, cmd_serve, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["serve", "--max-batch-size", "4", "--set", "num_cpus=0.5", "--set", "threads=2"]
    )
    assert (args.host, args.port, args.func) == ("127.0.0.1", 8000, cmd_serve)  # loopback unless told
    cfg = config_from_args(args)
    assert cfg.max_batch_size == 4 and cfg.num_cpus == 0.5 and cfg.threads == 2 and cfg.model is None
    with pytest.raises(SpiralrayError, match="KEY=VALUE"):
        config_from_args(parser.parse_args(["serve", "--set", "threads"]))
    # A wrong model fails in one line before any Ray is started.
    with pytest.raises(SpiralrayError, match="model not found"):
        cmd_serve(parser.parse_args(["serve", "--model", "/nonexistent/model"]))
