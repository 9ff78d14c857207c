"""Pre-train the U-Net baselines into the ``bench compare`` cache (bench/weights/unet{B}), or
into ``--out`` for an equal-budget comparison with a SpiralNet trained by train_default.py.

python bench/train_baselines.py --base 32 --minutes 15 --threads 1
python bench/train_baselines.py --base 32 --minutes 60 --more        # continue the cached one
python bench/train_baselines.py --base 32 --minutes 5.5 --device cuda   # the GPU equal-budget run
python bench/train_baselines.py --base 32 --out /tmp/eb/unet32 --minutes 30 --clock cpu --threads 1 \\
    --data ../shared/data/bbbc039/train --data ../shared/data/hela:0-13 \\
    --synthetic 64 --synthetic-preset diverse         # v7's data (docs/training.md, equal budget)
python bench/train_baselines.py --base 32 --minutes 40 --threads 2 --calibrate --shifts all \
    --data ../shared/data/bbbc039/train --data ../shared/data/hela:0-13 \
    --synthetic 64 --synthetic-preset diverse         # bench compare's U-Net (README, docs/benchmarks.md)

--calibrate then chooses the U-Net's post-processing (minimum seed area, growth) on the
validation sets and objective calibrate.py uses (bench/bbbc039.py's choose_unet_postprocessing,
HeLa conformed, ``--shifts`` as calibrate.py's: ``--shifts all`` for the shipped model's) and
stores it with the weights; ``bench compare`` and ``bench/bbbc039.py --unet`` apply it.
"""

import argparse
import json
import os
import time

import torch
from calibrate import add_shifts_argument, parse_shifts

from spiralray.bench.compare import SCALES, SYNTHETIC, save_unet, train_unet
from spiralray.core.engine import resolve_device
from spiralray.core.models import UNet
from spiralray.data.datasets import SYNTHETIC_PRESETS
from spiralray.io import storage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hela", default="../shared/data/hela", help="HeLa frames 0-13 when no --data")
    ap.add_argument("--data", action="append", default=None, help="PATH[:FRAMES], repeatable")
    ap.add_argument("--weights", default="bench/weights")
    ap.add_argument("--out", default=None, help="model directory (default: WEIGHTS/unet{BASE})")
    ap.add_argument("--base", type=int, default=32, help="U-Net base width (32 or 64)")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="as train_default.py's")
    ap.add_argument("--more", action="store_true", help="continue the cached U-Net of this width")
    ap.add_argument("--synthetic", type=int, default=SYNTHETIC)
    ap.add_argument("--synthetic-preset", default="plain", choices=SYNTHETIC_PRESETS)
    ap.add_argument("--scales", default=",".join(map(str, SCALES)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--calibrate", action="store_true", help="choose and store the post-processing")
    ap.add_argument("--calibrate-only", action="store_true", help="calibrate the saved U-Net; no training")
    add_shifts_argument(ap)  # --calibrate's, as calibrate.py's
    args = ap.parse_args()
    shifts = parse_shifts(args.shifts, "train_baselines.py")
    torch.set_num_threads(args.threads)
    path = args.out or os.path.join(args.weights, f"unet{args.base}")
    if args.calibrate_only:
        calibrate(path, args.hela, shifts)
        return
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
        args.hela,
        args.minutes,
        resolve_device(args.device),
        seed=args.base + int(args.more),
        log=log,
        clock=time.process_time if args.clock == "cpu" else time.time,
        synthetic=args.synthetic,
        scales=scales,
        sources=args.data,
        preset=args.synthetic_preset,
    )
    cfg["trained"] = f"{cfg['trained']}; then {note}" if args.more else f"trained here: {note}"
    save_unet(path, net, cfg)
    print(json.dumps(cfg))
    if args.calibrate:
        calibrate(path, args.hela, shifts)


def calibrate(path: str, hela: str, shifts=()) -> None:
    """Store the post-processing chosen on validation in the U-Net directory at ``path``."""
    from bbbc039 import choose_unet_postprocessing

    from spiralray.bench.compare import load_unet

    net, cfg = load_unet(path)
    best = choose_unet_postprocessing(net, hela, fields=20, conform_hela=True, shifts=shifts)
    cfg["postprocessing"] = {k: best[k] for k in ("min_area", "grow", "objective")}
    on = f", HeLa 14-16 also under {'; '.join(shifts)}" if shifts else ""
    cfg["postprocessing"]["chosen_on"] = f"calibrate.py's validation objective, HeLa conformed{on}"
    save_unet(path, net, cfg)
    print(json.dumps(cfg))


if __name__ == "__main__":
    main()
