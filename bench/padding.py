"""Zero padding (stitching, registration, crop-and-pad) against per-image normalisation: HeLa test
frames 17-19 (600 x 600 crops) segmented whole and with their top 128 rows set to 0; object F1@0.5
on rows 160 and below (away from the padding's edge), and padded with the pad value named
(``pad_value=0``, ``--pad-value 0``). HeLa's test frames are near-duplicates of its validation
frames 14-16. Unnamed, the padding enters the per-image statistics and flattens the nuclei's
contrast (README, "What the model expects"); named, it is left out and read as background.

python bench/padding.py --json bench/results/padding.json
"""

import argparse
import json
import os

import tifffile

from spiralray import api
from spiralray.core.metrics import evaluate

HELA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "hela")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    images = tifffile.imread(os.path.join(HELA, "images.tif"))
    labels = tifffile.imread(os.path.join(HELA, "labels.tif"))
    engine = api.load_engine(None)
    inner = (slice(160, None), slice(None))
    out = {"frames": {}, "crop": [600, 600], "padded_rows": 128, "scored_rows": "160-600"}
    for frame in (17, 18, 19):
        image, truth = images[frame][:600, :600].copy(), labels[frame][:600, :600]
        whole = evaluate(api.segment_image(engine, image).labels[inner], truth[inner])["object_f1_50"]
        image[:128] = 0
        padded = evaluate(api.segment_image(engine, image).labels[inner], truth[inner])["object_f1_50"]
        named = evaluate(api.segment_image(engine, image, pad_value=0).labels[inner], truth[inner])[
            "object_f1_50"
        ]
        out["frames"][frame] = {
            "object_f1_whole": round(whole, 3),
            "object_f1_padded": round(padded, 3),
            "object_f1_padded_pad_value_0": round(named, 3),
        }
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
