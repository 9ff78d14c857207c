"""Pre-train the U-Net baselines into the ``bench compare`` cache (bench/weights/unet{64,32}).

python bench/train_baselines.py --minutes64 25 --minutes32 15 --threads 1
python bench/train_baselines.py --more 32 --minutes 60   # continue a cached one (cosine lr)
"""

import argparse
import json
import os
import time
import types

import torch

from spiralray import storage
from spiralray.baselines import fit_unet
from spiralray.bench_compare import _unet, baseline_sampler
from spiralray.models import UNet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/hela")
    ap.add_argument("--weights", default="bench/weights")
    ap.add_argument("--minutes64", type=float, default=25)
    ap.add_argument("--minutes32", type=float, default=15)
    ap.add_argument("--more", type=int, default=0, help="continue the cached U-Net of this base width")
    ap.add_argument("--minutes", type=float, default=60, help="with --more: extra minutes")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def log(name, it, loss):
        if it % 50 == 0:
            print(f"{name} it {it} loss {loss:.4f}", flush=True)

    if args.more:
        path = os.path.join(args.weights, f"unet{args.more}")
        tensors, cfg = storage.load_model_dir(path)
        net = UNet(base=args.more)
        net.load_state_dict(tensors)
        t0 = time.time()
        fit_unet(
            net, baseline_sampler(args.data, seed=args.more + 1), args.minutes * 60, lr_final=3e-5, log=log
        )
        cfg["trained"] += (
            f"; then {args.minutes:g} min more on {args.threads} threads, cosine lr 1e-3 -> 3e-5"
            f" ({time.time() - t0:.0f} s)"
        )
        storage.save_model_dir(path, {k: v.contiguous() for k, v in net.state_dict().items()}, cfg)
        print(json.dumps(cfg))
        return
    for base, minutes in ((64, args.minutes64), (32, args.minutes32)):
        ns = types.SimpleNamespace(data=args.data, weights=args.weights, baseline_minutes=minutes)
        print(base, _unet(base, ns, log)[1], flush=True)


if __name__ == "__main__":
    main()
