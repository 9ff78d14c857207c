"""Function-preserving growth of a trained segmenter (Net2Net's idea, Chen et al. 2016):
more channels inside each skip module, so fine-tuning starts from the trained network's exact
output and only adds capacity.

A skip module computes ``relu(x + b(relu(a(x))))``. New inner channels get ``a`` filters drawn
small and ``b`` input weights of zero: they add nothing to ``b``'s output until training moves
those weights, so the grown network's masks equal the original's bit for bit (tested).
"""

from __future__ import annotations

import torch

from ..core.net import SpiralNet
from ..errors import SpiralrayError

NEW_FILTER_SCALE = 0.1  # the new ``a`` filters, times PyTorch's default init: small, not zero


def widen_skips(net: SpiralNet, inner: int, seed: int = 0) -> SpiralNet:
    """A new SpiralNet whose skip modules have ``inner`` channels inside (``>=`` the current),
    with ``net``'s weights; the scorer is shared unchanged. Config ``model.seg_skip_inner`` is set."""
    m = net.config.model
    current = m.seg_skip_inner or m.seg_trunk // 2
    if inner < current:
        raise SpiralrayError(f"skip modules already have {current} inner channels; cannot narrow to {inner}")
    grown = SpiralNet.build(net.config.replace(model={"seg_skip_inner": inner}), seed=seed)
    grown.scorer = net.scorer
    old, new = net.segmenter.state_dict(), grown.segmenter.state_dict()
    with torch.no_grad():
        for k, v in old.items():
            w = new[k]
            if k.startswith("skips.") and (k.endswith(".a.weight") or k.endswith(".a.bias")):
                w[current:] *= NEW_FILTER_SCALE
                w[:current] = v
            elif k.startswith("skips.") and k.endswith(".b.weight"):
                w.zero_()
                w[:, :current] = v
            else:
                w.copy_(v)
    grown.segmenter.load_state_dict(new)
    return grown
