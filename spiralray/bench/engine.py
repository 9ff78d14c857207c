"""Benchmarks behind ``spiralray bench``: ratios measured side by side in one run, JSON out.

- ``engine``: the reference recursion vs the batched engine on the same weights and the same
  candidate regions of a real frame; interleaved repetitions, medians.
- ``compare``: time per image and accuracy of SpiralNet, U-Net-64/32 and watershed.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from .. import modelzoo
from ..core.engine import Engine, ReferenceEngine
from ..core.metrics import labels_equal
from ..core.prepare import prepare_image
from ..core.regions import crop_pad, pad_image
from ..core.segment import candidate_seeds
from ..errors import SpiralrayError


def machine() -> dict:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def segmenter_flops_per_step(seg, block: int) -> float:
    """Nominal multiply-add FLOPs (x2) of one valid-window step: every conv on the shrinking window."""
    n, r = block, seg.receptive_radius
    side = n + 2 * r
    convs = [seg.mask_conv, seg.merge] + [c for s in seg.skips for c in (s.a, s.b)]
    flops, size = 0.0, side
    for conv in convs:
        size -= conv.kernel_size[0] - 1
        flops += 2 * size * size * conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2
    return flops + 2 * n * n * seg.head.in_channels * seg.head.out_channels


def matmul_gflops(device="cpu", n: int = 2048, repeats: int = 3) -> float:
    """float32 matrix-product rate on ``device`` (n x n, n = 8192 on a GPU, which a smaller
    product does not fill): the ceiling the engine's GFLOP/s is read against. On CUDA the product
    uses TF32 if and only if cuDNN's convolutions do (PyTorch's defaults differ: convolutions on,
    matmul off), so that the ceiling has the engine's precision."""
    device = torch.device(device)
    if device.type != "cuda":
        return _matmul_rate(device, n, repeats)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        return _matmul_rate(device, 8192, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _matmul_rate(device, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    _timed(lambda: a @ b, device)  # warm-up, synchronised
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, device=None) -> float:
    t0 = time.perf_counter()
    fn()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # GPU work is asynchronous
    return time.perf_counter() - t0


def _frame(args):
    """A real HeLa test frame when the data is there, else a synthetic one (said in the JSON)."""
    path = os.path.join(args.data, "images.tif")
    if os.path.exists(path):
        import tifffile

        return tifffile.imread(path, key=17), f"HeLa frame 17 ({args.data})"
    from ..data.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(700, 1100), seed=17)[0], "synthetic 700 x 1100 (HeLa data absent)"


def bench_engine(args) -> dict:
    net = modelzoo.load(None)
    image, source = _frame(args)
    cfg = net.config
    # Each engine its own copy: an engine moves its network to its device.
    fast, ref = Engine(net, device=args.device), ReferenceEngine(copy.deepcopy(net), device="cpu")
    x = prepare_image(image, cfg)
    pad = crop_pad(cfg.region)
    padded = pad_image(x, pad)
    scores = fast.score_map(padded, pad, x.shape[1:])
    seeds, _ = candidate_seeds(scores, x.shape[1:], cfg)
    if len(seeds) == 0:
        raise SpiralrayError("no candidate regions in the benchmark frame")
    sample = seeds[np.linspace(0, len(seeds) - 1, min(args.regions, len(seeds))).astype(int)]
    steps = len(fast.geom.blocks)
    pt = torch.from_numpy(padded)
    pt_dev = pt.to(fast.device)
    _timed(lambda: fast.region_probs(pt_dev, pad, seeds), fast.device)  # warm-up: kernels, caches
    ref_rates, fast_rates = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t = _timed(lambda: ref.region_probs(pt, pad, sample))
        ref_rates.append(len(sample) * steps / t)
        t = _timed(lambda: fast.region_probs(pt_dev, pad, seeds), fast.device)
        fast_rates.append(len(seeds) * steps / t)
    ref_masks = ref.region_masks(pt, pad, sample)
    fast_masks = fast.region_masks(pt_dev, pad, sample)
    differing, equal = 0, True
    for a, b in zip(fast_masks, ref_masks, strict=True):
        e = labels_equal(a.astype(np.int32), b.astype(np.int32))
        differing += e["differing_pixels"]
        equal &= e["equal"]
    e_rate, r_rate = statistics.median(fast_rates), statistics.median(ref_rates)
    options = _engine_options(net, image, args)
    flops = segmenter_flops_per_step(net.segmenter, cfg.spiral.block)
    return {
        "benchmark": "engine",
        "source": source,
        "device": str(fast.device),
        "regions_engine": int(len(seeds)),
        "regions_reference": int(len(sample)),
        "steps_per_region": steps,
        "batch_size": fast.batch_size,
        "repeats": args.repeats,
        "reference_steps_per_s": round(r_rate, 1),
        "engine_steps_per_s": round(e_rate, 1),
        "speedup": round(e_rate / r_rate, 2),
        "same_answer": bool(equal),  # DESIGN section 2's tolerance; "identical": bitwise
        "identical": differing == 0,  # the masks are boolean: no pixel differs
        "differing_pixels": int(differing),
        "engine_gflops": round(flops * e_rate / 1e9, 2),
        "matmul_gflops": round(matmul_gflops(fast.device), 1),
        "matmul_on_device": True,
        "matmul_precision": "tf32"
        if fast.device.type == "cuda" and torch.backends.cudnn.allow_tf32
        else "float32",
        "flops_per_step": flops,
        "threads": torch.get_num_threads(),
        "options": options,
        "machine_info": machine(),
    }


