"""Dark nuclei on a bright background (brightfield, a stain's absorbance), approximated by
inverting fluorescence images: the DSB 2018 image and HeLa test frame 17 (a near-duplicate of
validation frame 16) as they are, inverted and read as they are, and inverted with ``invert=True``
(``--invert``, Serve ``?invert=true``). Object and pixel F1, regions segmented, seconds.

python bench/invert.py --json bench/results/invert.json
"""

import argparse
import json
import os
import time

import numpy as np
import tifffile

from spiralray import api
from spiralray.core.metrics import evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
SETS = {
    "dsb2018": (os.path.join(HERE, "data", "dsb2018"), 0),
    "hela 17": (os.path.join(HERE, "..", "..", "shared", "data", "hela"), 17),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    engine = api.load_engine(None)
    out = {}
    for name, (folder, frame) in SETS.items():
        images = tifffile.imread(os.path.join(folder, "images.tif"))
        labels = tifffile.imread(os.path.join(folder, "labels.tif"))
        image, truth = (images, labels) if images.ndim == 2 else (images[frame], labels[frame])
        dark = (np.iinfo(image.dtype).max - image).astype(image.dtype)
        out[name] = {}
        for how, pixels, invert in (
            ("native", image, False),
            ("inverted", dark, False),
            ("inverted, invert=True", dark, True),
        ):
            t0 = time.perf_counter()
            r = api.segment_image(engine, pixels, invert=invert)
            s = evaluate(r.labels, truth)
            row = {"object_f1_50": s["object_f1_50"], "pixel_f1": s["pixel_f1"], "regions": r.regions}
            out[name][how] = {**row, "seconds": round(time.perf_counter() - t0, 2)}
            print(
                f"{name:8s} {how:22s} object F1 {row['object_f1_50']:.3f}  pixel F1 {row['pixel_f1']:.3f}"
                f"  regions {row['regions']}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
