"""Pixels in, normalised images out: how the batches of a loader were normalised
(`pixel_normalisation`, `model_normalisation`) and the device-side wrapping that lets a corruption,
noise or attack act on pixels in [0, 1] (`_in_pixels`).

Pixels: corruptions and frequency noise act on images in [0, 1], before normalisation, while the
loaders of `surgeon.data` normalise with the model's mean / std. Every corrupted batch is therefore
taken back to pixels on the device, x = z * std + mean, corrupted, and normalised again,
z' = (x' - mean) / std. The mean / std are read from the ``Normalize`` step of the loader's
transform (none: the batches are pixels already); batches of a plain iterable are taken to be
normalised with the model's own timm data config, as `surgeon.data.loader` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from surgeon.data.normalisation import _Gray
from surgeon.core.errors import SurgeonError
from surgeon.model.runtime import model_device

__all__ = ["pixel_normalisation"]


_PROBE = torch.zeros(1, 3, 2, 2)  # a tiny batch on which `corrupt` at severity 0 validates a name


def _data_transform(data: Any) -> Callable | None:
    """The per-image transform of a loader's dataset (`surgeon.data` datasets keep it), if any."""
    return getattr(getattr(data, "dataset", None), "transform", None)


def _steps(transform: Any) -> Iterator[Any]:
    """The steps of a transform, nested ``Compose``s flattened."""
    for step in getattr(transform, "transforms", [transform]):
        if hasattr(step, "transforms"):
            yield from _steps(step)
        else:
            yield step


def pixel_normalisation(model: nn.Module, data: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel with which the batches of `data` were normalised: what
    `surgeon.data.normalised` declares, else those of the ``Normalize`` step of the loader's
    transform (one channel when it ends in grey), else (0, 1) when its transform has none. A plain
    iterable that says nothing is refused: an assumed normalisation would scale every eps wrongly."""
    from torchvision.transforms import Normalize

    declared = getattr(data, "normalisation", None)
    if declared is not None:
        return tuple(map(float, declared[0])), tuple(map(float, declared[1]))
    transform = _data_transform(data)
    if transform is None:
        raise SurgeonError("the batches do not say how their pixels were normalised: wrap them, "
                           "surgeon.data.normalised(data, mean=..., std=...) (mean=(0, 0, 0), std=(1, 1, 1) for "
                           "pixels in [0, 1]), or use surgeon.data.loader")
    steps = list(_steps(transform))
    channels = 1 if any(isinstance(step, _Gray) for step in steps) else 3  # grey: equal values on all three
    for step in steps:
        if isinstance(step, Normalize):
            mean, std = (np.broadcast_to(np.atleast_1d(v).astype(float), 3)[:channels] for v in (step.mean, step.std))
            return tuple(mean.tolist()), tuple(std.tolist())
    return (0.0,) * channels, (1.0,) * channels


def model_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's own preprocessing (timm data config), one value per input channel."""
    from timm.data import resolve_model_data_config

    from surgeon.model.sizes import input_size_of

    cfg, channels = resolve_model_data_config(model), input_size_of(model)[0]
    mean, std = (np.atleast_1d(cfg[k]).astype(float) for k in ("mean", "std"))
    if len(mean) != channels:
        mean, std = np.full(channels, mean.mean()), np.full(channels, std.mean())
    return tuple(mean.tolist()), tuple(std.tolist())


def _in_pixels(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
               data: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The device-side transform z -> (fn(z std + mean) - mean) / std: `fn` sees the pixels in
    [0, 1] of the normalised batch z."""
    mean, std = pixel_normalisation(model, data)
    device = model_device(model)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda z: (fn(z * s + m) - m) / s
