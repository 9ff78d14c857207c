"""Empty fields (an empty well, a field out of focus): how far each image's brightest 5 x 5
mean stands above its median, in noise sigmas (``plan.make_plan``'s ``peak_over_noise``), for
every real image here and for fields of pure noise. Under ``normalize.NOISE_ONLY`` (3) an image
is taken as noise only and gets no objects; before, percentile normalisation stretched its noise
to full contrast and the networks found ~120 "nuclei" in a 512 x 512 field of camera noise.

python bench/noise_only.py --json bench/results/noise_only.json
"""

import argparse
import json
import os

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from spiralray.core.config import SpiralNetConfig
from spiralray.data.normalize import NOISE_ONLY
from spiralray.data.shifts import ALL_SHIFTS
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io.planes import choose_plane
from spiralray.io.readers import ImageReader
from spiralray.pipeline.plan import make_plan

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def above(image, invert=False) -> float | None:
    a = np.asarray(image)
    reader = ImageReader("memory", a, choose_plane(a.shape, "yx", None, None), a.shape, True, "memory")
    return make_plan(reader, SpiralNetConfig(), 1024, invert=invert).diameter.get("peak_over_noise")


def sets():
    for split in ("train", "val"):
        yield (
            f"BBBC039 {split}",
            list(tifffile.imread(os.path.join(SHARED, "bbbc039", split, "images.tif"))),
            False,
        )
    hela = tifffile.imread(os.path.join(SHARED, "hela", "images.tif"))
    truth = tifffile.imread(os.path.join(SHARED, "hela", "labels.tif"))
    yield "HeLa 0-19", list(hela), False
    yield (
        "DSB 2018",
        [np.squeeze(tifffile.imread(os.path.join(HERE, "data", "dsb2018", "images.tif")))],
        False,
    )
    for name, shift in ALL_SHIFTS.items():
        yield f"HeLa 14-16, {name}", [shift(hela[k], truth[k], seed=k)[0] for k in (14, 15, 16)], False
    yield "HeLa 14-16 inverted, --invert", [(65535 - hela[k]).astype(np.uint16) for k in (14, 15, 16)], True
    for preset in ("default", "sparse"):
        spec = SyntheticSpec(256, 256) if preset == "default" else SyntheticSpec(512, 512, density=0.00002)
        yield f"synthetic ({preset})", [generate(spec, seed=s)[0] for s in range(10)], False
    rng = np.random.default_rng(0)
    yield "noise: Gaussian", [rng.normal(100, 5, (512, 512)).astype(np.float32) for _ in range(3)], False
    yield "noise: Poisson 0.5", [rng.poisson(0.5, (512, 512)).astype(np.uint16) for _ in range(3)], False
    yield (
        "noise: Poisson 20 + 100",
        [(100 + rng.poisson(20, (512, 512))).astype(np.uint16) for _ in range(3)],
        False,
    )
    yield (
        "noise: 8-bit",
        [np.clip(np.round(rng.normal(20, 2, (512, 512))), 0, 255).astype(np.uint8) for _ in range(3)],
        False,
    )
    blurred = [gaussian_filter(rng.normal(100, 5, (512, 512)), 1).astype(np.float32) for _ in range(3)]
    yield "noise: Gaussian, blurred 1 px", blurred, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"threshold": NOISE_ONLY, "sets": {}}
    for name, images, invert in sets():
        vals = [above(im, invert) for im in images]
        got = [v for v in vals if v is not None]
        row = {
            "images": len(vals),
            "measurable": len(got),
            "min": round(min(got), 2) if got else None,
            "max": round(max(got), 2) if got else None,
            "noise_only": sum(v < NOISE_ONLY for v in got),
        }
        out["sets"][name] = row
        print(f"{name:44s} {row}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
