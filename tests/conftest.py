import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
HELA = ROOT.parent / "shared" / "data" / "hela"
SMALL_SEGMENTER = Path(__file__).parent / "data" / "small_segmenter.safetensors"


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Two cores here: keep torch from oversubscribing when Ray workers share them.
    torch.set_num_threads(int(os.environ.get("SPIRALRAY_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def hela():
    """The real HeLa frames (images, labels), or a clear skip when the data is absent."""
    if not (HELA / "images.tif").exists():
        pytest.skip(f"HeLa data not found at {HELA}")
    import tifffile

    return tifffile.imread(HELA / "images.tif"), tifffile.imread(HELA / "labels.tif")


def ellipse(shape, centre, a, b, angle=0.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u = c * (xx - centre[1]) + s * (yy - centre[0])
    v = -s * (xx - centre[1]) + c * (yy - centre[0])
    return (u / a) ** 2 + (v / b) ** 2 <= 1


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> str:
    """A model directory: the shipped scorer and rules beside a small segmenter (tests/data/README.md),
    for tests of the pipeline's mechanics, whose answer is the model's whatever the model."""
    from safetensors import safe_open

    from spiralray import modelzoo
    from spiralray.core.net import SpiralNet

    with safe_open(SMALL_SEGMENTER, "pt") as f:
        shape = {k: int(v) for k, v in f.metadata().items()}
        tensors = {k.removeprefix("segmenter."): f.get_tensor(k) for k in f.keys()}
    shipped = modelzoo.load(None)
    config = shipped.config.replace(model=shape)
    net = SpiralNet(config, shipped.scorer, SpiralNet.build(config, seed=None).segmenter)
    net.segmenter.load_state_dict(tensors)
    path = tmp_path_factory.mktemp("small_model") / "model"
    modelzoo.save(net, path, card="The shipped scorer beside a small segmenter, for tests (tests/data).")
    return str(path)


@pytest.fixture(scope="session")
def small_engine(small_model):
    from spiralray import api

    return api.load_engine(small_model)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One real local Ray cluster for the whole test session. Its workers inherit
    ``SPIRALRAY_FAULT_DIR`` (``fault_dir``): a test puts a file there to make an actor die."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["SPIRALRAY_FAULT_DIR"] = str(tmp_path_factory.mktemp("faults"))
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def fault_dir(ray_cluster):
    """The folder the session's Ray workers watch for fault files (``pipeline.actors._fault``)."""
    from pathlib import Path

    folder = Path(os.environ["SPIRALRAY_FAULT_DIR"])
    yield folder
    for f in folder.iterdir():  # a fault no actor took must not strike a later test
        f.unlink()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """A real MLflow sqlite tracking store and registry."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket; the standard AWS
    environment points at it, as it would at any endpoint. Yields the endpoint URL."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("spiralray-test")
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
