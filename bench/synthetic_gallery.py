"""A gallery of synthetic nuclei, one row per appearance feature (``spiralray.data.appearance``),
beside real crops (BBBC039 train, HeLa train frames) when their folders exist. Each tile is
normalised as the model sees it (1st-99.8th percentile); the last column outlines the labels of
the row's first tile. Prints appearance statistics of whole real and synthetic frames beside
each other (the calibration): per frame, brightness spread across nuclei (p95 / p5 of their medians
above the background), smoothed texture inside nuclei (std / level), the share of nucleus pixels
under half their nucleus's level (nucleoli, dim rims), and the edge profile 1 px outside / inside
the label (over the level).

    python bench/synthetic_gallery.py    # -> bench/results/synthetic_gallery.png
"""

import argparse
import os

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from spiralray.data.appearance import FEATURES, Appearance
from spiralray.data.synthetic import SyntheticSpec, generate

TILE, COLS, LABEL_W = 144, 3, 110


def _view(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, (1, 99.8))
    return (np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _outline(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = _view(image) // 2
    out[find_boundaries(labels, mode="inner")] = 255
    return out


def _stats(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(brightness spread, texture, dark share, edge outside, edge inside) of one frame."""
    x = image.astype(np.float64)
    x -= np.median(x[labels == 0])
    ids = np.arange(1, labels.max() + 1)
    level = np.asarray(ndi.median(x, labels, ids))
    level = np.r_[1.0, np.maximum(level, 0.02 * np.percentile(level, 95))]  # no division by ~0
    rel = x / level[labels]
    inner = ndi.distance_transform_edt(labels > 0)
    smooth = ndi.gaussian_filter(x, 2) / level[labels]
    outside = ndi.distance_transform_edt(labels == 0) == 1
    edge_out = np.median(x[outside] / level[ndi.grey_dilation(labels, 3)[outside]])
    return np.array(
        [
            np.percentile(level[1:], 95) / np.percentile(level[1:], 5),
            np.std(smooth[inner >= 3]),
            np.mean(rel[labels > 0] < 0.5),
            edge_out,
            np.median(rel[inner == 1]),
        ]
    )


def _calibration(args, n=6):
    """Prints the statistics of whole frames: real ones beside 384 x 384 synthetic ones."""
    sets = {
        "original generator": [generate(SyntheticSpec(384, 384), s) for s in range(n)],
        "plain (features off)": [
            generate(SyntheticSpec(384, 384, appearance=Appearance()), s) for s in range(n)
        ],
        "diverse (mixed)": [generate(SyntheticSpec.diverse(384, 384), s) for s in range(2 * n)],
    }
    for name, path in (("BBBC039 train", args.bbbc039), ("HeLa 0-13", args.hela)):
        if os.path.exists(os.path.join(path, "images.tif")):
            ims, lbs = tifffile.imread(f"{path}/images.tif"), tifffile.imread(f"{path}/labels.tif")
            frames = np.linspace(0, min(len(ims), 14) - 1, n).astype(int)  # HeLa: training frames only
            sets[name] = [(ims[f], lbs[f]) for f in frames]
    print(f"{'frames (median)':<24} spread texture  dark edge-out edge-in")
    for name, pairs in sets.items():
        st = np.median([_stats(im, lb) for im, lb in pairs if lb.max() > 2], axis=0)
        print(f"{name:<24} {st[0]:6.1f} {st[1]:7.3f} {st[2]:5.3f} {st[3]:8.2f} {st[4]:7.2f}")


def _rows(args):
    spec = SyntheticSpec(TILE, TILE, appearance=Appearance())
    yield "plain (features off)", [generate(spec, s) for s in range(COLS)]
    for k, name in enumerate(FEATURES):
        spec = SyntheticSpec(TILE, TILE, appearance=Appearance.only(name))
        yield name, [generate(spec, 100 * k + s) for s in range(COLS)]
    yield "diverse (mixed)", [generate(SyntheticSpec.diverse(TILE, TILE), 7 + s) for s in range(COLS)]
    yield "original generator", [generate(SyntheticSpec(TILE, TILE), s) for s in range(COLS)]
    for name, path, frames in (
        ("BBBC039 train", args.bbbc039, (0, 20, 40, 60)),
        ("HeLa 0-13", args.hela, (0, 4, 8, 12)),
    ):
        if os.path.exists(os.path.join(path, "images.tif")):
            ims, lbs = tifffile.imread(f"{path}/images.tif"), tifffile.imread(f"{path}/labels.tif")
            win = (slice(150, 150 + TILE), slice(250, 250 + TILE))
            yield name, [(ims[f][win], lbs[f][win]) for f in frames[:COLS]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bbbc039", default="../shared/data/bbbc039/train")
    ap.add_argument("--hela", default="../shared/data/hela")
    ap.add_argument("--out", default="bench/results/synthetic_gallery.png")
    args = ap.parse_args()
    _calibration(args)
    rows = []
    for name, pairs in _rows(args):
        tiles = [_view(im) for im, _ in pairs] + [_outline(*pairs[0])]
        row = np.full((TILE + 4, LABEL_W + (COLS + 1) * (TILE + 4)), 40, np.uint8)
        for i, t in enumerate(tiles):
            row[2 : 2 + TILE, LABEL_W + i * (TILE + 4) + 2 :][:, :TILE] = t
        img = Image.fromarray(row)
        bits = int(np.ceil(np.log2(max(int(max(im.max() for im, _ in pairs)), 1) + 1)))
        ImageDraw.Draw(img).text((6, TILE // 2 - 10), f"{name}\nmax < 2^{bits}", fill=255)
        rows.append(np.asarray(img))
    Image.fromarray(np.concatenate(rows)).save(args.out, optimize=True)
    print(f"{args.out}: {len(rows)} rows, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
