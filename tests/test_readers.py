"""Reading images by window from every supported format and place; bad input is one clear line."""

import contextlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile
import zarr

from spiralray import api
from spiralray.cli import main
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.io.archive import is_archive
from spiralray.io.archive_root import write_objects
from spiralray.io.output import read_table
from spiralray.io.readers import open_image, redact
from spiralray.pipeline.local import Options, segment_image_file
from spiralray.pipeline.segment import check_output


@pytest.fixture(scope="module")
def image():
    return generate(SyntheticSpec(300, 330, density=0.0008), seed=17)[0]


@pytest.fixture(scope="module")
def engine(small_engine):
    return small_engine  # reading and writing: the answer is the model's, whatever the model


def _ome(path, data, version):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    write_image(data, group, axes="tczyx", fmt=fmt, storage_options={"chunks": (1, 1, 1, 128, 128)})
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_input_level0_channel_and_singleton_axes(tmp_path, image, version):
    data = np.stack([np.zeros_like(image), image])[None, :, None]  # T=1, C=2, Z=1, Y, X
    path = _ome(tmp_path / "img.ome.zarr", data, version)
    r = open_image(str(path), channel=1)
    assert r.shape == image.shape and r.kind.startswith("ome-zarr") and not r.whole
    assert r.chunks == (128, 128)
    assert np.array_equal(r.read(100, 228, 30, 300), image[100:228, 30:300])
    with pytest.raises(SpiralrayError, match="2 channels.*--channel"):
        open_image(str(path))
    with pytest.raises(SpiralrayError, match="channel 2 out of range"):
        open_image(str(path), channel=2)
    single = _ome(tmp_path / "one.ome.zarr", image[None, None, None], version)
    assert np.array_equal(open_image(str(single)).read(0, 300, 0, 330), image)  # 5-D, singletons squeezed


def test_ome_zarr_input_segments_like_the_tiff(tmp_path, image, engine):
    data = np.stack([np.zeros_like(image), image])[None, :, None]
    path = _ome(tmp_path / "img.ome.zarr", data, "0.4")
    tifffile.imwrite(tmp_path / "img.tif", image)
    a = segment_image_file(str(path), str(tmp_path / "a.tif"), engine, Options(tile_size=256, channel=1))
    b = segment_image_file(str(tmp_path / "img.tif"), str(tmp_path / "b.tif"), engine, Options(tile_size=256))
    assert a["objects"] == b["objects"] > 5 and np.array_equal(a["labels"], b["labels"])


