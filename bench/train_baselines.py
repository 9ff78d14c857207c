"""Pre-train the U-Net baselines into the ``bench compare`` cache (bench/weights/unet{B}).

python bench/train_baselines.py --base 32 --minutes 15 --threads 1
python bench/train_baselines.py --base 32 --minutes 60 --more        # continue the cached one
python bench/train_baselines.py --base 32 --minutes 5.5 --device cuda   # the GPU equal-budget run
"""

import argparse
import json
import os

import torch

from spiralray.bench.compare import SCALES, SYNTHETIC, save_unet, train_unet
from spiralray.core.engine import resolve_device
from spiralray.core.models import UNet
from spiralray.io import storage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/hela")
    ap.add_argument("--weights", default="bench/weights")
    ap.add_argument("--base", type=int, default=32, help="U-Net base width (32 or 64)")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--more", action="store_true", help="continue the cached U-Net of this width")
    ap.add_argument("--synthetic", type=int, default=SYNTHETIC)
    ap.add_argument("--scales", default=",".join(map(str, SCALES)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = os.path.join(args.weights, f"unet{args.base}")
    net, cfg = UNet(base=args.base), {"base": args.base}
    if args.more:
        tensors, cfg = storage.load_model_dir(path)
        net.load_state_dict(tensors)

    def log(name, it, loss):
        if it % 200 == 0:
            print(f"unet{args.base} it {it} loss {loss:.4f}", flush=True)

    scales = tuple(float(v) for v in args.scales.split(","))
    note = train_unet(
        net,
        args.data,
        args.minutes,
        resolve_device(args.device),
        seed=args.base + int(args.more),
        log=log,
        synthetic=args.synthetic,
        scales=scales,
    )
    cfg["trained"] = f"{cfg['trained']}; then {note}" if args.more else f"trained here: {note}"
    save_unet(path, net, cfg)
    print(json.dumps(cfg))


if __name__ == "__main__":
    main()
