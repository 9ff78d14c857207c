"""The stage-1 scoring network (thesis): flatten -> Linear(128) -> tanh -> softmax -> Linear(1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Scorer(nn.Module):
    """Maps a region to "is an object centred here".

    Args:
        in_channels: image channels C.
        height, width: region size (52 x 58 in the thesis).
        hidden: width of the hidden layer (128).
    """

    def __init__(self, in_channels: int = 1, height: int = 52, width: int = 58, hidden: int = 128):
        super().__init__()
        self.in_channels, self.height, self.width = in_channels, height, width
        self.hidden = nn.Linear(in_channels * height * width, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.constant_(self.out.bias, 0.5)  # mid-range start: scores live in [0, 1]

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        """regions: ``B x C x height x width`` -> raw scores ``B`` (clip to [0, 1] to threshold)."""
        x = torch.tanh(self.hidden(regions.flatten(1)))
        return self.out(torch.softmax(x, dim=1)).squeeze(1)

    def dense(self, image: torch.Tensor, stride: int) -> torch.Tensor:
        """The same function at every stride-``stride`` region of a padded image, in one pass.

        image: ``B x C x Hp x Wp`` (already reflect-padded). Returns ``B x gh x gw`` raw scores,
        where entry (i, j) scores the region whose top-left is ``(i * stride, j * stride)``.
        The hidden layer becomes a ``height x width`` convolution, the output layer a 1 x 1 one.
        """
        w = self.hidden.weight.view(-1, self.in_channels, self.height, self.width)
        x = torch.tanh(F.conv2d(image, w, self.hidden.bias, stride=stride))
        x = torch.softmax(x, dim=1)
        w_out = self.out.weight.view(1, -1, 1, 1)
        return F.conv2d(x, w_out, self.out.bias).squeeze(1)