def test_stacks_need_a_plane(tmp_path, image):
    stack = np.stack([image, image // 2, image // 3])[None, None]  # T=1, C=1, Z=3
    path = _ome(tmp_path / "z.ome.zarr", stack, "0.5")
    with pytest.raises(SpiralrayError, match="--plane"):
        open_image(str(path))
    assert np.array_equal(open_image(str(path), plane=2).read(0, 10, 0, 10), image[:10, :10] // 3)
    assert np.array_equal(open_image(str(path), plane={"z": 1}).read(0, 10, 0, 10), image[:10, :10] // 2)
    # channels and planes both to choose: said at once (a user test met one error, then the other)
    two = _ome(tmp_path / "tcz.ome.zarr", np.concatenate([stack, stack], axis=1), "0.5")
    with pytest.raises(SpiralrayError, match=r"2 channels and is a stack .*--channel and .*--plane N"):
        open_image(str(two))
    assert open_image(str(two), channel=1, plane=0).shape == image.shape


def test_a_tiff_of_several_images_is_refused_unless_the_others_are_thumbnails(tmp_path, image):
    """A preview before the image, or an OME-TIFF of two positions: segmenting the first one
    silently would answer another question. A slide's smaller thumbnail after it is not."""
    small = image[:64, :64]
    for name, series in (("preview.tif", [small, image]), ("slide.tif", [image, small])):
        with tifffile.TiffWriter(tmp_path / name) as w:
            for a in series:
                w.write(a)
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as w:
        w.write(image)
        w.write(image)
    with pytest.raises(SpiralrayError, match=r"holds 2 images \(64x64, 300x330\): spiralray reads one"):
        open_image(str(tmp_path / "preview.tif"))
    with pytest.raises(SpiralrayError, match=r"holds 2 images \(300x330, 300x330\)"):
        open_image(str(tmp_path / "positions.ome.tif"))
    assert np.array_equal(open_image(str(tmp_path / "slide.tif")).read(0, 300, 0, 330), image)
    # a local name is a name: '?' in it is no query string
    tifffile.imwrite(tmp_path / "a?b.tif", image)
    assert open_image(str(tmp_path / "a?b.tif")).shape == image.shape


def test_big_endian_and_unlabelled_axes(tmp_path, image, engine):
    """A big-endian zarr segments as its native twin; a 4-D array without axis metadata is
    refused in one line rather than guessed at."""
    z = zarr.open_array(str(tmp_path / "be.zarr"), mode="w", shape=image.shape, dtype=">u2", zarr_format=2)
    z[...] = image
    code = segment_image_file(str(tmp_path / "be.zarr"), str(tmp_path / "be.tif"), engine, Options())
    assert np.array_equal(code["labels"], api.segment_image(engine, image).labels) and code["objects"] > 3
    zarr.create_array(str(tmp_path / "q.zarr"), data=np.zeros((2, 3, 60, 70), np.uint16))
    for channel, plane in ((1, None), (1, 2), (None, {"q": 1})):
        with pytest.raises(SpiralrayError, match=r"does not say what its axes 0, 1 are \(no axis metadata\)"):
            open_image(str(tmp_path / "q.zarr"), channel=channel, plane=plane)


@pytest.mark.parametrize("compression", ["lzw", "jpeg", "packbits", "zlib"])
def test_compressed_tiffs_from_microscope_software(tmp_path, compression):
    img = (np.arange(400 * 300) % 251).astype(np.uint8).reshape(400, 300)
    tifffile.imwrite(tmp_path / "c.tif", img, compression=compression, rowsperstrip=64)
    r = open_image(str(tmp_path / "c.tif"))
    assert r.chunks == (64, 300) and not r.whole  # strips: read by window
    got = r.read(64, 200, 10, 290)
    # JPEG is lossy: the window equals the whole file decoded by tifffile, cut the same way
    want = tifffile.imread(tmp_path / "c.tif") if compression == "jpeg" else img
    assert np.array_equal(got, want[64:200, 10:290])


def test_tiled_and_single_strip_tiffs(tmp_path, image):
    tifffile.imwrite(tmp_path / "t.tif", image, tile=(128, 128), compression="zlib")
    r = open_image(str(tmp_path / "t.tif"))
    assert r.chunks == (128, 128) and not r.whole
    assert np.array_equal(r.read(50, 250, 60, 300), image[50:250, 60:300])
    tifffile.imwrite(tmp_path / "s.tif", image, compression="zlib", rowsperstrip=300)
    assert open_image(str(tmp_path / "s.tif")).whole  # one compressed strip: read whole


def test_zarr_v2_array_and_png(tmp_path, image):
    z = zarr.create_array(
        str(tmp_path / "v2.zarr"), shape=image.shape, chunks=(100, 100), dtype=image.dtype, zarr_format=2
    )
    z[...] = image
    assert np.array_equal(open_image(str(tmp_path / "v2.zarr")).read(0, 300, 0, 330), image)
    import imageio.v3 as iio

    eight = (image // 256).astype(np.uint8)
    iio.imwrite(tmp_path / "i.png", eight)
    r = open_image(str(tmp_path / "i.png"))
    assert r.whole and r.shape == image.shape
    assert np.array_equal(r.read(10, 90, 20, 120), eight[10:90, 20:120])
    iio.imwrite(tmp_path / "i.jpg", eight)  # lossy: equal to the file as decoded
    r = open_image(str(tmp_path / "i.jpg"))
    assert np.array_equal(r.read(0, r.shape[0], 0, r.shape[1]), iio.imread(tmp_path / "i.jpg"))


def test_a_grey_png_saved_as_colour_is_read_as_grey(tmp_path, image):
    """RGB, RGBA and grey+alpha PNGs whose colour channels are equal (the 2018 Data Science
    Bowl's images are all RGBA) are the grey image; a colour one still needs --channel."""
    import imageio.v3 as iio

    eight = (image // 256).astype(np.uint8)
    alpha = np.full_like(eight, 255)
    for name, pixels in (
        ("rgb", np.dstack([eight] * 3)),
        ("rgba", np.dstack([eight, eight, eight, alpha])),
        ("la", np.dstack([eight, alpha])),
    ):
        iio.imwrite(tmp_path / f"{name}.png", pixels)
        r = open_image(str(tmp_path / f"{name}.png"))
        assert r.shape == eight.shape and np.array_equal(r.read(0, 300, 0, 330), eight), name
    chosen = open_image(str(tmp_path / "rgba.png"), channel=2)  # a channel chosen reads as before
    assert chosen.plane.axes == "yxc" and np.array_equal(chosen.read(0, 300, 0, 330), eight)
    colour = np.dstack([eight, eight // 2, eight, alpha])
    iio.imwrite(tmp_path / "colour.png", colour)
    with pytest.raises(SpiralrayError, match="image has 4 channels .*choose one with --channel"):
        open_image(str(tmp_path / "colour.png"))
    assert np.array_equal(
        open_image(str(tmp_path / "colour.png"), channel=1).read(0, 300, 0, 330), eight // 2
    )


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.write_bytes(os.urandom(2000)), "cannot read"),
        (lambda p: p.write_bytes(b""), "cannot read .*x.png as an image: the file is empty"),
    ],
)
def test_bad_png_is_one_line(tmp_path, make, expected):
    p = tmp_path / "x.png"
    make(p)
    with pytest.raises(SpiralrayError, match=expected) as e:
        open_image(str(p))
    assert "\n" not in str(e.value)


def test_non_image_arrays_are_refused(tmp_path):
    zarr.create_array(str(tmp_path / "v.zarr"), shape=(1000,), chunks=(100,), dtype="u2")
    with pytest.raises(SpiralrayError, match="not an image"):
        open_image(str(tmp_path / "v.zarr"))
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", shape=(10, 10), dtype="u2")
    with pytest.raises(SpiralrayError, match="zarr group, not an image"):
        open_image(str(tmp_path / "g.zarr"))
    with pytest.raises(SpiralrayError, match="unknown URL protocol"):
        open_image("nosuch://bucket/x.zarr")


def _chunked(tmp_path, image):
    path = tmp_path / "c.zarr"
    z = zarr.create_array(str(path), shape=image.shape, chunks=(128, 128), dtype=image.dtype)
    z[...] = image
    return path


def test_missing_chunk_is_counted_and_strict_refuses(tmp_path, image, engine):
    path = _chunked(tmp_path, image)
    os.remove(path / "c" / "1" / "1")
    s = segment_image_file(str(path), str(tmp_path / "o.tif"), engine, Options(tile_size=256))
    assert s["missing_chunks"] == 1
    with pytest.raises(SpiralrayError, match="1 missing chunks.*--strict"):
        segment_image_file(str(path), str(tmp_path / "o2.tif"), engine, Options(tile_size=256, strict=True))


def test_missing_chunks_are_counted_in_the_chosen_plane_only(tmp_path, monkeypatch):
    path = str(tmp_path / "cyx.zarr")
    z = zarr.create_array(path, shape=(3, 200, 300), chunks=(1, 128, 128), dtype="u2")
    z[1] = 7  # one channel written: every other channel's chunks are missing
    z[2, :100] = 7  # and half of another's
    assert [open_image(path, channel=c).missing_chunks for c in (0, 1, 2)] == [6, 0, 3]
    # zarr v2, nested keys ('1/0/0') and dotted ('1.0.0'), and sharded v3: the same count from
    # the one listing the content stamp reads
    for i, kw in enumerate(
        (
            {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
            {"zarr_format": 2},
            {"shards": (1, 256, 256), "chunks": (1, 128, 128)},
        )
    ):
        other = str(tmp_path / f"o{i}.zarr")
        z = zarr.create_array(other, shape=(3, 200, 300), dtype="u2", **{"chunks": (1, 128, 128), **kw})
        z[2, :, :100] = 7  # 2 of 6 chunks written; of sharded, one shard (4 chunks) not
        r = open_image(other, channel=2)
        assert r.stored() and r.missing_chunks == 4, kw
    # the store is listed only when asked, and once for both the count and the stamp: an actor
    # opening an image of a large archive on S3 to read its tiles lists nothing
    import spiralray.io.storage as storage

    listings = []
    real = storage.stored_objects
    monkeypatch.setattr(storage, "stored_objects", lambda *a: listings.append(a) or real(*a))
    r = open_image(path, channel=2)
    assert listings == []
    assert r.missing_chunks == 3 and r.stamp() and r.describe()["missing_chunks"] == 3
    assert len(listings) == 1
    # an archive image's plan task takes the driver's count: its store is not listed again
    from spiralray.core.config import SpiralNetConfig
    from spiralray.pipeline.segment import _plan

    plan = _plan(path, Options(channel=2, tile_size=256), SpiralNetConfig(), 0, 3)
    assert plan.source["missing_chunks"] == 3 and len(listings) == 1


def test_corrupt_chunk_names_the_chunk_and_leaves_the_output_resumable(tmp_path, image, engine):
    path = _chunked(tmp_path, image)
    good = (path / "c" / "2" / "1").read_bytes()
    (path / "c" / "2" / "1").write_bytes(b"\x00garbage" * 10)
    out = tmp_path / "o.zarr"
    with pytest.raises(SpiralrayError, match=r"chunk at rows 256-300, cols 128-256") as e:
        segment_image_file(str(path), str(out), engine, Options(tile_size=256))
    assert "\n" not in str(e.value)
    assert not out.exists()  # found by the statistics pass, before anything was written
    (path / "c" / "2" / "1").write_bytes(good)  # the user repairs the chunk and re-runs
    s = segment_image_file(str(path), str(out), engine, Options(tile_size=256))
    ref = segment_image_file(str(path), str(tmp_path / "ref.tif"), engine, Options(tile_size=256))
    assert np.array_equal(np.asarray(zarr.open_array(str(out / "labels/instances/0"))[...]), ref["labels"])
    assert s["objects"] == ref["objects"]


def test_s3_input_and_output_on_a_local_endpoint(s3, tmp_path, image, engine):
    url = "s3://spiralray-test/in/img.zarr"
    z = zarr.create_array(url, shape=image.shape, chunks=(128, 128), dtype=image.dtype, overwrite=True)
    z[...] = image
    assert np.array_equal(open_image(url).read(10, 200, 20, 300), image[10:200, 20:300])
    out = "s3://spiralray-test/out/img.zarr"
    s = segment_image_file(url, out, engine, Options(tile_size=256))
    tifffile.imwrite(tmp_path / "img.tif", image)
    ref = segment_image_file(
        str(tmp_path / "img.tif"), str(tmp_path / "r.tif"), engine, Options(tile_size=256)
    )
    got = np.asarray(zarr.open_array(out + "/labels/instances/0", mode="r")[...])
    assert s["objects"] == ref["objects"] > 5 and np.array_equal(got, ref["labels"])
    assert zarr.open_group(out, mode="r").attrs["spiralray"]["complete"] is True
    # a chunk of the input rewritten: the same path, other bytes; refused, not "already complete"
    stamp = open_image(url).stamp()
    assert stamp and stamp == open_image(url + "/").stamp()
    z[:128, :128] = image[:128, :128][::-1]
    assert open_image(url).stamp() != stamp
    # a chunk never written is counted from the same listing on the object store
    gap_url = url.replace("img.zarr", "gap.zarr")
    gap = zarr.create_array(gap_url, shape=image.shape, chunks=(128, 128), dtype=image.dtype)
    gap[128:] = image[128:]
    assert open_image(gap_url).missing_chunks == -(-image.shape[1] // 128)
    with pytest.raises(SpiralrayError, match="input contents differ"):
        segment_image_file(url, out, engine, Options(tile_size=256))
    with pytest.raises(SpiralrayError, match="input not found"):
        open_image("s3://no-such-bucket/x.zarr")
    import s3fs

    for typo in ("s3://spiralray-tset/out/img.zarr", "s3://spiralray-tset/labels/"):  # image, archive
        with pytest.raises(SpiralrayError, match="output bucket does not exist: s3://spiralray-tset"):
            check_output(url, typo, Options(tile_size=256))
    assert not s3fs.S3FileSystem(skip_instance_cache=True).exists("spiralray-tset")  # not created


def test_an_unreachable_object_store_is_not_called_a_missing_bucket(s3, monkeypatch):
    """s3fs's exists() answers False for any failure; the check asks again to say which."""
    import s3fs
    from test_serve import free_port

    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(SpiralrayError) as err:
            check_output("s3://spiralray-test/in/x.zarr", "s3://spiralray-test/out/", Options(tile_size=256))
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        s3fs.S3FileSystem.clear_instance_cache()
    # the input, the first thing looked at (is it an archive?), names the store it could not reach
    said = str(err.value)
    assert said.startswith("cannot reach s3://spiralray-test/in/x.zarr: "), said
    assert said.endswith("(check the object store's endpoint and credentials)"), said


def test_an_endpoint_that_refuses_everything_is_named_as_such(s3, monkeypatch):
    """From a user test: AWS_ENDPOINT_URL set to another service's port (one that answers 403
    Forbidden) gave 'unreadable archive index ... PermissionError: Forbidden', naming an index
    that did not exist and not the endpoint."""
    import http.server
    import threading

    import s3fs

    from spiralray.io.archive import INDEX
    from spiralray.io.output import Output

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _no(self):
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_POST = _no

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(SpiralrayError) as err:
            Output("s3://lab/out_c/").get_json(INDEX, "archive index")
    finally:
        server.shutdown()
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        s3fs.S3FileSystem.clear_instance_cache()
    assert str(err.value).startswith("no access to s3://lab/out_c (reading its archive index): ")
    assert str(err.value).endswith("(check the object store's endpoint and credentials)"), err.value


def test_s3_archive_to_s3_labels_from_the_command_line(s3, tmp_path, engine, small_model):
    """The product's main path as a user runs it: an archive prefix in object storage segmented
    on (embedded) Ray into labels in object storage, with the archive's object table."""
    import pyarrow.parquet as pq
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3)
    images = {"a.tif": generate(SyntheticSpec(200, 240), seed=91)[0]}
    images["sub/b.tif"] = generate(SyntheticSpec(180, 260), seed=92)[0]
    for rel, im in images.items():
        tifffile.imwrite(tmp_path / "x.tif", im)
        fs.put(str(tmp_path / "x.tif"), f"spiralray-test/arch/{rel}")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SPIRALRAY_LOG": os.devnull}
    env.pop("RAY_ADDRESS", None)
    args = ["segment", "s3://spiralray-test/arch/", "s3://spiralray-test/labels/", "--tile-size", "256"]
    args += ["--model", small_model]
    p = subprocess.run(
        [sys.executable, "-m", "spiralray", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert s["executor"] == "ray" and s["images"] == 2 and not s["failed"]
    assert s["objects_table"] == "s3://spiralray-test/labels/objects.parquet"
    with fs.open("spiralray-test/labels/objects.parquet", "rb") as f:
        table = pq.read_table(f).to_pydict()
    assert len(table["id"]) == s["objects"] > 5 and set(table["image"]) == set(images)
    hierarchy = zarr.open_group("s3://spiralray-test/labels", mode="r")  # one zarr hierarchy
    assert sorted(hierarchy.group_keys()) == ["a.zarr", "sub"] and "labels" in hierarchy["sub/b.zarr"]
    for rel, im in images.items():
        out = "s3://spiralray-test/labels/" + rel.replace(".tif", ".zarr")
        got = np.asarray(zarr.open_array(out + "/labels/instances/0", mode="r")[...])
        assert np.array_equal(got, api.segment_image(engine, im).labels), rel


def test_redact_removes_credentials_and_query():
    assert redact("s3://key:secret@bucket/a.zarr?X-Amz-Signature=abc") == "s3://bucket/a.zarr"
    assert redact("https://user:pw@host:9000/p/x.tif?token=1#frag") == "https://host:9000/p/x.tif"


def _cli(*args, env):
    p = subprocess.run(
        [sys.executable, "-m", "spiralray", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SPIRALRAY_LOG": os.devnull, **env},
    )
    return p.returncode, p.stderr


def test_unreachable_endpoint_and_wrong_credentials_are_one_line(tmp_path):
    code, err = _cli(
        "segment",
        "s3://bkt/a.zarr",
        tmp_path / "o.tif",
        # keys set so the client gets as far as connecting (its dropped coroutines then print
        # teardown tracebacks unless the CLI routes them to the log)
        env={
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
        },
    )
    assert code == 2 and "cannot reach s3://bkt/a.zarr" in err and len(err.strip().splitlines()) == 1
    # said by the first look at the input (is it an archive?), which used to swallow it: the
    # user then waited for the client's retries twice (20 s here, not 10)
    unreachable = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    unreachable["config_kwargs"] = {"retries": {"max_attempts": 1}}  # a short wait here
    with pytest.raises(SpiralrayError, match="^cannot reach s3://bkt/a.zarr: EndpointConnectionError"):
        is_archive("s3://bkt/a.zarr", unreachable)
    # a server that checks credentials (moto with authentication on): unknown keys are refused
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        import requests

        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "wrong",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
        code, err = _cli("segment", "s3://bkt/a.zarr", tmp_path / "o.tif", env=env)
        assert code == 2 and "s3://bkt/a.zarr" in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def _throttling(endpoint: str, fails: dict[str, int], method: str = "GET"):
    """An HTTP proxy on 127.0.0.1 in front of the S3 server at ``endpoint`` that answers S3's
    503 SlowDown to the first ``fails[key]`` ``method`` requests for objects whose path contains
    ``key``, for each key. Yields (proxy URL, {key: how many 503s it sent})."""
    import http.client
    import http.server
    from urllib.parse import urlparse

    target, served = urlparse(endpoint), dict.fromkeys(fails, 0)
    slow_down = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status, headers, body):
            self.send_response(status)
            size = str(len(body))
            for k, v in headers:
                if k.lower() == "content-length" and self.command == "HEAD":
                    size = v  # a HEAD's length is the object's, its body empty
                elif k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", size)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            path = self.path.split("?")[0]
            key = next((k for k in fails if k in path), None) if self.command == method else None
            if key is not None and served[key] < fails[key]:
                served[key] += 1
                return self._answer(503, [("Content-Type", "application/xml")], slow_down)
            c = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            c.request(self.command, self.path, body=body, headers={**headers, "Host": target.netloc})
            r = c.getresponse()
            self._answer(r.status, r.getheaders(), r.read())

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_a_throttled_store_is_retried_beyond_the_clients_own_retries(s3, monkeypatch):
    """Real S3 (moto) behind a proxy that answers one chunk's first GETs 503 SlowDown more times
    than s3fs retries by itself: s3fs then raises OSError(EBUSY), which the reader retries, and
    the data comes back whole; a store that never stops refusing gives one line naming the chunk."""
    import s3fs
    import zarr

    a = (np.arange(200 * 300) % 997).astype(np.uint16).reshape(200, 300)
    url = "s3://spiralray-test/throttled.zarr"
    zarr.open_array(url, mode="w", shape=a.shape, chunks=(100, 100), dtype=a.dtype)[...] = a
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: s3fs's and ours remain
    try:
        for fails in (8, 10**6):
            with _throttling(s3, {"/throttled.zarr/c/0/0": fails}) as (proxy, served):
                monkeypatch.setenv("AWS_ENDPOINT_URL", proxy)
                s3fs.S3FileSystem.clear_instance_cache()
                reader = open_image(url)
                if fails == 8:
                    assert np.array_equal(reader.read(0, 200, 0, 300), a)
                    assert served["/throttled.zarr/c/0/0"] == fails > s3fs.S3FileSystem.retries
                else:
                    with pytest.raises(SpiralrayError) as err:
                        reader.read(0, 200, 0, 300)
                    assert str(err.value) == (
                        f"cannot read {url} chunk at rows 0-100, cols 0-100: "
                        "OSError: [Errno 16] Please reduce your request rate."
                    )
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        s3fs.S3FileSystem.clear_instance_cache()  # no later test may reach the proxy


def test_throttled_writes_are_retried_and_the_output_is_whole(s3, monkeypatch, tmp_path, image, engine):
    """Each kind of object an S3 output is made of gets 503 SlowDown for its first 8 PUTs, more
    than s3fs retries one PUT by itself: the writes are retried and the output equals a local
    run's."""
    import s3fs

    tifffile.imwrite(tmp_path / "img.tif", image)
    ref = segment_image_file(
        str(tmp_path / "img.tif"), str(tmp_path / "r.tif"), engine, Options(tile_size=256)
    )
    out = "s3://spiralray-test/throttled_out.zarr"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    try:
        # each kind of write: the manifest, a tile's record, scratch chunks, label chunks (a
        # level's, written by da.store), the table, and the root group's metadata
        kinds = {
            k: 8
            for k in (
                "/throttled_out.zarr/.spiralray/manifest.json",
                "/throttled_out.zarr/.spiralray/tiles/",
                "/throttled_out.zarr/.spiralray/seed_ids/c/",
                "/throttled_out.zarr/labels/instances/0/c/",
                "/throttled_out.zarr/objects.parquet",
                "/throttled_out.zarr/zarr.json",
            )
        }
        with _throttling(s3, kinds, "PUT") as (proxy, served):
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy)
            s3fs.S3FileSystem.clear_instance_cache()
            s = segment_image_file(str(tmp_path / "img.tif"), out, engine, Options(tile_size=256))
            assert served == kinds and 8 > s3fs.S3FileSystem.retries, served
        # an archive's table, streamed from its images' tables: streamed again from the start
        root, table = "s3://spiralray-test/throttled_root", {"/throttled_root/objects.parquet": 8}
        with _throttling(s3, table, "PUT") as (proxy, served):
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy)
            s3fs.S3FileSystem.clear_instance_cache()
            rows = write_objects(root, [(0, "img.tif", out)])
            assert served == table, served
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        s3fs.S3FileSystem.clear_instance_cache()
    assert s["objects"] == ref["objects"] > 5
    assert np.array_equal(
        np.asarray(zarr.open_array(out + "/labels/instances/0", mode="r")[...]), ref["labels"]
    )
    assert zarr.open_group(out, mode="r").attrs["spiralray"]["complete"] is True
    whole = read_table(root)
    assert rows == s["objects"] and whole["seed_id"].tolist() == read_table(out)["seed_id"].tolist()


class _Flaky:
    """An array whose reads fail ``fails`` times with ``exc`` first (a throttled store)."""

    def __init__(self, a, fails, exc):
        self.a, self.fails, self.exc, self.calls = a, fails, exc, 0
        self.shape, self.dtype = a.shape, a.dtype

    def __getitem__(self, idx):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.exc
        return self.a[idx]


def test_transient_storage_errors_are_retried_permanent_ones_are_not(image, monkeypatch):
    from spiralray.io.planes import Plane
    from spiralray.io.readers import ImageReader

    monkeypatch.setattr("time.sleep", lambda s: None)
    plane = Plane("yx", (slice(None), slice(None)))
    flaky = _Flaky(image, 3, ConnectionResetError("connection reset by peer"))
    r = ImageReader("s3://b/x.zarr", flaky, plane, (100, 100), False, "zarr")
    assert np.array_equal(r.read(0, 50, 0, 60), image[:50, :60]) and flaky.calls == 4
    r = ImageReader(
        "s3://b/x.zarr", _Flaky(image, 99, TimeoutError("read timed out")), plane, (100, 100), False, "zarr"
    )
    with pytest.raises(SpiralrayError, match="cannot read s3://b/x.zarr"):
        r.read(0, 50, 0, 60)
    corrupt = _Flaky(image, 1, ValueError("zstd decompression failed"))
    r = ImageReader("s3://b/x.zarr", corrupt, plane, (100, 100), False, "zarr")
    with pytest.raises(SpiralrayError, match="decompression"):
        r.read(0, 50, 0, 60)
    assert corrupt.calls == 2  # one read, then one more to name the failing chunk: no retries


def test_deletes_name_exact_paths_not_patterns(s3, tmp_path):
    """A reviewer's case: fsspec's rm expands '[', so removing w[1].zarr on S3 (an --overwrite,
    an ingest's replacement) deleted w1.zarr's objects."""
    import fsspec
    import s3fs

    from spiralray.io.storage import delete

    fs = s3fs.S3FileSystem(endpoint_url=s3)
    for key in ("w1.zarr/a", "w1.zarr/b/c", "w[1].zarr/a", "w[1].zarr/b/c", "w[1].zarr.bak/a"):
        fs.pipe(f"spiralray-test/del/{key}", b"x")
    delete(fs, "spiralray-test/del/w[1].zarr")
    left = sorted(k.split("/del/")[1] for k in fs.find("spiralray-test/del"))
    assert left == ["w1.zarr/a", "w1.zarr/b/c", "w[1].zarr.bak/a"]
    local = fsspec.filesystem("file")
    for key in ("w1.zarr/a", "w[1].zarr/a", "w[1].zarr/b/c"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    delete(local, str(tmp_path / "w[1].zarr"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.zarr"]


def test_a_channel_is_chosen_by_its_name(tmp_path, image):
    """From a user test: --channel H2B-GFP was 'invalid int value', though the OME-Zarr's omero
    metadata and the OME-TIFF's OME-XML name every channel."""
    data = np.stack([np.zeros_like(image), image])[None, :, None]  # T=1, C=2, Z=1
    path = _ome(tmp_path / "img.ome.zarr", data, "0.5")
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["ome"] = {
        **group.attrs["ome"],
        "omero": {"channels": [{"label": "Actin"}, {"label": "H2B-GFP"}]},
    }
    assert open_image(str(path), channel="h2b-gfp").read(0, 10, 0, 10).tolist() == image[:10, :10].tolist()
    assert open_image(str(path), channel="1").plane == open_image(str(path), channel=1).plane
    with pytest.raises(
        SpiralrayError, match=r"no channel named 'DAPI' \(its channels: 0 'Actin', 1 'H2B-GFP'\)"
    ):
        open_image(str(path), channel="DAPI")
    meta = {"axes": "CYX", "Channel": {"Name": ["Actin", "Hoechst"]}}
    tifffile.imwrite(tmp_path / "c.ome.tif", data[0, :, 0], ome=True, metadata=meta)
    assert open_image(str(tmp_path / "c.ome.tif"), channel="Hoechst").plane.index[0] == 1
    tifffile.imwrite(tmp_path / "plain.tif", data[0, :, 0])
    with pytest.raises(SpiralrayError, match="names no channels: give --channel Hoechst as a number"):
        open_image(str(tmp_path / "plain.tif"), channel="Hoechst")
    # the CLI takes a name, and a resumed run by number is the same run
    out = tmp_path / "o.zarr"
    assert main(["segment", str(tmp_path / "c.ome.tif"), str(out), "--channel", "Hoechst"]) == 0
    assert main(["segment", str(tmp_path / "c.ome.tif"), str(out), "--channel", "1"]) == 0
