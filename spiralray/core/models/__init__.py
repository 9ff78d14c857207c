"""Networks: the thesis's scorer and segmenter, and the U-Net baseline. Torch only."""

from .scorer import Scorer
from .segmenter import Segmenter
from .unet import UNet

__all__ = ["Scorer", "Segmenter", "UNet"]
