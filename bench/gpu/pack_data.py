"""Copy the training data a device session needs into ``.gpu_data/`` (git-ignored; pass it to the
device tool's ``carry``, 64 MiB in all): BBBC039's 100 training fields and HeLa's training
frames 0-13. Validation and test frames stay here: models come back and are chosen here.

python bench/gpu/pack_data.py [--bbbc039 ../shared/data/bbbc039] [--hela ../shared/data/hela]
"""

import argparse
import os
import shutil

import numpy as np
import tifffile

from spiralray.data.datasets import HELA_SPLIT, load_pairs

OUT = ".gpu_data"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bbbc039", default="../shared/data/bbbc039")
    ap.add_argument("--hela", default="../shared/data/hela")
    args = ap.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(f"{OUT}/bbbc039_train")
    for name in ("images.tif", "labels.tif"):
        shutil.copyfile(f"{args.bbbc039}/train/{name}", f"{OUT}/bbbc039_train/{name}")
    pairs = load_pairs(args.hela, HELA_SPLIT["train"])
    os.makedirs(f"{OUT}/hela")
    for i, name in enumerate(("images.tif", "labels.tif")):
        tifffile.imwrite(f"{OUT}/hela/{name}", np.stack([p[i] for p in pairs]), compression="zlib")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"{OUT}: {total / 2**20:.1f} MiB (HeLa frames {HELA_SPLIT['train'][0]}-{HELA_SPLIT['train'][-1]})")


if __name__ == "__main__":
    main()
