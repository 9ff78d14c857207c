"""The stage-2 segmenting network (thesis, with our reading: no ReLU before the sigmoid).

image -> conv3x3(32)+ReLU; mask -> conv3x3(32)+ReLU; concat(64) -> conv3x3(64)+ReLU;
``skip_modules`` x [conv3x3 64->32 + ReLU, conv3x3 32->64, add input, ReLU]; conv1x1 -> 3
(32: ``skip_inner``, wider in a widened model).
No pooling and no batch norm, so every output pixel depends only on a (2r+1)^2 window,
r = ``receptive_radius``. ``padding=0`` ("valid") computes exactly the pixels whose window is
inside the input: the fast engine evaluates only the block each spiral step writes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SkipModule(nn.Module):
    def __init__(self, channels: int = 64, inner: int = 32):
        super().__init__()
        self.a = nn.Conv2d(channels, inner, 3)
        self.b = nn.Conv2d(inner, channels, 3)

    def forward(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        """x: ``B x 64 x h x w`` -> ``B x 64 x (h - 4 + 4 padding) x ...``."""
        y = F.relu(F.conv2d(x, self.a.weight, self.a.bias, padding=padding))
        y = F.conv2d(y, self.b.weight, self.b.bias, padding=padding)
        crop = 2 * (1 - padding)
        if crop:
            x = x[:, :, crop:-crop, crop:-crop]
        return F.relu(x + y)


class Segmenter(nn.Module):
    """Args:
    in_channels: image channels C (grayscale = 1).
    mask_channels: object-mask channels (3: central / other / background).
    width: channels of each input branch (32); trunk: trunk channels (64).
    skip_modules: number of skip modules (2).
    skip_inner: channels inside each skip module (0: ``trunk // 2``, the thesis's 32).
    """

    def __init__(
        self,
        in_channels: int = 1,
        mask_channels: int = 3,
        width: int = 32,
        trunk: int = 64,
        skip_modules: int = 2,
        skip_inner: int = 0,
    ):
        super().__init__()
        self.image_conv = nn.Conv2d(in_channels, width, 3)
        self.mask_conv = nn.Conv2d(mask_channels, width, 3)
        self.merge = nn.Conv2d(2 * width, trunk, 3)
        inner = skip_inner or trunk // 2
        self.skips = nn.ModuleList(SkipModule(trunk, inner) for _ in range(skip_modules))
        self.head = nn.Conv2d(trunk, mask_channels, 1)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output needs on every side: one per 3x3 conv on the path."""
        return 2 + 2 * len(self.skips)

    def image_features(self, image: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """The mask-independent first layer. image: ``B x C x h x w`` -> ``B x width x h' x w'``."""
        return F.relu(F.conv2d(image, self.image_conv.weight, self.image_conv.bias, padding=padding))

    def trunk_logits(self, feats: torch.Tensor, mask: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """feats: image features aligned with ``mask`` after its first conv; mask:
        ``B x 3 x h x w``. Returns logits ``B x 3 x h x w`` (padding=1) or
        ``B x 3 x (h - 2r) x (w - 2r)`` (padding=0)."""
        m = F.relu(F.conv2d(mask, self.mask_conv.weight, self.mask_conv.bias, padding=padding))
        x = F.relu(F.conv2d(torch.cat([feats, m], 1), self.merge.weight, self.merge.bias, padding=padding))
        for skip in self.skips:
            x = skip(x, padding)
        return self.head(x)

    def image_context(self, feats: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """The image half of the merge conv (plus its bias): mask-independent, so the engine
        computes it once per region. feats: ``image_features`` -> ``B x trunk x h' x w'``."""
        w = self.merge.weight[:, : feats.shape[1]]
        return F.conv2d(feats, w, self.merge.bias, padding=padding)

    def trunk_from_context(self, context: torch.Tensor, mask: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """Logits from a precomputed ``image_context`` window and a mask window: the same
        function as ``trunk_logits`` (the merge conv is linear in its input channels).
        mask: ``B x 3 x s x s``, context: aligned with the merge output (``s - 4`` for padding=0)."""
        m = F.relu(F.conv2d(mask, self.mask_conv.weight, self.mask_conv.bias, padding=padding))
        w = self.merge.weight[:, self.image_conv.out_channels :]
        x = F.relu(context + F.conv2d(m, w, None, padding=padding))
        for skip in self.skips:
            x = skip(x, padding)
        return self.head(x)

    def logits(self, image: torch.Tensor, mask: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """image: ``B x C x h x w``, mask: ``B x 3 x h x w`` -> logits (see ``trunk_logits``)."""
        return self.trunk_logits(self.image_features(image, padding), mask, padding)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Probabilities ``B x 3 x h x w`` for a full field of view (zero "same" padding)."""
        return torch.sigmoid(self.logits(image, mask, padding=1))
