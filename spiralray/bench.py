"""Benchmarks behind ``spiralray bench``: ratios measured side by side in one run, JSON out.

- ``engine``: the reference recursion vs the batched engine on the same weights and the same
  candidate regions of a real frame; interleaved repetitions, medians.
- ``compare``: time per image and accuracy of SpiralNet, U-Net-64/32 and watershed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from . import modelzoo
from .engine import Engine, ReferenceEngine, prepare_image
from .errors import SpiralrayError
from .metrics import labels_equal
from .regions import crop_pad, pad_image
from .segment import candidate_seeds


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


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _frame(args):
    """A real HeLa test frame when the data is there, else a synthetic one (said in the JSON)."""
    path = os.path.join(args.data, "images.tif")
    if os.path.exists(path):
        import tifffile

        return tifffile.imread(path, key=17), f"HeLa frame 17 ({args.data})"
    from .data.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(700, 1100), seed=17)[0], "synthetic 700 x 1100 (HeLa data absent)"


def bench_engine(args) -> dict:
    net = modelzoo.load(None)
    image, source = _frame(args)
    cfg = net.config
    fast, ref = Engine(net, device=args.device), ReferenceEngine(net, device="cpu")
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
    ref_rates, fast_rates = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t = _timed(lambda: ref.region_probs(pt, pad, sample))
        ref_rates.append(len(sample) * steps / t)
        t = _timed(lambda: fast.region_probs(pt.to(fast.device), pad, seeds))
        fast_rates.append(len(seeds) * steps / t)
    ref_masks = ref.region_masks(pt, pad, sample)
    fast_masks = fast.region_masks(pt.to(fast.device), pad, sample)
    differing, equal = 0, True
    for a, b in zip(fast_masks, ref_masks, strict=True):
        e = labels_equal(a.astype(np.int32), b.astype(np.int32))
        differing += e["differing_pixels"]
        equal &= e["equal"]
    e_rate, r_rate = statistics.median(fast_rates), statistics.median(ref_rates)
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
        "identical": bool(equal),
        "differing_pixels": int(differing),
        "engine_gflops": round(flops * e_rate / 1e9, 2),
        "matmul_gflops": round(matmul_gflops(), 1),
        "flops_per_step": flops,
        "threads": torch.get_num_threads(),
        **{"machine_info": machine()},
    }


def run(which: str, args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if which == "engine":
        result = bench_engine(args)
    else:
        from .bench_compare import bench_compare

        result = bench_compare(args)
    os.makedirs(args.results, exist_ok=True)
    tag = "gpu" if result.get("device", "cpu").startswith("cuda") else "cpu"
    with open(os.path.join(args.results, f"{which}_{tag}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
