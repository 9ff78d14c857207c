"""SpiralNet: both stages' networks and the config they were built with, travelling together."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SpiralNetConfig
from .models import Scorer, Segmenter


@dataclass
class SpiralNet:
    config: SpiralNetConfig
    scorer: Scorer
    segmenter: Segmenter

    @classmethod
    def build(cls, config: SpiralNetConfig | None = None, seed: int | None = 0) -> SpiralNet:
        """Fresh (untrained) networks shaped by ``config``; ``seed`` makes the init repeatable."""
        config = config or SpiralNetConfig()
        if seed is not None:
            torch.manual_seed(seed)
        m, r = config.model, config.region
        scorer = Scorer(m.in_channels, r.height, r.width, m.scorer_hidden)
        segmenter = Segmenter(
            m.in_channels, 3, m.seg_width, m.seg_trunk, m.seg_skip_modules, m.seg_skip_inner
        )
        return cls(config, scorer.eval(), segmenter.eval())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict (``scorer.*``, ``segmenter.*``) for safetensors."""
        out = {f"scorer.{k}": v for k, v in self.scorer.state_dict().items()}
        out.update({f"segmenter.{k}": v for k, v in self.segmenter.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> SpiralNet:
        for prefix, module in (("scorer.", self.scorer), ("segmenter.", self.segmenter)):
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(part)
        return self

    def to(self, device) -> SpiralNet:
        self.scorer.to(device)
        self.segmenter.to(device)
        return self
