"""`StandIn`: a module in place of one with another signature: called with more than one input
(an attention mask, a grid size) or returning a tuple (an attention module's ``(output, weights)``),
so a block that maps one tensor to one tensor can replace it where its caller passes and unpacks more."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["After", "StandIn"]


class StandIn(nn.Module):
    """``module(x)`` for the first input x (the other inputs are ignored); with `index`, returned at
    position `index` of a tuple of `length` with None elsewhere (what an attention module returns
    for weights not asked for). An output that already is a tuple is returned as it is."""

    def __init__(self, module: nn.Module, index: int | None = None, length: int = 1) -> None:
        super().__init__()
        self.module, self.index, self.length = module, index, length

    def forward(self, x, *args: Any, **kwargs: Any):  # noqa: ANN001 - stands in for any module
        out = self.module(x)
        if self.index is None or isinstance(out, tuple):
            return out
        return tuple(out if i == self.index else None for i in range(self.length))


class After(nn.Sequential):
    """``Sequential(block=..., <name>=...)`` for an insertion after a block whatever its signature:
    the block gets every input it is given, the inserted module its output (a tuple's first tensor,
    the rest of the tuple kept), so a transformers layer called with a mask or returning
    ``(hidden, weights)`` takes an inserted module as a timm block does."""

    def forward(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - the block's own output type
        block, inserted = self
        out = block(*args, **kwargs)
        if not isinstance(out, tuple):
            return inserted(out)
        i = next((i for i, v in enumerate(out) if isinstance(v, torch.Tensor)), None)
        return out if i is None else (*out[:i], inserted(out[i]), *out[i + 1:])
