"""U-Net baseline (Ronneberger et al. 2015), the thesis's comparison, with "same" padding.

Predicts 3 classes per pixel (background / nucleus interior / nucleus boundary); instances are
the connected components of the interior grown back over the foreground (see ``baselines``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Args:
    in_channels: image channels C; classes: output channels (3).
    base: channels of the first level (64 as in the original); doubles per level.
    depth: number of down-sampling steps (4 as in the original).
    """

    def __init__(self, in_channels: int = 1, classes: int = 3, base: int = 64, depth: int = 4):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], classes, 1)
        self.multiple = 2**depth

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: ``B x C x H x W`` (any H, W; padded internally to a multiple of 2^depth)
        -> class logits ``B x classes x H x W``."""
        h, w = image.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(image, (0, pw, 0, ph), mode="reflect") if ph or pw else image
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)[..., :h, :w]
