"""Step 1 of discovery: one recorded forward (on the meta device when it can run there) that
keeps every module's first call (arguments, output, order, caller) and FLOPs per module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.flops import FlopCount
from surgeon.model.runtime import on_meta
from surgeon.model.sizes import default_input_size


@dataclass
class _Call:
    order: int
    args: tuple
    kwargs: dict
    caller: str = ""  # the module whose forward made the first call
    output: Any = None
    count: int = 1


class _Recorder:
    """Records the first call of every module (arguments, output, order) during one forward."""

    def __init__(self, model: nn.Module) -> None:
        self.paths = {}
        for path, mod in model.named_modules():
            self.paths.setdefault(id(mod), path)
        self.calls: dict[str, _Call] = {}
        self.stack: list[str] = []
        self.flops = FlopCount(self.stack)
        self.model = model

    def __enter__(self) -> _Recorder:
        self._handles = []
        for path, mod in self.model.named_modules():
            if self.paths[id(mod)] != path:
                continue
            self._handles.append(mod.register_forward_pre_hook(self._pre(path), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(path)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()

    def _pre(self, path: str):
        def hook(mod, args, kwargs):
            caller = self.stack[-1] if self.stack else ""
            self.stack.append(path)
            call = self.calls.get(path)
            if call is None:
                self.calls[path] = _Call(len(self.calls), args, dict(kwargs), caller)
            else:
                call.count += 1
        return hook

    def _post(self, path: str):
        def hook(mod, args, output):
            self.stack.pop()
            call = self.calls[path]
            if call.output is None:
                call.output = output
        return hook


def _record(model: nn.Module, x: torch.Tensor) -> _Recorder:
    """Run the recorded forward on the meta device (shapes only, no arithmetic: the model's
    tensors are swapped for meta ones, nothing is copied); a model that needs real values
    (data-dependent control flow, CPU constants) gets a real forward instead."""
    with torch.no_grad():
        try:
            rec = _Recorder(model)
            with on_meta(model), rec, rec.flops:
                model(torch.empty_like(x, device="meta"))
            return rec
        except Exception:  # noqa: BLE001 - the meta device cannot run this model: use real tensors
            pass
        rec = _Recorder(model)
        try:
            with rec, rec.flops:
                model(x)
        except Exception as exc:  # noqa: BLE001 - the model rejected this input: say which and why
            size = "x".join(map(str, x.shape[1:]))
            raise SurgeonError(
                f"{type(model).__name__} cannot take input size {size} ({first_line(exc, 120)}); give an "
                f"input_size= the model accepts (its default is {'x'.join(map(str, default_input_size(model)))}), "
                "or build it for this size with img_size="
            ) from None
    return rec
