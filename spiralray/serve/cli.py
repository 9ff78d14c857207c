"""``spiralray serve``: the Serve application on an embedded local Ray (or a cluster given by
``--address`` / ``RAY_ADDRESS``), on 127.0.0.1 unless told otherwise, until Ctrl-C.

SIGHUP reloads the model (``generation`` + 1: a ``models:/NAME@ALIAS`` is resolved again) by an
in-place reconfigure, without downtime; SIGTERM stops it as Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from ..errors import SpiralrayError
from .config import ServeConfig

FLAGS = ("model", "device", "num_gpus", "replicas", "max_batch_size", "max_queued", "max_bytes", "max_pixels")


def add_parser(subparsers) -> None:
    s = subparsers.add_parser("serve", help="serve segmentation over HTTP with Ray Serve (until Ctrl-C)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1 only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model", default=None, help="model directory or models:/NAME@ALIAS (default: shipped)")
    s.add_argument(
        "--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else embedded)"
    )
    s.add_argument("--device", default="auto", help="segmenter device (auto: CUDA when given a GPU)")
    s.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per segmenter replica")
    s.add_argument("--replicas", type=int, default=1, help="segmenter replicas")
    s.add_argument("--max-batch-size", type=int, default=8, help="images segmented together (1: unbatched)")
    s.add_argument("--max-queued", type=int, default=32, help="requests queued before 503 (per ingress)")
    s.add_argument("--max-bytes", type=int, default=64 << 20, help="largest request body")
    s.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest image, in array elements")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other ServeConfig key (spiralray/serve/config.py), e.g. --set num_cpus=1",
    )
    s.set_defaults(func=cmd_serve)


def config_from_args(args) -> ServeConfig:
    values = {k: getattr(args, k) for k in FLAGS}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpiralrayError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip().replace("-", "_")] = value.strip()
    return ServeConfig.from_dict(values)


def cmd_serve(args, wait: Callable[[Callable[..., dict]], None] | None = None) -> int:
    """Serve until interrupted. ``wait(reload)`` blocks while serving (default: until Ctrl-C,
    reloading on SIGHUP); ``reload(**changes)`` redeploys with the next generation (and any
    ``user_config`` changes, e.g. ``model=``) and returns the model then served."""
    import ray
    from ray import serve

    from .app import load_model
    from .deploy import APP_NAME, deploy, wait_model

    cfg = config_from_args(args)
    if (cfg.model or "").startswith("models:/") and not cfg.tracking_uri:
        from ..train import registry

        # The replicas resolve the alias in the registry this process sees (their working
        # directory and environment may differ).
        cfg = cfg.replace(tracking_uri=registry.tracking_uri())
    info = load_model(cfg)[1]  # a wrong --model fails here in one line, before Ray starts
    connected = not ray.is_initialized()  # this call connects (and disconnects) the driver
    address = args.address or os.environ.get("RAY_ADDRESS") or "local"  # never a stray local cluster
    if connected:
        ray.init(address=address, log_to_driver=False)
    embedded = connected and address == "local"  # Serve here is ours alone
    from ..pipeline.ray_exec import check_placeable

    try:  # a replica no node can hold would leave the deploy waiting (5 minutes, then an error)
        check_placeable(
            {"CPU": cfg.num_cpus, "GPU": cfg.num_gpus},
            embedded,
            "segmenter replica",
            {"CPU": "--set num_cpus=N", "GPU": "--num-gpus"},
            {"CPU": cfg.ingress_num_cpus} if embedded else None,
            "HTTP ingress",
            waits="the deploy waits up to 5 minutes for the cluster to grow",
        )
    except BaseException:
        if connected:
            ray.shutdown()
        raise
    state = {"cfg": cfg}

    def reload(**changes) -> dict:
        state["cfg"] = state["cfg"].replace(generation=state["cfg"].generation + 1, **changes)
        deploy(state["cfg"])
        return wait_model(APP_NAME, state["cfg"], time.time() + 300)

    hangup = threading.Event()
    if wait is None and threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: hangup.set())  # before deploying: an early HUP waits
        signal.signal(signal.SIGTERM, _interrupt)  # a container's stop: shut down as on Ctrl-C
    try:
        deploy(cfg, http_options={"host": args.host, "port": args.port})
        version = f" version {info['version']}" if info.get("version") else ""
        print(
            f"serving {info['name']}{version} at http://{args.host}:{args.port}/v1/segment "
            f"(docs: /docs; Ctrl-C stops, SIGHUP reloads the model)",
            flush=True,
        )
        if wait is None:
            _until_interrupted(reload, hangup)
        else:
            wait(reload)
    except KeyboardInterrupt:
        pass
    finally:
        if embedded:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)  # a shared cluster: leave the rest of Serve running
        if connected:
            ray.shutdown()
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt


def _until_interrupted(reload: Callable[[], dict], hangup: threading.Event) -> None:
    while True:
        if hangup.wait(1.0):
            hangup.clear()
            try:
                info = reload()
            except SpiralrayError as exc:  # the old model keeps serving
                print(f"spiralray: reload failed: {exc}", flush=True)
                continue
            print(f"reloaded: {info['name']} version {info.get('version')}", flush=True)