def _engine_options(net, image, args) -> dict:
    """Each optional engine path on the whole frame, beside the exact engine: speed ratio and
    how the labels change (DESIGN section 2 equality, and object F1 against the exact labels)."""

    from ..core.metrics import evaluate

    variants = {"exact": {}, "early_stop": {"early_stop": True}, "channels_first": {"channels_last": False}}
    if str(args.device) != "cpu" and torch.cuda.is_available():
        variants.update(bfloat16={"dtype": "bfloat16"}, float16={"dtype": "float16"})
    engines = {name: Engine(net, device=args.device, **kw) for name, kw in variants.items()}
    for eng in engines.values():
        eng.segment(image)  # warm-up: a new dtype or layout selects its kernels on first use
    times = {k: [] for k in variants}
    labels = {}
    for _ in range(max(1, args.repeats - 1)):
        for name, eng in engines.items():  # interleaved
            t0 = time.perf_counter()
            labels[name] = eng.segment(image).labels
            times[name].append(time.perf_counter() - t0)
    exact_t = statistics.median(times["exact"])
    out = {"exact_seconds_per_frame": round(exact_t, 3)}
    for name in variants:
        if name == "exact":
            continue
        eq = labels_equal(labels[name], labels["exact"])
        out[name] = {
            "speedup_vs_exact": round(exact_t / statistics.median(times[name]), 3),
            "same_answer": eq["equal"],  # DESIGN section 2's tolerance; "identical": bitwise
            "identical": bool(np.array_equal(labels[name], labels["exact"])),
            "differing_pixels": eq["differing_pixels"],
            "object_f1_50_vs_exact": round(evaluate(labels[name], labels["exact"])["object_f1_50"], 4),
        }
    return out


def bench_train(args) -> dict:
    """Training throughput of 1 vs 2 Ray Train workers on the same data and sample counts."""
    import tempfile

    from ..train.ray_trainer import TrainJob, train

    data = args.data if os.path.exists(os.path.join(args.data, "images.tif")) else None
    if data is None:
        raise SpiralrayError(f"bench train needs the HeLa data at {args.data}")
    out = {"benchmark": "train", "data": f"{data} frames 0-3 (val 14)", "machine_info": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        for workers in (1, 2):
            job = TrainJob(
                data=data,
                frames=[0, 1, 2, 3],
                val_frames=[14],
                epochs=3,
                workers=workers,
                samples_per_epoch=1024,
                storage=os.path.join(tmp, "ray"),
                name=f"w{workers}",
            )
            res = train(job, log=lambda m: None)
            for stage, r in res["stages"].items():
                rates = [h["samples_per_s"] for h in r["history"][1:]]  # the first epoch warms up
                out[f"{stage}_samples_per_s_{workers}w"] = round(statistics.median(rates), 1)
    for stage in ("scorer", "segmenter"):
        out[f"{stage}_speedup_2w"] = round(
            out[f"{stage}_samples_per_s_2w"] / out[f"{stage}_samples_per_s_1w"], 2
        )
    return out


def run(which: str, args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if which == "engine":
        result = bench_engine(args)
    elif which == "train":
        result = bench_train(args)
    else:  # the others live in their own modules: import only the one asked for
        import importlib

        module = importlib.import_module(f".{which}", __package__)
        result = getattr(module, f"bench_{which}")(args)
    os.makedirs(args.results, exist_ok=True)
    tag = "gpu" if result.get("device", "cpu").startswith("cuda") else "cpu"
    # a variant of a benchmark (e.g. serve at another image size) keeps its own file
    with open(os.path.join(args.results, f"{which}_{tag}{result.get('variant', '')}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
