"""An experiment, not a product option: bench/calibrate.py with test-time flip averaging.

Every region is segmented as it is and mirrored (left-right, up-down, both); the mirrored
runs' probabilities are mirrored back and the four are averaged before the central threshold.
Each mirrored run walks the spiral in another order over the image, so the average is an
ensemble of recursion paths. A region is ``h x w`` with its centre at ``(h // 2, w // 2)``;
for even sides the mirror image of that pixel is one pixel before it, so a mirrored run is cut
one pixel further on (centred at ``c + 1``) and shifted back after; the row or column it
lacks is taken from the plain run.

It costs four segmenter runs per region. The arguments are calibrate.py's:

    python bench/flips.py --model spiralray/weights/spiralnet --out /tmp/flips --fields 20 \\
        --score 0.2 --central 0.3,0.4 --nms 8 --min-area 60 --neck 0.85
"""

from __future__ import annotations

import os
import runpy
import sys

import numpy as np

from spiralray.core import engine as engine_module

MIRRORS = ((0, 1), (1, 0), (1, 1))  # (up-down, left-right)
_plain = engine_module._Base.region_probs


def averaged_region_probs(self, padded, pad, centres: np.ndarray):
    """``region_probs`` (``M x 3 x h x w``) averaged over the plain and the mirrored runs."""
    plain = _plain(self, padded, pad, centres)
    if not len(plain):
        return plain
    total = plain.clone()
    h, w = plain.shape[-2:]
    for fy, fx in MIRRORS:
        dims = [d for d, f in ((2, fy), (3, fx)) if f]
        regions = self.regions_at(padded, pad, np.asarray(centres) + [[fy, fx]])
        mirrored = self.probs_of(regions.flip(dims)).flip(dims)
        shifted = plain.clone()
        shifted[:, :, fy:, fx:] = mirrored[:, :, : h - fy, : w - fx]
        total += shifted
    return total / (1 + len(MIRRORS))


def main():
    engine_module._Base.region_probs = averaged_region_probs
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    sys.argv = ["calibrate.py", *sys.argv[1:]]
    runpy.run_path(os.path.join(here, "calibrate.py"), run_name="__main__")


if __name__ == "__main__":
    main()
