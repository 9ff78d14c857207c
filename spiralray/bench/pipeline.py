"""``spiralray bench pipeline``: the Ray pipeline against the in-process tiled path, side by side
in one run, on one >= 16 Mpx image of real frames (HeLa frames tiled; synthetic without them).

- overhead: Ray (2 segmenter actors, 1 thread each) vs in-process (2 threads), wall clock;
- scaling: 2 segmenter actors vs 1 (one thread each);
- load balance: every nucleus in one tile: busy seconds of the less-loaded actor / the other's;
- object storage: the same job reading from a local S3 endpoint (moto) vs local disk;
- labels: every run's labels equal the in-process labels (DESIGN section 2).
Each configuration runs in a fresh process (its own embedded Ray), interleaved over repeats.
``spiralray bench memory`` (bench/memory.py) measures memory at 8192^2 and 16384^2.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from .engine import machine


def big_image(data: str, side: int = 4096) -> tuple[np.ndarray, str]:
    """``side`` x ``side`` px of real frames (HeLa 0-19 tiled), or synthetic without the data."""
    path = os.path.join(data, "images.tif")
    if os.path.exists(path):
        import tifffile

        frames = tifffile.imread(path)
        rows, k = [], 0
        while sum(r.shape[0] for r in rows) < side:
            row, width = [], 0
            while width < side:
                row.append(frames[k % len(frames)])
                width += frames.shape[2]
                k += 1
            rows.append(np.concatenate(row, axis=1)[:, :side])
        return np.concatenate(rows, axis=0)[:side], f"HeLa frames tiled to {side} x {side} ({data})"
    from ..data.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(side, side, density=0.0003), seed=3)[0], f"synthetic {side} x {side}"


def one_tile_image(side: int = 4096) -> np.ndarray:
    """Every nucleus inside one 1024-px tile of an otherwise empty image (the load-balance case)."""
    from ..data.synthetic import SyntheticSpec, generate

    image, _ = generate(SyntheticSpec(1024, 1024, density=0.0012), seed=4)
    out = np.full((side, side), int(np.percentile(image, 5)), image.dtype)
    out[:1024, :1024] = image
    return out


def write_zarr(url: str, image: np.ndarray, chunks: int = 512) -> None:
    import zarr

    z = zarr.create_array(url, shape=image.shape, chunks=(chunks, chunks), dtype=image.dtype, overwrite=True)
    z[...] = image


def run_cli(args: list[str], env: dict | None = None) -> dict:
    """One `spiralray segment` in a fresh process; its JSON summary."""
    cmd = [sys.executable, "-m", "spiralray", "segment", *args, "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=7200)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _labels(out: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(f"{out}/labels/instances/0", mode="r")[...])


def bench_pipeline(args) -> dict:
    from ..core.metrics import labels_equal

    image, source = big_image(args.data)
    tmp = tempfile.mkdtemp(prefix="spiralray-bench-")
    src = os.path.join(tmp, "image.zarr")
    write_zarr(src, image)
    env = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "SPIRALRAY_LOG": os.devnull}
    base = [src, "--tile-size", "1024", "--overwrite"]
    configs = {
        "local_2_threads": ["--executor", "local", "--threads", "2"],
        "ray_2_actors": [
            "--executor",
            "ray",
            "--segment-actors",
            "2",
            "--actor-cpus",
            "0.75",
            "--threads",
            "1",
        ],
        "ray_1_actor": [
            "--executor",
            "ray",
            "--segment-actors",
            "1",
            "--actor-cpus",
            "0.75",
            "--threads",
            "1",
        ],
    }
    seconds = {k: [] for k in configs}
    labels = {}
    for r in range(args.repeats):  # interleaved, so machine noise hits every configuration alike
        for name, extra in configs.items():
            out = os.path.join(tmp, f"{name}.zarr")
            s = run_cli([*base[:1], out, *base[1:], *extra], env)
            seconds[name].append(s["seconds"])
            if r == 0:
                labels[name] = _labels(out)
    ref = labels["local_2_threads"]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "pipeline",
        "source": source,
        "shape": list(image.shape),
        "repeats": args.repeats,
        "seconds": seconds,
        "ray_vs_local_overhead": round(med["ray_2_actors"] / med["local_2_threads"], 3),
        "two_vs_one_actor_speedup": round(med["ray_1_actor"] / med["ray_2_actors"], 3),
        "labels_equal": {k: labels_equal(v, ref)["equal"] for k, v in labels.items()},
        "labels_identical": {k: bool(np.array_equal(v, ref)) for k, v in labels.items()},
    }
    result["load_balance"] = _load_balance(tmp, env)
    result["s3"] = _s3_vs_local(tmp, image, env, args.repeats)
    result["machine_info"] = machine()
    return result


def _load_balance(tmp: str, env: dict) -> dict:
    src = os.path.join(tmp, "one_tile.zarr")
    write_zarr(src, one_tile_image())
    out = os.path.join(tmp, "one_tile_out.zarr")
    s = run_cli(
        [src, out, "--tile-size", "1024", "--overwrite", "--executor", "ray", "--segment-actors", "2",
         "--actor-cpus", "0.75", "--threads", "1", "--batch-regions", "64"], env,
    )  # fmt: skip
    busy = sorted(s["busy_seconds"].values())
    return {
        "image": "4096 x 4096, every nucleus in the first 1024-px tile",
        "busy_seconds": s["busy_seconds"],
        "regions_by_actor": s.get("regions_by_actor", {}),
        "less_loaded_over_more_loaded": round(busy[0] / busy[-1], 3) if len(busy) == 2 else 0.0,
        "objects": s["objects"],
    }


def _s3_vs_local(tmp: str, image: np.ndarray, env: dict, repeats: int) -> dict:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3env = {
            **env,
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import s3fs

        s3fs.S3FileSystem(endpoint_url=s3env["AWS_ENDPOINT_URL"], key="bench", secret="bench").mkdir("bench")
        old = {k: os.environ.get(k) for k in s3env}
        os.environ.update(s3env)
        try:
            write_zarr("s3://bench/image.zarr", image)
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        local_src = os.path.join(tmp, "image.zarr")
        flags = ["--tile-size", "1024", "--overwrite", "--executor", "ray", "--threads", "1"]
        t = {"local": [], "s3": []}
        for _ in range(repeats):
            t["local"].append(run_cli([local_src, os.path.join(tmp, "l.zarr"), *flags], env)["seconds"])
            t["s3"].append(
                run_cli(["s3://bench/image.zarr", os.path.join(tmp, "s.zarr"), *flags], s3env)["seconds"]
            )
        same = bool(
            np.array_equal(_labels(os.path.join(tmp, "l.zarr")), _labels(os.path.join(tmp, "s.zarr")))
        )
        return {
            "seconds": t,
            "s3_over_local": round(statistics.median(t["s3"]) / statistics.median(t["local"]), 3),
            "labels_identical": same,
            "endpoint": "moto server on 127.0.0.1",
        }
    finally:
        server.stop()
