"""The Serve application end to end: ``spiralray serve`` (``cmd_serve``) on the session's real
local Ray, real HTTP on 127.0.0.1, a model from a real MLflow sqlite registry by alias.

Served labels equal the CLI's; every bad request answers 4xx JSON and the service keeps
working; concurrent requests are batched without changing labels; an alias move is picked up by
an in-place reconfigure (same replica process) while requests keep succeeding.
"""

import argparse
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import tifffile
from test_serve_codecs import npy_bytes, png_header, tiff_bytes

from spiralray import api, modelzoo
from spiralray.core.metrics import labels_equal
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.errors import SpiralrayError
from spiralray.serve import codecs
from spiralray.serve.app import SEGMENT_PARAMS
from spiralray.serve.cli import cmd_serve

MODEL = "spiral-serve"
MAX_BYTES = 1_000_000
MAX_PIXELS = 512 * 512
ADMIT = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(mlflow_store, tmp_path_factory):
    """Two registered versions: 1 = the shipped model (alias ``champion``), 2 = the same weights
    with a larger minimum object area (different labels, so a switch is visible)."""
    import mlflow

    from spiralray.train import registry as reg

    net = modelzoo.load(None)
    variants = {
        "1": net,
        "2": dataclasses.replace(net, config=net.config.replace(candidates={"min_area": 400})),
    }
    mlflow.set_experiment("serve-tests")
    for version, variant in variants.items():
        d = tmp_path_factory.mktemp(f"model{version}") / "spiralnet"
        modelzoo.save(variant, d)
        with mlflow.start_run():
            mlflow.log_metric("val_object_f1_50", 0.5 + int(version) / 10)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=reg.MODEL_CODE,
                artifacts={"spiralnet": str(d)},
                pip_requirements=[],
            )
        assert reg.register(info.model_uri, MODEL, "champion" if version == "1" else None) == version
    return variants


@pytest.fixture(scope="module")
def server(ray_cluster, registry):
    """``cmd_serve`` in a thread (its ``wait`` is this fixture's lifetime); ``.reload`` is what
    SIGHUP does."""
    port = free_port()
    args = argparse.Namespace(
        host="127.0.0.1",
        port=port,
        model=f"models:/{MODEL}@champion",
        address=None,
        device="cpu",
        num_gpus=0.0,
        replicas=1,
        max_batch_size=8,
        max_queued=4,  # admit = 2 x 8 running + 4 queued = 20 requests at once
        max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS,
        set=["num_cpus=0.5", "ingress_num_cpus=0.25", "batch_wait_timeout_s=0.05"],
    )
    stop, ready, state = threading.Event(), threading.Event(), {}

    def wait(reload):
        state["reload"] = reload
        ready.set()
        stop.wait()

    def run():
        try:
            cmd_serve(args, wait=wait)
        except BaseException as exc:  # surfaced by the fixture below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(300), "serve did not start"
    if "error" in state:
        raise state["error"]
    state["url"] = f"http://127.0.0.1:{port}"
    yield argparse.Namespace(**state)
    stop.set()
    thread.join(120)


def post(server, body, content_type="image/tiff", query="", timeout=120):
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{server.url}/v1/segment{query}", data=body, headers=headers, timeout=timeout)


def served_labels(server, image, query=""):
    r = post(server, tiff_bytes(image), query=query)
    assert r.status_code == 200, r.text
    return tifffile.imread(io.BytesIO(r.content)), r


