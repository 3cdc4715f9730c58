"""Spatial smoothing (Park & Kim, "Blurs Behave Like Ensembles", ICML 2022): a tanh clamp, ReLU and
a 2x2 box blur at stride 1, inserted after stages; it flattens the loss landscape like an ensemble
of neighbouring feature maps.

    y = blur_2x2(ReLU(t * tanh(x / t)))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.core import checks

__all__ = ["SpatialSmoothing"]


class SpatialSmoothing(nn.Module):
    """``blur(relu(t * tanh(x / t)))`` with a 2x2 mean filter, stride 1, padded right/bottom with
    zeros so the map keeps its size. Parameter-free.

    Args:
        temperature: t of the tanh clamp (the paper: 10).
        channels_last: NHWC inputs and outputs instead of NCHW.
    """

    def __init__(self, temperature: float = 10.0, channels_last: bool = False) -> None:
        checks.check_float("temperature", temperature, min=0.0, min_open=True)
        super().__init__()
        self.temperature = temperature
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        y = F.relu(self.temperature * torch.tanh(x / self.temperature))
        y = F.avg_pool2d(F.pad(y, (0, 1, 0, 1)), kernel_size=2, stride=1)
        return y.permute(0, 2, 3, 1) if self.channels_last else y

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
