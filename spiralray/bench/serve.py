"""``spiralray bench serve``: a load test of the HTTP API on 127.0.0.1 (DESIGN section 3, serving).

One run, one Serve application on a local Ray started here:
1. ``clients`` (16) closed-loop clients POST TIFF images for ``seconds`` with batching on and
   ``seconds`` with it off (``max_batch_size`` 1), interleaved in halves so that machine noise
   hits both alike; the switch is an in-place reconfigure. Every answer is checked against the
   labels ``api.segment_image`` gives for its image: a non-200 or a different label image counts
   as a failed good request. Throughput counts the answers completed inside the windows; a
   request still open ``GRACE_S`` after its window is cut (not a failure; reported apart).
2. Overload: ``overload_clients`` (100) clients for a third of ``seconds`` (at least 10 s); a
   client refused with 503 waits as its Retry-After header says (1 s) and asks again.
   Reported: how many were refused, how fast the refusals came, and the resident memory of the
   Serve processes against the 16-client phase.
"""

from __future__ import annotations

import io
import os
import statistics
import threading
import time

import numpy as np

RETRY_PAUSE_S = 1.0  # when a 503 carries no Retry-After
GRACE_S = 30.0  # how long a request open at the end of a window may still finish


def bench_serve(args) -> dict:
    import ray
    import tifffile

    from .. import api
    from ..data.synthetic import SyntheticSpec, generate
    from ..serve.config import ServeConfig
    from ..serve.deploy import deploy
    from .engine import machine

    seconds = float(getattr(args, "seconds", None) or 60)
    clients = int(getattr(args, "clients", None) or 16)
    overload = int(getattr(args, "overload_clients", None) or 100)
    size = int(getattr(args, "size", None) or 128)
    threads = int(getattr(args, "threads", None) or os.cpu_count() or 1)
    images = [generate(SyntheticSpec(size, size), seed=s)[0] for s in range(8)]
    bodies = []
    for im in images:
        buf = io.BytesIO()
        tifffile.imwrite(buf, im)
        bodies.append(buf.getvalue())
    engine = api.load_engine(getattr(args, "model", None), device="cpu")
    expected = [api.segment_image(engine, im).labels for im in images]  # before Ray competes for CPU
    curve = pass_cost(engine)
    del engine

    started = not ray.is_initialized()
    if started:
        ray.init(
            address=getattr(args, "address", None) or "local", include_dashboard=False, log_to_driver=False
        )
    port = _free_port()
    cfg = ServeConfig(model=getattr(args, "model", None), threads=threads, num_cpus=1.0)
    url = f"http://127.0.0.1:{port}/v1/segment"
    memory = _MemorySampler()
    try:
        deploy(cfg, http_options={"host": "127.0.0.1", "port": port})
        memory.start()
        _load(url, bodies, expected, clients, 5.0, "warm-up", memory)  # kernels, caches, connections
        phases: dict[str, list] = {"batched": [], "unbatched": []}
        for _half in range(2):
            for mode, batch in (("batched", cfg.max_batch_size), ("unbatched", 1)):
                deploy(cfg.replace(max_batch_size=batch))  # user_config only: in place
                phases[mode].append(_load(url, bodies, expected, clients, seconds / 2, mode, memory))
        deploy(cfg)
        flood = _load(url, bodies, expected, overload, max(10.0, seconds / 3), "overload", memory)
    finally:
        memory.stop()
        if started:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    batched, unbatched = (_merge(phases[m]) for m in ("batched", "unbatched"))
    out = {
        "benchmark": "serve",
        "device": "cpu",
        "source": f"8 synthetic {size} x {size} uint16 images as TIFF, round-robin per client",
        "variant": "" if size == 128 else f"_{size}px",  # 128 px: serve_cpu.json
        "clients": clients,
        "seconds_per_mode": seconds,
        "batched": batched,
        "unbatched": unbatched,
        "batched_vs_unbatched_images_per_s": round(batched["images_per_s"] / unbatched["images_per_s"], 3),
        "batched_vs_unbatched_in_window": round(
            batched["in_window_images_per_s"] / max(unbatched["in_window_images_per_s"], 1e-9), 3
        ),
        "failed_good_requests": batched["failed"] + unbatched["failed"],
        "engine_ms_per_region_by_pass_size": curve,
        "overload": {
            "clients": overload,
            **_summary(flood),
            "rss_mib_16_clients_peak": memory.peak("batched"),
            "rss_mib_overload_peak": memory.peak("overload"),
        },
        "config": cfg.to_dict(),
        "machine_info": machine(),
    }
    return out


