"""Reusable blocks, and a registry (`LAYERS`) so edited models can be rebuilt from their record by name.

    surgeon.layers.create("msa", in_channels=256, heads=6, window=7)

    @surgeon.layers.register("scale")          # a block of your own, usable by name in passes
    class Scale(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from surgeon.core.registry import Registry
from surgeon.layers.msa import MSABlock, relative_position_index
from surgeon.layers.smoothing import SpatialSmoothing
from surgeon.layers.standin import After, StandIn
from surgeon.layers.tokengrid import TokenGrid

__all__ = ["After", "LAYERS", "MSABlock", "SpatialSmoothing", "StandIn", "TokenGrid", "Zero", "create", "register", "registered",
           "relative_position_index"]


class Zero(nn.Module):
    """A lesioned residual branch: returns zeros shaped like its first input (and ``None`` for the
    attention weights of modules that return ``(out, weights)``, as nn.MultiheadAttention does)."""

    def __init__(self, returns_tuple: bool = False) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, x, *args, **kwargs):  # noqa: ANN001 - stands in for any module
        return (x.mul(0), None) if self.returns_tuple else x.mul(0)


#: Blocks a pass can build by name (``replace(m, "c3.b1", "msa")``), and a saved record rebuild.
LAYERS: Registry[Callable[..., nn.Module]] = Registry("block type", {
    "msa": MSABlock,
    "smoothing": SpatialSmoothing,
    "identity": nn.Identity,
    "zero": Zero,
})


def register(name: str | Callable[..., nn.Module] | None = None, factory: Callable[..., nn.Module] | None = None) -> Any:
    """Make a block factory available to passes and saved records under `name`: ``register(name,
    factory)``, or as a decorator ``@register("name")`` / ``@register`` (the class's name)."""
    return LAYERS.register(name) if factory is None else LAYERS.register(name, factory)


def registered() -> list[str]:
    """The registered block names, sorted."""
    return sorted(LAYERS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered block `name` with keyword arguments."""
    return LAYERS.get(name)(**kwargs)
