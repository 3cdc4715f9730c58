"""The one rule that finds a classifier's logits in whatever its forward returns.

    logits_of(out)   # tensor -> itself; .logits / ["logits"] (ModelOutput, dataclass, dict);
                     # tuple or list -> its first tensor

A model whose output holds none of these fails with one line saying how to pass a function
that picks them (`LogitsOf(model, pick)`). `surgeon.hf` wraps Hugging Face classifiers with it,
so the analyses see a module that returns a tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError

__all__ = ["logits_of", "LogitsOf"]


def logits_of(output: Any) -> torch.Tensor:
    """The logits in `output`: a tensor is itself; an object or mapping with ``logits`` gives that
    (transformers' ``ModelOutput``, dataclasses, dicts); a tuple/list gives its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        output = tuple(getattr(output, f.name) for f in dataclasses.fields(output))
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise SurgeonError(f"cannot find the logits in a {type(output).__name__} model output; wrap the model as "
                       "surgeon.outputs.LogitsOf(model, pick) with pick(output) -> logits tensor")


class LogitsOf(nn.Module):
    """`model` returning a logits tensor: ``pick(model(x))`` (`logits_of` by default). The wrapped
    model is the submodule ``model``; the state dict keys gain that prefix."""

    def __init__(self, model: nn.Module, pick: Callable[[Any], torch.Tensor] = logits_of):
        super().__init__()
        self.model = model
        self.pick = pick

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pick(self.model(x))
