"""Empty fields (an empty well, a field out of focus): in noise sigmas, how far each image's
brightest 5 x 5 mean (of its 2 x 2 minima: hot pixels left out) stands above its median
(``plan.make_plan``'s ``peak_over_noise``) and how wide its normalisation range is
(``range_over_noise``), for every real image here, synthetic ones, a confluent field of even
nuclei and fields of pure noise, with hot pixels or without. Under both
``noise.NOISE_ONLY`` (3) and ``NOISE_RANGE`` (6) an image is taken as noise only and gets no
objects; before, percentile normalisation stretched its noise to full contrast and the networks
found ~120 "nuclei" in a 512 x 512 field of camera noise.

python bench/noise_only.py --json bench/results/noise_only.json
"""

import argparse
import json
import os

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from spiralray.core.config import SpiralNetConfig
from spiralray.data.noise import NOISE_ONLY, NOISE_RANGE
from spiralray.data.shifts import ALL_SHIFTS
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io.planes import choose_plane
from spiralray.io.readers import ImageReader
from spiralray.pipeline.plan import make_plan

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def above(image, invert=False) -> tuple[float, float] | None:
    a = np.asarray(image)
    reader = ImageReader("memory", a, choose_plane(a.shape, "yx", None, None), a.shape, True, "memory")
    d = make_plan(reader, SpiralNetConfig(), 1024, invert=invert).diameter
    return (d["peak_over_noise"], d["range_over_noise"]) if "peak_over_noise" in d else None


def confluent(rng, r=13, spacing=28, shape=(320, 320)):
    """Even nuclei covering ~2/3 of the field, 8 noise sigmas bright: its median is a nucleus."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, bool)
    for cy in range(r, shape[0], spacing):
        for cx in range(r, shape[1], spacing):
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return (100 + 80 * m + rng.normal(0, 10, shape)).astype(np.float32)


def small_dim(rng, d, k, sigma=5.0, shape=(512, 512)):
    """Three nuclei ``d`` px across, ``k`` noise sigmas bright, in an otherwise empty field."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, bool)
    for cy, cx in ((100, 100), (300, 250), (420, 400)):
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (d / 2) ** 2
    return (1000 + k * sigma * m + rng.normal(0, sigma, shape)).astype(np.float32)


def vignette(shape=(512, 512), corner=0.3, centre=(0.5, 0.5), cos4=False) -> np.ndarray:
    """An illumination profile (1 at its centre, ``1 - corner`` at the farthest corner): a
    quadratic fall-off, or the cos^4 law of an uncorrected widefield objective; ``centre`` as
    fractions of the height and width (a misaligned lamp sits off the image's centre)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = centre[0] * (shape[0] - 1), centre[1] * (shape[1] - 1)
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    r2 = r2 / r2.max()
    if not cos4:
        return 1 - corner * r2
    f2 = 1 / ((1 - corner) ** -0.5 - 1)  # cos^4(atan(r / f)) = (1 + r^2 / f^2)^-2, 1 - corner at r = 1
    return (1 + r2 / f2) ** -2


def empty_vignetted(rng, counts, corner, **kw):
    """An empty well under uneven illumination: Poisson counts on a camera offset of 100."""
    return (100 + rng.poisson(counts * vignette(corner=corner, **kw))).astype(np.uint16)


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
    yield "confluent even nuclei", [confluent(rng) for _ in range(3)], False
    for k in (3, 4, 5):
        yield f"3 nuclei 7-12 px, {k} sigmas", [small_dim(rng, d, k) for d in (7, 9, 12)], False
    yield "noise: Gaussian", [rng.normal(100, 5, (512, 512)).astype(np.float32) for _ in range(3)], False
    yield "noise: Poisson 0.5", [rng.poisson(0.5, (512, 512)).astype(np.uint16) for _ in range(3)], False
    yield (
        "noise: Poisson 20 + 100",
        [(100 + rng.poisson(20, (512, 512))).astype(np.uint16) for _ in range(3)],
        False,
    )
    hot = [(100 + rng.poisson(20, (512, 512))).astype(np.uint16) for _ in range(3)]
    for k, a in enumerate(hot):
        a[rng.integers(0, 512, 3 + k), rng.integers(0, 512, 3 + k)] = 4095  # a camera's hot pixels
    yield "noise: Poisson 20 + 100, 3-5 hot pixels", hot, False
    yield (
        "noise: 8-bit",
        [np.clip(np.round(rng.normal(20, 2, (512, 512))), 0, 255).astype(np.uint8) for _ in range(3)],
        False,
    )
    for corner in (0.1, 0.3, 0.5):
        yield (
            f"noise under a vignette, {corner:.0%} at the corners",
            [empty_vignetted(rng, c, corner) for c in (100, 1000, 10000)],
            False,
        )
    yield (
        "noise under an off-centre cos^4 vignette, 30-60%",
        [empty_vignetted(rng, 1000, c, centre=(0.3, 0.65), cos4=True) for c in (0.3, 0.45, 0.6)],
        False,
    )
    yield (
        "3 nuclei 7-12 px, 5 sigmas, under a 30% vignette",
        [small_dim(rng, d, 5) * vignette(corner=0.3).astype(np.float32) for d in (7, 9, 12)],
        False,
    )
    yield (
        "HeLa 14-16 under an off-centre 50% cos^4 vignette",
        [hela[k] * vignette(hela[k].shape, 0.5, (0.3, 0.65), cos4=True) for k in (14, 15, 16)],
        False,
    )
    blurred = [gaussian_filter(rng.normal(100, 5, (512, 512)), 1).astype(np.float32) for _ in range(3)]
    yield "noise: Gaussian, blurred 1 px", blurred, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"peak_threshold": NOISE_ONLY, "range_threshold": NOISE_RANGE, "sets": {}}
    for name, images, invert in sets():
        vals = [above(im, invert) for im in images]
        got = [v for v in vals if v is not None]
        row = {"images": len(vals), "measurable": len(got)}
        for k, what in enumerate(("peak", "range")):
            row[f"{what}_min"] = round(min(v[k] for v in got), 2) if got else None
            row[f"{what}_max"] = round(max(v[k] for v in got), 2) if got else None
        row["noise_only"] = sum(p < NOISE_ONLY and r < NOISE_RANGE for p, r in got)
        out["sets"][name] = row
        print(f"{name:44s} {row}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
