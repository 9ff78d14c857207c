"""The figures behind the README's "cut nuclei and the labels" reading (HeLa, shipped model):

- training frames 0-13: labelled objects touching the image border per frame, against bright
  blobs touching it (normalised intensity > 0.3, > 100 px);
- validation frames 14-16: the share of false-positive pixels in predicted objects touching the
  border, and the mean normalised intensity of the true nuclei the model misses (< 10% covered).

    python bench/border.py
"""

import argparse
import json

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import clear_border

from spiralray import modelzoo
from spiralray.core.engine import Engine
from spiralray.data.datasets import HELA_SPLIT, load_pairs
from spiralray.data.normalize import normalize


def _edge_ids(labels: np.ndarray) -> set:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hela", default="../shared/data/hela")
    args = ap.parse_args()
    torch.set_num_threads(2)
    labelled, blobs = [], []
    for im, lb in load_pairs(args.hela, HELA_SPLIT["train"]):
        cc, _ = ndi.label(normalize(im) > 0.3)
        labelled.append(len(_edge_ids(lb)))
        blobs.append(sum(1 for c in _edge_ids(cc) if (cc == c).sum() > 100))
    engine = Engine(modelzoo.load(None))
    fp = fp_border = 0
    missed, everyone = [], []
    for im, lb in load_pairs(args.hela, HELA_SPLIT["validation"]):
        pred, x = engine.segment(im).labels, normalize(im)
        false = (pred > 0) & (lb == 0)
        fp += int(false.sum())
        fp_border += int((false & (pred > 0) & (clear_border(pred) == 0)).sum())
        for i in np.unique(lb[lb > 0]):
            m = lb == i
            everyone.append(float(x[m].mean()))
            if (pred[m] > 0).mean() < 0.1:
                missed.append(float(x[m].mean()))
    print(
        json.dumps(
            {
                "train_labelled_touching_border_per_frame": labelled,
                "train_bright_blobs_touching_border_per_frame": blobs,
                "val_false_positive_pixels": fp,
                "val_false_positive_share_in_border_objects": round(fp_border / max(fp, 1), 3),
                "val_missed_nuclei_mean_intensity": sorted(round(v, 3) for v in missed),
                "val_median_nucleus_intensity": round(float(np.median(everyone)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
