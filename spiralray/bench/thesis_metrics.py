"""The thesis's own measurements, so its tables have counterparts here.

- Scorer (thesis Fig. 22): over every stride-16 region of the frames, against the threshold t:
  ``error_rate`` = regions passing t without an object at the centre pixel / regions passing;
  ``miss_rate`` = object-centred regions failing t / object-centred regions;
  ``stability_error_rate`` (our reading of the thesis's term) = regions whose decision at t
  disagrees with "an object is at the centre pixel" / all regions.
- Segmenter (thesis Table 1): per-channel precision / recall / F1 of the final three-channel
  object mask (each channel > 0.5) against the true three-channel labels, over object-centred
  regions.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.engine import Engine
from ..core.prepare import prepare_image
from ..core.regions import crop_pad, crop_regions, grid_centres, inside_image, pad_image, three_channel_labels

THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
CHANNELS = ("central", "other", "background")


def scorer_curves(engine: Engine, pairs, stride: int = 16) -> dict:
    cfg = engine.cfg.replace(candidates={"stride": stride})
    scores, centred = [], []
    for image, labels in pairs:
        x = prepare_image(image, cfg)
        pad = crop_pad(cfg.region)
        padded = pad_image(x, pad)
        c = grid_centres(*x.shape[1:], cfg.region, stride)
        inside = inside_image(c, *x.shape[1:])
        s = engine.score_map(padded, pad, x.shape[1:], stride=stride)
        scores.append(s[inside])
        cc = c[inside]
        centred.append(labels[cc[:, 0], cc[:, 1]] > 0)
    s, obj = np.concatenate(scores), np.concatenate(centred)
    out = {"thresholds": list(THRESHOLDS), "error_rate": [], "miss_rate": [], "stability_error_rate": []}
    for t in THRESHOLDS:
        passed = s >= t
        out["error_rate"].append(float((passed & ~obj).sum() / max(passed.sum(), 1)))
        out["miss_rate"].append(float((~passed & obj).sum() / max(obj.sum(), 1)))
        out["stability_error_rate"].append(float((passed != obj).mean()))
    out["regions"], out["object_centred"] = int(len(s)), int(obj.sum())
    return out


def segmenter_table(engine: Engine, pairs, per_image: int = 200, seed: int = 0) -> dict:
    cfg = engine.cfg
    rng = np.random.default_rng(seed)
    tp, fp, fn = np.zeros(3), np.zeros(3), np.zeros(3)
    for image, labels in pairs:
        x = prepare_image(image, cfg)
        pad = crop_pad(cfg.region)
        padded = pad_image(x, pad)
        c = grid_centres(*x.shape[1:], cfg.region, 16).reshape(-1, 2)
        c = c[inside_image(c, *x.shape[1:])]
        c = c[labels[c[:, 0], c[:, 1]] > 0]
        c = c[rng.permutation(len(c))[:per_image]]
        probs = engine.region_probs(torch.from_numpy(padded).to(engine.device), pad, c).cpu().numpy() > 0.5
        lab = crop_regions(pad_image(labels[None], pad), pad, c, cfg.region)[:, 0]
        truth = np.stack([three_channel_labels(lb) for lb in lab]) > 0.5
        tp += (probs & truth).sum((0, 2, 3))
        fp += (probs & ~truth).sum((0, 2, 3))
        fn += (~probs & truth).sum((0, 2, 3))
    table = {}
    for k, name in enumerate(CHANNELS):
        p = tp[k] / max(tp[k] + fp[k], 1)
        r = tp[k] / max(tp[k] + fn[k], 1)
        table[name] = {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(2 * p * r / max(p + r, 1e-9), 4),
        }
    return table


def plot_scorer_curves(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key in ("error_rate", "miss_rate", "stability_error_rate"):
        ax.plot(curves["thresholds"], curves[key], "o-", ms=3, label=key.replace("_", " "))
    ax.set_xlabel("score threshold t")
    ax.set_ylabel("rate")
    ax.set_title("Scorer against the threshold (cf. thesis Fig. 22)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
