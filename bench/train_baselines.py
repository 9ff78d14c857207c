"""Pre-train the U-Net baselines into the ``bench compare`` cache (bench/weights/unet{64,32}).

python bench/train_baselines.py --minutes64 25 --minutes32 15 --threads 1
"""

import argparse
import types

import torch

from spiralray.bench_compare import _unet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/hela")
    ap.add_argument("--weights", default="bench/weights")
    ap.add_argument("--minutes64", type=float, default=25)
    ap.add_argument("--minutes32", type=float, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def log(name, it, loss):
        if it % 50 == 0:
            print(f"{name} it {it} loss {loss:.4f}", flush=True)

    for base, minutes in ((64, args.minutes64), (32, args.minutes32)):
        ns = types.SimpleNamespace(data=args.data, weights=args.weights, baseline_minutes=minutes)
        print(base, _unet(base, ns, log)[1], flush=True)


if __name__ == "__main__":
    main()
