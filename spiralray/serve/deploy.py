"""Putting the application on a Ray cluster from its config, as ``serve deploy`` does.

Declarative (a Serve config, not ``serve.run``): Serve then treats a redeploy that changes only
the segmenter's ``user_config`` (``model``, ``generation``, batching) as an in-place
reconfigure of the running replicas, with no restart and no downtime; ``serve.run`` gives every
deploy a new code version, which restarts them.
"""

import time

from ray import serve

from ..errors import SpiralrayError
from .codecs import first_line
from .config import ServeConfig

APP_NAME = "spiralray"


def app_config(cfg: ServeConfig, name: str = APP_NAME, route_prefix: str = "/") -> dict:
    """The application's entry of a Serve config file (as in ``cluster/serve.yaml``): restart-level
    settings as builder ``args``, the model and batching as the Segmenter's ``user_config``."""
    user = cfg.user_config()
    args = {k: v for k, v in cfg.to_dict().items() if k not in user and v != getattr(ServeConfig, k, v)}
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "spiralray.serve.app:build_app",
        "args": args,
        "deployments": [{"name": "Segmenter", "user_config": user}],
    }


def deploy(cfg: ServeConfig, name: str = APP_NAME, http_options: dict | None = None, timeout_s: float = 300):
    """Deploy (or update) the application on the connected Ray cluster from its config, as
    ``serve deploy``/``serve run cluster/serve.yaml`` do, and wait until it runs.

    Declarative, so that a redeploy that changes only ``user_config`` fields (``model``,
    ``generation``, batching) is Serve's in-place reconfigure: same replicas, no downtime. Other
    applications deployed from config on the cluster are kept as they are."""
    import ray
    from ray.serve._private import api as serve_private  # what `serve run CONFIG` calls
    from ray.serve.schema import ServeDeploySchema

    client = serve_private.serve_start(http_options=http_options or {})
    bound = client.http_config
    for key, value in (http_options or {}).items():  # Serve keeps the options it started with
        if getattr(bound, key) != value:
            raise SpiralrayError(
                f"Serve already runs on this cluster with {key}={getattr(bound, key)} (asked for {value}): "
                f"use that, or shut Serve down first (serve shutdown)"
            )
    details = ray.get(client._controller.get_serve_instance_details.remote())
    others = [
        a["deployed_app_config"]
        for n, a in (details.get("applications") or {}).items()
        if n != name and a.get("deployed_app_config")
    ]
    schema = ServeDeploySchema.model_validate({"applications": [*others, app_config(cfg, name)]})
    since = time.time()
    try:
        client.deploy_apps(schema)
    except Exception as exc:  # e.g. the cluster runs applications started with serve.run
        raise SpiralrayError(f"cannot deploy {name!r}: {first_line(exc)}") from exc
    wait_running(name, since, timeout_s)
    wait_model(name, cfg, since + timeout_s)


def wait_model(name: str, cfg: ServeConfig, deadline: float) -> dict:
    """Block until the segmenter has applied ``cfg``'s user_config (model, generation, batching:
    a reconfigure can finish after the application reads RUNNING); a model that failed to load
    raises. Returns the model served."""
    handle = serve.get_deployment_handle("Segmenter", name)
    while True:
        info = handle.model.remote().result()
        failed = info.get("reload_error") or {}
        if (failed.get("model"), failed.get("generation")) == (cfg.model, cfg.generation):
            raise SpiralrayError(
                f"cannot load {cfg.model}: {failed['error']} (still serving {info['source']}"
                + (f", version {info['version']})" if info.get("version") else ")")
            )
        if info.get("applied") == cfg.user_config():
            return info
        if time.time() > deadline:
            raise SpiralrayError(f"the segmenter did not load {cfg.model or 'the shipped model'} in time")
        time.sleep(0.2)


def wait_running(name: str, since: float = 0.0, timeout_s: float = 300) -> None:
    """Block until application ``name``, deployed at ``since`` or later, runs; a failed deploy
    raises with Serve's message."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(name)
        if app is not None and app.last_deployed_time_s >= since - 1:
            if app.status == "RUNNING":
                return
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise SpiralrayError(f"application {name!r} failed to deploy: {app.message}")
        time.sleep(0.5)
    raise SpiralrayError(f"application {name!r} not running after {timeout_s:.0f} s")
