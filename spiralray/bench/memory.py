"""``spiralray bench memory`` (outside CI: tens of minutes): memory is bounded by tile size and
concurrency, not by the image. Segments an 8192^2 zarr image of real frames (HeLa tiled) and a
16384^2 one (a band of real frames in an otherwise empty image: sparse) with the in-process and
the Ray executors, each in a fresh process, sampling every 0.5 s the summed proportional set
size (PSS) of the whole process tree (the driver, and for Ray its raylet, GCS and actors) and
the shared-memory object store (/dev/shm). Reports peaks, their ratio 16384^2 / 8192^2, and the
time series (flat as objects accumulate: per-object state does not grow with the image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from .engine import machine
from .pipeline import big_image


def write_big(url: str, side: int, frames: np.ndarray, band: int | None) -> None:
    """A ``side``^2 zarr written band by band (never whole in memory): real frames tiled over
    all of it, or only over the first ``band`` rows (the rest the frames' background level)."""
    import zarr

    z = zarr.create_array(url, shape=(side, side), chunks=(1024, 1024), dtype=frames.dtype, overwrite=True)
    bg = int(np.percentile(frames, 5))
    fh, fw = frames.shape
    for y in range(0, side, 1024):
        rows = np.full((min(1024, side - y), side), bg, frames.dtype)
        if band is None or y < band:
            yy = (np.arange(y, y + rows.shape[0]) % fh)[:, None]
            xx = (np.arange(side) % fw)[None, :]
            rows[...] = frames[yy, xx]
        z[y : y + rows.shape[0], :] = rows


def _tree_pss(pid: int) -> int:
    import psutil

    total = 0
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def _shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def measure(args: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "spiralray", "segment", *args, "--json"]
    shm0 = _shm_used()
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    series: list[tuple[float, int, int]] = []
    t0 = time.perf_counter()

    def sample():
        while p.poll() is None:
            series.append((round(time.perf_counter() - t0, 1), _tree_pss(p.pid), max(0, _shm_used() - shm0)))
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    th.join()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    pss = [s[1] for s in series]
    half = len(pss) // 2
    return {
        "seconds": summary["seconds"],
        "objects": summary["objects"],
        "peak_pss_mib": round(max(pss) / 2**20, 1),
        "peak_shm_mib": round(max(s[2] for s in series) / 2**20, 1),
        # flat over the run: the second half's peak against the first half's
        "second_half_over_first_half": round(max(pss[half:]) / max(max(pss[:half]), 1), 3) if half else None,
        "series_s_pss_mib": [(t, round(m / 2**20)) for t, m, _ in series[:: max(1, len(series) // 60)]],
    }


def bench_memory(args) -> dict:
    frames, source = big_image(args.data, side=2048)
    tmp = tempfile.mkdtemp(prefix="spiralray-mem-")
    images = {"8192": (8192, None), "16384": (16384, 2048)}
    env = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "SPIRALRAY_LOG": os.devnull}
    result = {"benchmark": "memory", "source": source, "runs": {}}
    for name, (side, band) in images.items():
        src = os.path.join(tmp, f"{name}.zarr")
        write_big(src, side, frames, band)
        for executor in ("local", "ray"):
            out = os.path.join(tmp, f"{name}_{executor}_out.zarr")
            flags = [
                "--tile-size",
                "1024",
                "--overwrite",
                "--executor",
                executor,
                "--threads",
                "2" if executor == "local" else "1",
            ]
            result["runs"][f"{name}_{executor}"] = measure([src, out, *flags], env)
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
    for executor in ("local", "ray"):
        a, b = result["runs"][f"8192_{executor}"], result["runs"][f"16384_{executor}"]
        result[f"{executor}_peak_16384_over_8192"] = round(b["peak_pss_mib"] / a["peak_pss_mib"], 3)
    result["images"] = {
        "8192": "HeLa frames tiled over all of it",
        "16384": "HeLa frames over the first 2048 rows",
    }
    result["machine_info"] = machine()
    return result
