"""cluster/: the AWS autoscaler config validates against the schema that ships with Ray (and
Ray's own validator, offline); the KubeRay manifests parse and hold the right structure (their
CRD schemas are not available offline, so fields are checked, not a schema); images, versions,
resources, the runtime env and the job's arguments agree across files and with the code."""

import json
import re
import shlex
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
MLFLOW = "http://mlflow.mlflow.svc:5000"
GENERATED = [
    ".venv/lib/site.py",
    "demo_out/labels.zarr/zarr.json",
    "mlruns/0/meta.yaml",
    "mlartifacts/1/model.pt",
    "mlflow.db",
    "bench/tracking.db",
]
CODE = ["spiralray/cli.py", "jobs/segment.py", "cluster/runtime_env.yaml", "README.md"]


def _load(name):
    return yaml.safe_load((CLUSTER / name).read_text())


def _torch_pin():
    return re.search(r"^TORCH_SPEC \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


def test_every_cluster_file_parses():
    for path in CLUSTER.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path.name


def test_autoscaler_config_validates_against_rays_schema_and_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("aws-autoscaler.yaml")
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    # what `ray up` does before it needs cloud credentials: AWS defaults merged, then checked
    validate_config(prepare_config(config))

    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0  # no work on the head
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    assert gpu and all(t["resources"]["segmenter"] == t["resources"]["GPU"] for t in gpu)
    assert all(t["node_config"]["InstanceType"].startswith(("g5.", "g6.")) for t in gpu)
    assert any(not t["resources"].get("GPU") and t["resources"].get("CPU") for t in types.values())
    setup = " ".join(config["setup_commands"])
    # torch pinned as the Makefile pins it, before anything that would pull another build
    assert setup.index(f'"{_torch_pin()}"') < setup.index("ray[") < setup.index("pip install -q ~/spiralray")
    assert f"=={ray.__version__}" in setup  # the cluster runs the Ray of this environment
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token ray start") == 2
    assert {".venv", "demo_out", "mlruns", "*.db"} <= set(config["rsync_exclude"])


def _pods(spec):
    """(group name, rayStartParams, container) of a RayCluster spec's head and worker groups."""
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    return [(n, g["rayStartParams"], c) for n, g in groups for c in g["template"]["spec"]["containers"]]


def _check_cluster_spec(spec, image):
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = 0
    for name, params, c in _pods(spec):
        assert c["image"] == image
        assert {"name": "MLFLOW_TRACKING_URI", "value": MLFLOW} in c["env"]
        limits = c["resources"]["limits"]
        assert limits == c["resources"]["requests"], name
        gpus = int(limits.get("nvidia.com/gpu", 0))
        custom = yaml.safe_load(yaml.safe_load(params["resources"])) if "resources" in params else {}
        assert custom.get("segmenter", 0) == gpus, name  # one segmenter slot per GPU
        gpu_groups += gpus > 0
    assert gpu_groups == 1 and any(not p[2]["resources"]["limits"].get("nvidia.com/gpu") for p in _pods(spec))


def test_raycluster_manifest():
    doc = _load("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    _check_cluster_spec(doc["spec"], "spiralray:0.1.0")


def test_rayjob_runs_jobs_segment_with_arguments_the_cli_accepts():
    from spiralray.cli import build_parser

    doc = _load("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/segment.py"] and (ROOT / argv[1]).exists()
    args = build_parser().parse_args(["segment", *argv[2:]])  # what jobs/segment.py hands main()
    assert args.input.startswith("s3://") and args.output.startswith("s3://") and args.actor_gpus == 1
    spec, shape = doc["spec"]["rayClusterSpec"], _load("raycluster.yaml")["spec"]
    _check_cluster_spec(spec, "spiralray:0.1.0")

    def same(groups):  # the job's cluster has the RayCluster's shape; only start sizes differ
        return [{k: v for k, v in g.items() if k != "replicas"} for g in groups]

    assert spec["headGroupSpec"] == shape["headGroupSpec"]
    assert same(spec["workerGroupSpecs"]) == same(shape["workerGroupSpecs"])
    # the job's runtime env is cluster/runtime_env.yaml with the image's repository as working dir
    env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert env == {**_load("runtime_env.yaml"), "working_dir": "/app"}


def test_images_and_versions_agree_with_the_serve_manifests():
    service = _load("rayservice.yaml")["spec"]["rayClusterConfig"]
    images = {c["image"] for _, _, c in _pods(service)}
    assert images == {"spiralray:0.1.0"} and service["rayVersion"] == ray.__version__
    assert {c["image"] for _, _, c in _pods(_load("raycluster.yaml")["spec"])} == images


def test_runtime_env_passes_mlflow_and_keeps_generated_outputs_out_of_the_upload(tmp_path):
    env = _load("runtime_env.yaml")
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == MLFLOW
    assert all(isinstance(v, str) for v in env["env_vars"].values())  # Ray requires strings
    uploaded = _upload(tmp_path, env["excludes"], gitignore=False)
    assert uploaded == sorted(CODE)


def test_gitignore_alone_keeps_generated_outputs_out_of_working_dir_uploads(tmp_path):
    # `ray job submit --working-dir .` without a runtime env: only .gitignore filters the upload
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    assert _upload(tmp_path, [], gitignore=True) == sorted(CODE + [".gitignore"])


def _upload(root, excludes, gitignore):
    """The files Ray's working_dir packaging would upload from ``root`` (Ray's own traversal)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    for rel in GENERATED + CODE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    found = []
    _dir_travel(root, [_get_excludes(root, excludes)], found.append, include_gitignore=gitignore)
    return sorted(str(p.relative_to(root)) for p in found if p.is_file())
