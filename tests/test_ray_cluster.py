"""Whole-cluster flows, each in its own processes (so they never touch the session's Ray):
`ray start --head` + `ray job submit` exactly as the README shows it (token auth), the driver
killed then the command re-run, and a two-node cluster whose segmenter actors land on both."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from spiralray import api
from spiralray.data.synthetic import SyntheticSpec, generate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # a job's python is the one ray start sees
    env["SPIRALRAY_LOG"] = os.devnull
    return {**env, **extra}


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "img.tif"
    tifffile.imwrite(path, generate(SyntheticSpec(384, 400, density=0.0009), seed=23)[0])  # 2 x 2 tiles
    return path


@pytest.fixture(scope="module")
def reference(image_file):
    return api.segment_image(api.load_engine(None), tifffile.imread(image_file)).labels


@pytest.fixture(scope="module")
def small_reference(image_file, small_engine):
    return api.segment_image(small_engine, tifffile.imread(image_file)).labels


def _labels(out):
    return np.asarray(zarr.open_array(f"{out}/labels/instances/0", mode="r")[...])


def test_ray_start_and_job_submit_as_the_readme_shows(image_file, reference, tmp_path):
    port, dash = _port(), _port()
    import secrets

    (tmp_path / "auth_token").write_text(secrets.token_hex(32))  # this cluster's own token
    env = _env(RAY_AUTH_TOKEN_PATH=str(tmp_path / "auth_token"))
    # The dashboard agent's own HTTP port too: its default (52365) belongs to the test session's
    # Ray, and an agent that cannot bind it leaves the head unable to take jobs ("No available
    # agent to submit job").
    head = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(_port()),
         "--num-cpus", "2", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        out = tmp_path / "out.zarr"
        job = ["python", "jobs/segment.py", str(image_file), str(out), "--tile-size", "256", "--json"]
        cmd = [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{dash}",
            "--working-dir",
            ".",
            "--",
            *job,
        ]
        deadline = time.monotonic() + 180  # the head's job server takes a few seconds to come up
        while True:
            p = subprocess.run(
                cmd, cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True
            )
            # retry only while the head is not ready to take jobs ("No available agent ...",
            # connection refused); once a job ran, its outcome is the answer
            if p.returncode == 0 or re.search(r"Job '\S+' (succeeded|failed|stopped)", p.stdout):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        summary = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
        assert summary["executor"] == "ray"  # inside a job, RAY_ADDRESS makes auto pick Ray
        assert np.array_equal(_labels(out), reference)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)


def test_driver_killed_then_rerun_gives_the_same_output(image_file, small_model, small_reference, tmp_path):
    out = tmp_path / "o.zarr"
    cmd = [sys.executable, "-m", "spiralray", "segment", str(image_file), str(out), "--executor", "ray",
           "--tile-size", "256", "--json", "--model", small_model]  # fmt: skip
    env = _env(RAY_AUTH_MODE="disabled")
    p = subprocess.run(
        cmd, env={**env, "SPIRALRAY_FAULT": "tile:2"}, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 137, p.stderr[-2000:]
    assert zarr.open_group(str(out)).attrs["spiralray"]["complete"] is False
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert np.array_equal(_labels(out), small_reference)  # ids included


TWO_NODES = textwrap.dedent(
    """
    import json, sys
    import numpy as np, ray, tifffile, zarr
    from ray.cluster_utils import Cluster
    from spiralray import api
    from spiralray.pipeline.ray_exec import RayOptions
    from spiralray.pipeline.run import Options
    from spiralray.pipeline.segment import segment

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, resources={"segmenter": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    engine = api.load_engine(sys.argv[3])
    ropts = RayOptions(
        segment_actors=2, segment_cpus=0.5, batch_regions=32, segment_resources={"segmenter": 1}
    )
    s = segment(sys.argv[1], sys.argv[2], engine, Options(tile_size=256), executor="ray", ropts=ropts)
    got = np.asarray(zarr.open_array(sys.argv[2] + "/labels/instances/0")[...])
    ref = api.segment_image(engine, tifffile.imread(sys.argv[1])).labels
    ids = {n.node_id[:8] for n in nodes}
    equal = bool(np.array_equal(got, ref))
    print(json.dumps({"equal": equal, "busy": s["busy_seconds"], "nodes": sorted(ids)}))
    ray.shutdown(); cluster.shutdown()
    """
)


def test_two_node_cluster_uses_both_nodes_and_gives_the_same_output(image_file, small_model, tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", TWO_NODES, str(image_file), str(tmp_path / "o.zarr"), small_model],
        env=_env(RAY_AUTH_MODE="disabled"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["equal"]
    assert {k.split(":")[0] for k in r["busy"]} == set(r["nodes"])  # a segmenter on each node
