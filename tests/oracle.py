"""Test helper: a predictor that knows the truth, for checking the recursion's bookkeeping.

The "image" handed to the recursion is the instance label map itself (as float), so the oracle
can read ids from the field of view. The central object is the id under the FoV centre at the
first step (empty mask) and afterwards the id most often marked central in the mask FoV.
"""

import numpy as np


def oracle_predict(image_fov: np.ndarray, mask_fov: np.ndarray) -> np.ndarray:
    """image_fov: ``B x 1 x h x w`` label ids; mask_fov: ``B x 3 x h x w`` -> ``B x 3 x h x w``."""
    out = np.zeros(mask_fov.shape, np.float32)
    for b in range(len(image_fov)):
        ids = np.rint(image_fov[b, 0]).astype(np.int64)
        h, w = ids.shape
        if not mask_fov[b].any():
            central = ids[h // 2, w // 2]
        else:
            marked = ids[(mask_fov[b, 0] > 0.5) & (ids > 0)]
            central = np.bincount(marked).argmax() if marked.size else 0
        out[b, 0] = (ids == central) & (central != 0)
        out[b, 1] = (ids != 0) & (ids != central)
        out[b, 2] = ids == 0
    return out


def oracle_region_masks(labels: np.ndarray, region, spiral):
    """A ``region_masks`` callable running the reference recursion with the oracle."""
    from spiralray.core.regions import crop_pad, crop_regions, pad_image
    from spiralray.core.spiral import reference_region, spiral_geometry

    pad = crop_pad(region)
    padded = pad_image(labels.astype(np.float32)[None], pad)
    geom = spiral_geometry(region.height, region.width, spiral.block)

    def region_masks(centres):
        regions = crop_regions(padded, pad, centres, region)
        return (
            np.stack([reference_region(r, oracle_predict, geom)[0] > spiral.threshold for r in regions])
            if len(regions)
            else np.zeros((0, region.height, region.width), bool)
        )

    return region_masks