def pass_cost(engine, sizes=(1, 4, 16, 64, 256), regions: int = 256) -> dict:
    """Milliseconds per region of the spiral (``Engine.probs_of``) by regions per forward pass,
    on this device: what batching requests can gain (a round of one image often holds a few
    regions; batching fills passes)."""
    import torch

    r = engine.cfg.region
    x = torch.rand(max(sizes), engine.cfg.model.in_channels, r.height, r.width)
    out = {}
    for b in sizes:
        engine.probs_of(x[:b])  # warm
        t0 = time.perf_counter()
        for _ in range(max(1, regions // b)):
            engine.probs_of(x[:b])
        out[str(b)] = round((time.perf_counter() - t0) * 1000 / (max(1, regions // b) * b), 2)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(url, bodies, expected, clients: int, seconds: float, phase: str, memory) -> dict:
    """``clients`` closed-loop clients for ``seconds``; a request still open ``GRACE_S`` after
    the window is cut (its connection closed, so Serve cancels it) and counted apart."""
    import requests

    memory.phase = phase
    # (status, latency s, check, batch images, done before the window's end, done at s from start)
    records: list[tuple] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    stop_at = t0 + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while (left := stop_at - time.perf_counter()) > 0:
            j, i = i % len(bodies), i + 1
            t = time.perf_counter()
            try:
                r = session.post(
                    url, data=bodies[j], headers={"Content-Type": "image/tiff"}, timeout=(10, left + GRACE_S)
                )
                rec = (r.status_code, time.perf_counter() - t, _check(r, expected[j]), _batch(r))
            except requests.Timeout:
                late = time.perf_counter() > stop_at
                rec = (0 if late else -1, time.perf_counter() - t, "cut" if late else "timeout", 0)
            except requests.RequestException as exc:
                rec = (-1, time.perf_counter() - t, f"no answer: {exc.__class__.__name__}", 0)
            with lock:
                now = time.perf_counter()
                records.append((*rec, now <= stop_at, now - t0))
            if rec[0] == 503:  # a well-behaved client: wait as told
                time.sleep(float(r.headers.get("Retry-After", RETRY_PAUSE_S)))
        session.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"records": records, "window": seconds, "elapsed": time.perf_counter() - t0}


def _check(r, expected: np.ndarray) -> str:
    """ "equal" (bitwise), "equivalent" (DESIGN section 2 equality) or why the answer is wrong."""
    if r.status_code != 200:
        return f"status {r.status_code}"
    import tifffile

    from ..core.metrics import labels_equal

    got = tifffile.imread(io.BytesIO(r.content))
    if np.array_equal(got, expected):
        return "equal"
    return "equivalent" if labels_equal(got, expected)["equal"] else "different labels"


def _batch(r) -> int:
    return int(r.headers.get("X-Batch-Images", 0)) if r.status_code == 200 else 0


def _merge(runs: list[dict]) -> dict:
    records = [x for r in runs for x in r["records"]]
    span = sum(_span(r["records"]) for r in runs)
    return _summary({"records": records, "window": sum(r["window"] for r in runs), "span": span})


def _span(records: list[tuple]) -> float:
    """Seconds from a phase's start to its last correct answer (the drain included)."""
    return max((r[5] for r in records if r[2] in ("equal", "equivalent")), default=0.0)


def _summary(run: dict) -> dict:
    """images/s: every correct answer of the phase over the time from its start to its last
    answer (clients stop asking at the window's end; what they asked is finished). Answers
    completed inside the window over its length (``in_window_images_per_s``) undercount a mode
    whose work completes in bursts: the batch running at the window's end is cut, up to a
    whole batch's work (seconds at 128 x 128) of a 30 s window. Latencies: every correct answer."""
    recs = run["records"]
    span = run.get("span") or _span(recs)  # merged phases bring the sum of theirs
    good = [r for r in recs if r[2] in ("equal", "equivalent")]
    refused = [r for r in recs if r[0] == 503]
    cut = [r for r in recs if r[2] == "cut"]
    failed = [r for r in recs if r[0] != 503 and r[2] not in ("equal", "equivalent", "cut")]
    lat = sorted(r[1] for r in good)
    out = {
        "requests": len(recs),
        "ok": len(good),
        "bitwise_equal": sum(r[2] == "equal" for r in good),
        "failed": len(failed),
        "refused_503": len(refused),
        "cut_at_window_end": len(cut),
        "window_s": run["window"],
        "images_per_s": round(len(good) / span, 3) if span else 0.0,
        "in_window_images_per_s": round(sum(r[4] for r in good) / run["window"], 3),
        "latency_p50_ms": _pct(lat, 50),
        "latency_p99_ms": _pct(lat, 99),
        "mean_batch_images": round(statistics.mean(r[3] for r in good), 2) if good else None,
    }
    if failed:
        out["failures"] = sorted({r[2] for r in failed})
    if refused:
        fast = sorted(r[1] for r in refused)
        out.update(refusal_p50_ms=_pct(fast, 50), refusal_p99_ms=_pct(fast, 99))
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(1000 * float(np.percentile(values, q)), 1)


class _MemorySampler:
    """Peak resident memory (MiB) of this process's Serve processes (replicas, proxy,
    controller), per phase, sampled every 0.5 s from /proc (Linux)."""

    NAMES = ("ray::ServeReplica", "ray::ProxyActor", "ray::ServeController")

    def __init__(self):
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def peak(self, phase: str) -> float | None:
        return self.peaks.get(phase)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = sum(_rss_mib(p) for p in _descendants(os.getpid()) if _cmdline(p).startswith(self.NAMES))
            self.peaks[self.phase] = round(max(self.peaks.get(self.phase, 0.0), rss), 1)


def _descendants(root: int) -> list[int]:
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # the process ended meanwhile
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main(argv: list[str] | None = None) -> int:
    """``python -m spiralray.bench.serve``: the same benchmark before the main CLI names it."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m spiralray.bench.serve", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60, help="per mode (batched, unbatched)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--overload-clients", type=int, default=100)
    p.add_argument("--size", type=int, default=128, help="image side, px")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the segmenter")
    p.add_argument("--model", default=None)
    p.add_argument("--results", default="bench/results")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from .engine import run

    result = run("serve", args)  # as ``spiralray bench serve``: the same result file
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