def test_health_model_and_openapi(server):
    assert requests.get(f"{server.url}/healthz", timeout=30).json()["status"] == "ok"
    info = requests.get(f"{server.url}/v1/model", timeout=30).json()
    assert info["name"] == MODEL and info["version"] == "1" and "champion" in info["aliases"]
    assert info["metrics"]["val_object_f1_50"] == pytest.approx(0.6)
    assert info["config"]["candidates"]["min_area"] == 60
    assert "tracking_uri" not in json.dumps(info) and info["batching"]["max_batch_size"] == 8
    assert info["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS, "admit": ADMIT}
    schema = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    documented = {(p, m) for p, ops in schema["paths"].items() for m in ops}
    assert documented == {("/healthz", "get"), ("/v1/model", "get"), ("/v1/segment", "post")}
    for path, method in documented:  # every documented route is served (a 4xx for no body is fine)
        assert requests.request(method, server.url + path, timeout=60).status_code not in (404, 405)
    docs = requests.get(f"{server.url}/docs", timeout=30)  # the README's interactive page
    assert docs.status_code == 200 and "openapi.json" in docs.text
    op = schema["paths"]["/v1/segment"]["post"]
    assert {p["name"] for p in op["parameters"]} == {
        "format",
        "mode",
        "channel",
        "plane",
        "ids",
        "exclude_border",
        "diameter",
        "pad_value",
        "pixel_size",
        "invert",
    }
    assert SEGMENT_PARAMS == {p["name"] for p in op["parameters"]}  # the unknown-parameter check's list
    assert set(op["requestBody"]["content"]) == set(codecs.MEDIA_TYPES)
    assert {"200", "413", "415", "422", "503"} <= set(op["responses"])


def test_served_labels_equal_the_cli(server, tmp_path):
    image, _ = generate(SyntheticSpec(160, 200), seed=11)
    tifffile.imwrite(tmp_path / "in.tif", image)
    cli = subprocess.run(
        [sys.executable, "-m", "spiralray", "segment", tmp_path / "in.tif", tmp_path / "out.tif"]
        + ["--model", f"models:/{MODEL}@champion"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ,  # MLFLOW_TRACKING_URI: the test registry
    )
    assert cli.returncode == 0, cli.stderr
    expected = tifffile.imread(tmp_path / "out.tif")
    labels, r = served_labels(server, image)
    assert labels.dtype == expected.dtype == np.uint32 and np.array_equal(labels, expected)
    assert r.headers["X-Objects"] == str(expected.max()) and r.headers["X-Model-Version"] == "1"
    as_npy = np.load(io.BytesIO(post(server, npy_bytes(image), "application/x-npy", "?format=npy").content))
    assert np.array_equal(as_npy, expected)
    import imageio.v3 as iio

    semantic = post(server, tiff_bytes(image), query="?format=png&mode=semantic")
    assert semantic.headers["content-type"] == "image/png"
    assert np.array_equal(iio.imread(semantic.content, extension=".png"), (expected > 0).astype(np.uint8))
    table = post(server, tiff_bytes(image), query="?format=json").json()
    assert table["count"] == expected.max() and table["shape"] == list(expected.shape)
    assert [o["area"] for o in table["objects"]] == np.bincount(expected.ravel())[1:].tolist()


def test_options_match_the_api(server, registry):
    """ids=seed, exclude_border and channel give what api.segment_image gives with them."""
    engine = api.load_engine(f"models:/{MODEL}/1", device="cpu")
    image, _ = generate(SyntheticSpec(128, 144), seed=5)
    stack = np.stack([np.zeros_like(image), image])  # 2 x H x W: the nuclei are channel 1
    seed_ids, _ = served_labels(server, image, "?ids=seed")
    assert np.array_equal(seed_ids, api.segment_image(engine, image, ids="seed").labels)
    from_channel, _ = served_labels(server, stack, "?channel=1")
    assert np.array_equal(from_channel, api.segment_image(engine, image).labels)
    import imageio.v3 as iio  # a grey PNG saved as RGBA is the grey image, as in the CLI

    eight = (image // 256).astype(np.uint8)
    rgba = iio.imwrite("<bytes>", np.dstack([eight] * 3 + [np.full_like(eight, 255)]), extension=".png")
    r = post(server, rgba, "image/png")
    assert r.status_code == 200, r.text
    assert np.array_equal(tifffile.imread(io.BytesIO(r.content)), api.segment_image(engine, eight).labels)
    buf = io.BytesIO()  # a calibrated TIFF: the JSON table in micrometers, as the CLI's
    tifffile.imwrite(
        buf, image, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    )
    table = post(server, buf.getvalue(), query="?format=json").json()
    assert table["count"] > 0 and all(o["area_um2"] == o["area"] * 0.25 for o in table["objects"])
    dark = (65535 - image).astype(np.uint16)  # dark nuclei on a bright background
    inverted, r = served_labels(server, dark, "?invert=true")
    assert (
        np.array_equal(inverted, api.segment_image(engine, dark, invert=True).labels) and inverted.max() > 0
    )
    assert float(r.headers["X-Polarity"]) > 0.3 and "X-Hint" not in r.headers
    r = served_labels(server, dark)[1]  # read as it is: dark nuclei on a bright background, a hint says so
    assert float(r.headers["X-Polarity"]) < -0.3 and "try with invert=true" in r.headers["X-Hint"]
    zstack = np.stack([np.zeros_like(image), np.zeros_like(image), image, image[::-1]])
    from_plane, _ = served_labels(server, zstack, "?plane=2")
    assert np.array_equal(from_plane, api.segment_image(engine, image).labels)
    big = generate(SyntheticSpec(300, 320, radius=(30, 40), density=0.0002), seed=6)[0]
    resized, _ = served_labels(server, big, "?diameter=70")
    assert np.array_equal(resized, api.segment_image(engine, big, diameter=70.0).labels)
    # a length: converted by ?pixel_size, or by the TIFF's own calibration
    assert np.array_equal(served_labels(server, big, "?diameter=35um&pixel_size=0.5")[0], resized)
    meta = {"axes": "YX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}
    calibrated = io.BytesIO()
    tifffile.imwrite(calibrated, big, ome=True, metadata=meta)
    r = post(server, calibrated.getvalue(), query="?diameter=17.5um")
    assert np.array_equal(tifffile.imread(io.BytesIO(r.content)), resized), r.text
    r = post(server, tiff_bytes(big), query="?diameter=17.5um")
    assert r.status_code == 422 and "needs the pixel size: pass pixel_size=" in r.json()["error"]
    padded = image.copy()
    padded[:40] = 0
    from_padded, _ = served_labels(server, padded, "?pad_value=0")
    assert np.array_equal(from_padded, api.segment_image(engine, padded, pad_value=0).labels)
    as_nan = padded.astype(np.float32)
    as_nan[:40] = np.nan
    from_nan, _ = served_labels(server, as_nan, "?pad_value=nan")
    assert np.array_equal(from_nan, from_padded) and from_nan.max() > 0
    inner, _ = served_labels(server, image, "?exclude_border=true")
    engine.cfg = engine.cfg.replace(candidates={"exclude_border": True})
    assert np.array_equal(inner, api.segment_image(engine, image).labels)


def test_concurrent_requests_are_batched_with_the_same_labels(server, registry):
    engine = api.load_engine(f"models:/{MODEL}/1", device="cpu")
    images = [generate(SyntheticSpec(112, 128), seed=20 + k)[0] for k in range(6)]
    results = [None] * len(images)

    def client(k):
        results[k] = post(server, tiff_bytes(images[k]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results), [
        (r.status_code, r.text) for r in results if r.status_code != 200
    ]
    # one @serve.batch call held several requests (their spiral passes shared)
    assert max(int(r.headers["X-Batch-Images"]) for r in results) > 1
    for image, r in zip(images, results, strict=True):
        got, want = tifffile.imread(io.BytesIO(r.content)), api.segment_image(engine, image).labels
        assert labels_equal(got, want)["equal"]  # DESIGN section 2; bitwise on one machine:
        assert np.array_equal(got, want)


def bad_requests():
    image = generate(SyntheticSpec(96, 96), seed=1)[0]
    good = tiff_bytes(image)
    bomb = tiff_bytes(np.zeros((1024, 1024), np.uint8), compression="zlib")
    return [
        ("no content type", good, None, "", 415),
        ("wrong content type", good, "text/plain", "", 415),
        ("empty body", b"", "image/tiff", "", 400),
        ("undecodable tiff", b"\x00garbage" * 10, "image/tiff", "", 400),
        ("undecodable png", b"garbage", "image/png", "", 400),
        ("truncated npy", npy_bytes(image)[:-10], "application/x-npy", "", 400),
        ("body over the byte limit", b"\x00" * (MAX_BYTES + 1), "image/tiff", "", 413),
        ("tiff over the pixel limit", bomb, "image/tiff", "", 413),
        ("png header over the pixel limit", png_header(50_000, 50_000), "image/png", "", 413),
        ("complex dtype", npy_bytes(image.astype(np.complex64)), "application/x-npy", "", 422),
        ("object dtype", npy_bytes(np.array([None, 1], object), True), "application/x-npy", "", 422),
        ("4-D image", npy_bytes(np.stack([np.stack([image] * 2)] * 2)), "application/x-npy", "", 422),
        ("3-D image without channel", npy_bytes(np.stack([image, image])), "application/x-npy", "", 422),
        ("channel out of range", npy_bytes(np.stack([image, image])), "application/x-npy", "?channel=5", 422),
        ("channel of a 2-D image", good, "image/tiff", "?channel=0", 422),
        ("plane of a 2-D image", good, "image/tiff", "?plane=0", 422),
        ("plane out of range", npy_bytes(np.stack([image, image])), "application/x-npy", "?plane=2", 422),
        ("image smaller than a region", tiff_bytes(np.ones((30, 300), np.uint16)), "image/tiff", "", 422),
        ("NaN pixels", npy_bytes(np.full((80, 80), np.nan, np.float32)), "application/x-npy", "", 422),
        ("bad format", good, "image/tiff", "?format=bmp", 422),
        ("bad mode", good, "image/tiff", "?mode=panoptic", 422),
        ("bad channel", good, "image/tiff", "?channel=abc", 422),
        ("negative channel", good, "image/tiff", "?channel=-1", 422),
        ("bad ids", good, "image/tiff", "?ids=random", 422),
        ("bad pad value", good, "image/tiff", "?pad_value=zero", 422),
        ("infinite pad value", good, "image/tiff", "?pad_value=1e999", 422),
        ("unknown parameter", good, "image/tiff", "?path=/etc/passwd", 422),
        ("seed ids as png", good, "image/tiff", "?format=png&ids=seed", 422),
        ("zero diameter", good, "image/tiff", "?diameter=0", 422),
        ("bad diameter", good, "image/tiff", "?diameter=big", 422),
        ("negative length", good, "image/tiff", "?diameter=-8um", 422),
        ("bad pixel size", good, "image/tiff", "?diameter=8um&pixel_size=0", 422),
        ("diameter larger than the image", good, "image/tiff", "?diameter=500", 422),
    ]


def test_bad_requests_answer_4xx_json_and_the_service_keeps_working(server):
    for name, body, content_type, query, status in bad_requests():
        r = post(server, body, content_type, query)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        error = r.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error, name
    assert requests.get(f"{server.url}/v1/segment", timeout=30).status_code == 405
    stack = npy_bytes(np.stack([np.ones((80, 80), np.uint16)] * 2))
    for body, query, says in [
        (tiff_bytes(np.ones((80, 80), np.uint16)), "?plane=0", "image is 2-D"),
        (stack, "?plane=2", "plane 2 out of range: the stack has 2 planes"),
        (stack, "?plane=0&channel=1", "not both"),
        (stack, "?pad_value=inf", "pad value must be finite (or nan), got inf"),
    ]:
        assert says in post(server, body, "application/x-npy" if body is stack else "image/tiff", query).text
    nan = post(server, npy_bytes(np.full((80, 80), np.nan, np.float32)), "application/x-npy", "")
    assert (
        nan.json()["error"]
        == "image contains NaN or infinite values (if NaN marks padding, name it as the pad value)"
    )  # no made-up path
    missing = requests.get(f"{server.url}/v1/nothing", timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    labels, _ = served_labels(server, generate(SyntheticSpec(96, 96), seed=2)[0])
    assert labels.max() > 0


def _half_sent(server, body: bytes) -> socket.socket:
    """A raw HTTP/1.1 POST to /v1/segment with its headers and only half of ``body`` sent."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = (
        f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/tiff\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def _response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """(status, headers, body) of the response on ``sock``; closes it."""
    import http.client

    r = http.client.HTTPResponse(sock)
    r.begin()
    try:
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        sock.close()


def test_overload_is_refused_with_503_before_the_body_is_read(server):
    """More simultaneous requests than the segmenter can hold, each with only half its body
    sent: the excess is answered 503 JSON with Retry-After while its body is still incomplete
    (so it was never read); every admitted request, once its body is complete, gets the
    correct labels, and serving goes on."""
    import select

    image = generate(SyntheticSpec(96, 96), seed=12)[0]
    body, n = tiff_bytes(image), ADMIT + 6
    socks = [_half_sent(server, body) for _ in range(n)]
    answered, deadline = set(), time.monotonic() + 120
    while len(answered) < n - ADMIT and time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in socks if s not in answered], [], [], 1.0)
        answered.update(ready)
    assert len(answered) == n - ADMIT, f"{len(answered)} of {n} answered before their bodies were sent"
    for sock in answered:
        status, headers, content = _response(sock)
        assert status == 503 and headers["retry-after"] == "1", (status, content)
        assert "busy" in json.loads(content)["error"]
    admitted = [s for s in socks if s not in answered]
    for sock in admitted:
        sock.sendall(body[len(body) // 2 :])
    results = [_response(sock) for sock in admitted]
    assert [status for status, _, _ in results] == [200] * ADMIT, [r[2][:200] for r in results]
    want = api.segment_image(api.load_engine(None, device="cpu"), image).labels
    assert all(np.array_equal(tifffile.imread(io.BytesIO(content)), want) for _, _, content in results)
    assert post(server, body).status_code == 200  # and serving goes on


def test_alias_move_is_picked_up_by_reconfigure_without_downtime(server, registry):
    import mlflow

    image = generate(SyntheticSpec(128, 128), seed=8)[0]
    from ray import serve

    segmenter = serve.get_deployment_handle("Segmenter", "spiralray")
    before = segmenter.model.remote().result()
    old = served_labels(server, image)[0]
    # (start, end, status, version) of each request a client sends back to back
    calls, first, stop, body = [], threading.Event(), threading.Event(), tiff_bytes(image)

    def keep_asking():
        while not stop.is_set():
            t0 = time.monotonic()
            r = post(server, body)
            calls.append((t0, time.monotonic(), r.status_code, r.headers.get("X-Model-Version")))
            first.set()

    client = threading.Thread(target=keep_asking)
    client.start()
    try:
        assert first.wait(120), "no answer before the reload"
        mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", "2")
        t0 = time.monotonic()
        info = server.reload()  # what SIGHUP does
        t1 = time.monotonic()
        # go on until a request sent after the reload has been answered
        deadline = time.monotonic() + 120
        while not any(start > t1 for start, *_ in calls) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        client.join(120)
    statuses = [(code, version) for *_, code, version in calls]
    assert any(start < t1 and end > t0 for start, end, *_ in calls), "no request overlapped the reload"
    assert [v for start, _, _, v in calls if start > t1] and all(
        v == "2" for start, _, _, v in calls if start > t1
    ), calls
    assert info["version"] == "2"
    assert requests.get(f"{server.url}/v1/model", timeout=30).json()["version"] == "2"
    after = segmenter.model.remote().result()
    assert after["version"] == "2" and after["generation"] == before["generation"] + 1
    assert after["pid"] == before["pid"]  # the same replica: reconfigured in place, not restarted
    assert after["config"]["candidates"]["min_area"] == 400
    assert all(code == 200 for code, _ in statuses), statuses
    assert {v for _, v in statuses} <= {"1", "2"} and statuses[-1][1] == "2"
    new = served_labels(server, image)[0]
    engine2 = api.load_engine(f"models:/{MODEL}/2", device="cpu")
    assert np.array_equal(new, api.segment_image(engine2, image).labels) and not np.array_equal(new, old)

    # A model that cannot load is refused; the working one keeps serving.
    with pytest.raises(SpiralrayError, match=r"cannot load .*\(still serving .*, version 2\)$"):
        server.reload(model=f"models:/{MODEL}/99")
    assert requests.get(f"{server.url}/v1/model", timeout=30).json()["version"] == "2"
    assert np.array_equal(served_labels(server, image)[0], new)


def test_a_replica_no_node_can_hold_is_refused_at_once():
    """``spiralray serve --num-gpus 1`` on its own embedded Ray (no GPU): one line, exit 2,
    naming the flag to lower, instead of a deploy that waits 5 minutes. No fixture: the command
    starts and stops its own Ray, as a user's does."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SPIRALRAY_LOG": os.devnull}
    env.pop("RAY_ADDRESS", None)
    cli = subprocess.run(
        [sys.executable, "-m", "spiralray", "serve", "--num-gpus", "1", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert cli.returncode == 2, cli.stderr
    import re

    assert re.fullmatch(  # the CPU count is the machine's
        r"spiralray: error: each segmenter replica asks for 0\.5 CPU, 1 GPU \(beside the HTTP ingress's"
        r" 0\.25 CPU\), which no node of this Ray cluster has \(at most \d+ CPU, 0 GPU\): lower --num-gpus,"
        r" or join a cluster that has them",
        cli.stderr.strip().splitlines()[-1],
    ), cli.stderr


def test_sighup_reloads_and_sigterm_stops_a_served_model(tmp_path):
    """``spiralray serve`` as a process, on its own embedded Ray, as a container runs it: SIGHUP
    reloads the model directory (edited meanwhile) in place, SIGTERM shuts it down with exit 0
    and frees the port."""
    import queue
    import signal

    net = modelzoo.load(None)
    model = tmp_path / "nuclei"
    modelzoo.save(net, model)
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SPIRALRAY_LOG": os.devnull}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "spiralray", "serve", "--model", str(model), "--port", str(port)]
    # its own session: a failing test kills the whole group, its embedded Ray's processes too
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def wait_for(prefix, seconds=300):
        deadline, seen = time.monotonic() + seconds, []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"serve exited {proc.returncode}: {seen}"
                continue
            seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line: {seen}")

    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("serving nuclei at")
        before = requests.get(f"{url}/v1/model", timeout=60).json()
        assert before["config"]["candidates"]["min_area"] != 400
        modelzoo.save(
            dataclasses.replace(net, config=net.config.replace(candidates={"min_area": 400})), model
        )
        proc.send_signal(signal.SIGHUP)
        assert wait_for("reloaded: nuclei").strip() == "reloaded: nuclei version None"
        after = requests.get(f"{url}/v1/model", timeout=60).json()
        assert (
            after["generation"] == before["generation"] + 1
            and after["config"]["candidates"]["min_area"] == 400
        )
        image = generate(SyntheticSpec(128, 128), seed=8)[0]
        r = requests.post(
            f"{url}/v1/segment", data=tiff_bytes(image), headers={"Content-Type": "image/tiff"}, timeout=120
        )
        assert r.status_code == 200 and np.array_equal(
            tifffile.imread(io.BytesIO(r.content)),
            api.segment_image(api.load_engine(str(model)), image).labels,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=10)
