"""Does sharing spiral passes between a batch's images pay on this device? ``segment_many`` with
``share=True`` vs the images in turn, side by side (median of 3, interleaved), on three kinds of
small request: synthetic 128 x 128 (resampled x1.7 by the auto diameter: ``bench serve``'s
images), synthetic 64 x 64 and 96 x 96 crops of HeLa test frames 17-18 (native scale).

    python bench/serve_sharing.py --json bench/results/serve_sharing_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bbbc039 import write_json

from spiralray import api
from spiralray.bench.engine import machine
from spiralray.data.datasets import load_pairs
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.serve.batching import Item, segment_many


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = api.load_engine(None, device=args.device)
    hela = [im for im, _ in load_pairs(args.hela, [17, 18])]
    sets = {
        "synthetic 128 x 128 (x8)": [generate(SyntheticSpec(128, 128), seed=s)[0] for s in range(8)],
        "synthetic 64 x 64 (x8)": [generate(SyntheticSpec(64, 64), seed=s)[0] for s in range(8)],
        "HeLa 96 x 96 crops (x8)": [
            hela[i // 6][100 * (i % 6) : 100 * (i % 6) + 96, 150:246] for i in range(8)
        ],
    }
    out = {}
    for name, images in sets.items():
        seconds = {"in_turn": [], "shared": []}
        for _ in range(args.repeats):
            for mode in seconds:
                stats: dict = {}
                t0 = time.perf_counter()
                results = segment_many(engine, [Item(im) for im in images], stats, share=mode == "shared")
                seconds[mode].append(round(time.perf_counter() - t0, 3))
        med = {k: statistics.median(v) for k, v in seconds.items()}
        out[name] = {
            "seconds": seconds,
            "shared_speedup": round(med["in_turn"] / med["shared"], 3),
            "rounds": stats["requests"],
            "shared_passes": stats["passes"],
            "scale": round(results[0].scale, 3),
        }
        print(name, out[name], flush=True)
    result = {"benchmark": "serve sharing", "device": args.device, "sets": out, "machine_info": machine()}
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
