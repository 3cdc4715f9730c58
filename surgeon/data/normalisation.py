"""Normalisation: batches that declare how their pixels were normalised (`normalised`,
`Normalised`), and the timm data config of a grey (one-channel) or RGB model read on RGB images
(`_rgb_config`, `_to_channels`, `_Gray`: the channel mean of normalised RGB is the normalised grey
image).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from surgeon.core.errors import SurgeonError

__all__ = ["normalised", "Normalised"]


class Normalised:
    """Batches that declare how their pixels were normalised (x = (pixels - mean) / std): what the
    analyses acting on pixels (attacks, corruptions, frequency noise, stability) need of a plain
    iterable. ``surgeon.data.normalised(data, mean=(0, 0, 0), std=(1, 1, 1))`` for pixels in [0, 1]."""

    def __init__(self, data: Iterable[Any], mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or not len(mean) or min(std) <= 0:
            raise SurgeonError(f"mean {tuple(mean)} and std {tuple(std)} must have one value per channel, std > 0")
        self.data, self.normalisation = data, (tuple(map(float, mean)), tuple(map(float, std)))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]


def normalised(data: Iterable[Any], mean: Sequence[float], std: Sequence[float]) -> Normalised:
    """`data` declaring its normalisation (see `Normalised`)."""
    return Normalised(data, mean, std)


class _Gray:
    """(3, H, W) normalised RGB -> (1, H, W): the channel mean. With one mean m and std s on all three
    channels this is (mean_c x_c - m) / s, the normalised grey image (exact for grey sources: digits)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(0, keepdim=True)


def _rgb_config(cfg: dict, size: tuple[int, int, int]) -> dict:
    """The timm data config for RGB images at (C, H, W) `size`: a one-channel model's mean / std
    (one value each, or three) become one value on all three channels (see `_Gray`)."""
    cfg = dict(cfg)
    if size[0] not in (1, 3):
        raise SurgeonError(f"the model takes {size[0]}-channel images; surgeon's data are RGB (3) or grey (1): "
                           "give a transform= that makes its channels")
    cfg["input_size"] = (3, *size[1:])
    if size[0] == 1:
        for key, default in (("mean", 0.5), ("std", 0.5)):
            values = cfg.get(key) or (default,)
            cfg[key] = (float(np.mean(values)),) * 3
    return cfg


def _to_channels(transform: Callable, channels: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose([transform, _Gray()]) if channels == 1 else transform
