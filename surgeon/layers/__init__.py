"""Reusable blocks, and a registry so edited models can be rebuilt from their recipe by name.

    surgeon.layers.create("msa", in_channels=256, heads=6, window=7)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import SurgeonError
from .msa import MSABlock, relative_position_index
from .smoothing import SpatialSmoothing

__all__ = ["MSABlock", "SpatialSmoothing", "Zero", "create", "register", "registered", "relative_position_index"]


class Zero(nn.Module):
    """A lesioned residual branch: returns zeros shaped like its first input (and ``None`` for the
    attention weights of modules that return ``(out, weights)``, as nn.MultiheadAttention does)."""

    def __init__(self, returns_tuple: bool = False) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, x, *args, **kwargs):  # noqa: ANN001 - stands in for any module
        return (x.mul(0), None) if self.returns_tuple else x.mul(0)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "msa": MSABlock,
    "smoothing": SpatialSmoothing,
    "identity": nn.Identity,
    "zero": Zero,
}


def register(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make `factory` available to passes and saved recipes under `name`."""
    _REGISTRY[name] = factory
    return factory


def registered() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **kwargs) -> nn.Module:
    """Build the registered block `name` with keyword arguments."""
    if name not in _REGISTRY:
        raise SurgeonError(f"unknown block type {name!r}; registered: {', '.join(registered())}")
    return _REGISTRY[name](**kwargs)
