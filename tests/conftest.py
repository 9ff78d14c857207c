import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
HELA = ROOT.parent / "shared" / "data" / "hela"


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Two cores here: keep torch from oversubscribing when Ray workers share them.
    torch.set_num_threads(int(os.environ.get("SPIRALRAY_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def hela():
    """The real HeLa frames (images, labels), or a clear skip when the data is absent."""
    if not (HELA / "images.tif").exists():
        pytest.skip(f"HeLa data not found at {HELA}")
    import tifffile

    return tifffile.imread(HELA / "images.tif"), tifffile.imread(HELA / "labels.tif")


def ellipse(shape, centre, a, b, angle=0.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u = c * (xx - centre[1]) + s * (yy - centre[0])
    v = -s * (xx - centre[1]) + c * (yy - centre[0])
    return (u / a) ** 2 + (v / b) ** 2 <= 1
