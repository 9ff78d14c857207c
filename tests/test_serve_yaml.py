"""``serve run cluster/serve.yaml`` (Ray's own command, in a subprocess) starts the same
application as ``spiralray serve``.

The subprocess joins the session's Ray cluster (``--address``) instead of starting a second Ray
on this 2-CPU machine: a second cluster would double the memory and the start-up time and
compete for the same two cores. Only the HTTP port of the committed config is changed (a free
one); everything else is deployed as written. Serve is shut down first so that the config's own
http_options apply, and again at the end (``serve run`` shuts Serve down on Ctrl-C itself).
"""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
import tifffile
import yaml
from test_serve import free_port
from test_serve_codecs import tiff_bytes

from spiralray import api
from spiralray.data.synthetic import SyntheticSpec, generate

CONFIG = Path(__file__).resolve().parents[1] / "cluster" / "serve.yaml"


def test_serve_run_of_the_cluster_config_starts_the_same_app(ray_cluster, tmp_path):
    from ray import serve

    serve.shutdown()
    config = yaml.safe_load(CONFIG.read_text())
    port = free_port()
    config["http_options"]["port"] = port
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve_run.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "serve"), "run", str(path)]
        + ["--address", ray_cluster.get_runtime_context().gcs_address],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        # a suite run in the background (make test &, CI) ignores SIGINT, and a child inherits
        # that: serve run would sit out the Ctrl-C below for the whole wait
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve_run.log").read_text()[-3000:]
            assert time.time() < deadline, "serve run did not answer /healthz"
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or not ready
                pass
            time.sleep(1)
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()
        assert set(schema["paths"]) == {"/healthz", "/v1/model", "/v1/segment"}
        info = requests.get(f"{url}/v1/model", timeout=30).json()
        assert info["source"] == "shipped" and info["limits"]["max_pixels"] == 4096 * 4096
        image, _ = generate(SyntheticSpec(128, 160), seed=3)
        r = requests.post(f"{url}/v1/segment", data=tiff_bytes(image), headers={"Content-Type": "image/tiff"})
        assert r.status_code == 200, r.text
        labels = tifffile.imread(io.BytesIO(r.content))
        expected = api.segment_image(api.load_engine(None, device="cpu"), image).labels
        assert labels.max() > 0 and np.array_equal(labels, expected)
        bad = requests.post(f"{url}/v1/segment", data=b"x", headers={"Content-Type": "image/gif"})
        assert bad.status_code == 415 and "error" in bad.json()
    finally:
        proc.send_signal(signal.SIGINT)  # serve run's Ctrl-C: shuts its application down
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        serve.shutdown()
