"""Polarity (``plan.make_plan``'s ``polarity``, ``normalize.polarity``: +1 bright objects on a
dark background, -1 dark on bright), read as it is and inverted (dark nuclei on a bright
background, as brightfield), for every real image here and synthetic ones. Under
``normalize.DARK_ON_BRIGHT`` (-0.3) the summary hints at the flag to try (``--invert``, or
without it; a field judged noise only needs twice that: ``normalize.looks_inverted``);
``hinted`` counts those. The model knows bright nuclei on dark: read the wrong way,
the DSB image's object F1 falls from 0.836 to 0 (bench/invert.py).

python bench/polarity.py --json bench/results/polarity.json
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

from spiralray.core.config import SpiralNetConfig
from spiralray.data.appearance import FEATURES, Appearance
from spiralray.data.normalize import DARK_ON_BRIGHT, looks_inverted
from spiralray.data.synthetic import SyntheticSpec, generate
from spiralray.io.planes import choose_plane
from spiralray.io.readers import ImageReader
from spiralray.pipeline.plan import make_plan


def plan_info(image, invert=False) -> dict:
    """The image's plan's ``diameter`` info: its ``polarity``, and whether it is noise only."""
    a = np.asarray(image)
    reader = ImageReader("memory", a, choose_plane(a.shape, "yx", None, None), a.shape, True, "memory")
    return make_plan(reader, SpiralNetConfig(), 1024, invert=invert).diameter


def flipped(image: np.ndarray) -> np.ndarray:
    """The image reversed within its dtype's range (float: within its own)."""
    if image.dtype.kind in "ui":
        return (np.iinfo(image.dtype).max - image).astype(image.dtype)
    return (image.max() + image.min() - image).astype(image.dtype)


def sets():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from noise_only import sets as noise_sets  # the real images, shifts and noise fields

    yield from noise_sets()
    yield (
        "synthetic diverse (training preset), 200",
        [generate(SyntheticSpec.diverse(512, 512), seed=s)[0] for s in range(200)],
        False,
    )
    for feature in FEATURES:
        spec = SyntheticSpec(512, 512, appearance=Appearance.only(feature))
        yield f"synthetic, {feature}", [generate(spec, seed=s)[0] for s in range(6)], False
    spec = SyntheticSpec(512, 512, density=0.005, max_overlap=0.5, appearance=Appearance.only("tissue"))
    yield "synthetic tissue, dense", [generate(spec, seed=s)[0] for s in range(6)], False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"threshold": DARK_ON_BRIGHT, "sets": {}}
    for name, images, invert in sets():
        row = {"images": len(images)}
        for how, pixels in (("as is", images), ("inverted", [flipped(np.asarray(im)) for im in images])):
            infos = [d for d in (plan_info(im, invert) for im in pixels) if d.get("polarity") is not None]
            got = [d["polarity"] for d in infos]
            row[how] = {
                "measured": len(got),
                "min": min(got) if got else None,
                "max": max(got) if got else None,
                "hinted": sum(looks_inverted(d) for d in infos),
            }
        out["sets"][name] = row
        print(f"{name:44s} as is {row['as is']}  inverted {row['inverted']}", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
