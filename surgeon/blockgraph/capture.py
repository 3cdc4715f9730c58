"""A one-level graph of any module by running it: what FX cannot trace (``forward(*args, **kwargs)``
wrappers, decorators, data-dependent control flow, attention dispatch tables) still runs.

`capture(mod, call)` runs `mod` once on its recorded call (on the meta device when the call was
recorded there) under a `TorchFunctionMode` that writes every torch function and tensor method
`mod`'s own code applies into an `fx.Graph`: an op becomes a ``call_function`` node fed by the
nodes that produced its tensor arguments (found by tensor identity), a submodule's call one
``call_module`` node (its own ops are not recorded: it is a leaf, as in the one-level FX trace),
a parameter or buffer of `mod` a ``get_attr`` node. Ops that return no tensor (``x.shape``,
``x.size(1)``) leave no node, so shape arithmetic is no data flow. Sums, differences and
concatenations are written as ``operator.add`` / ``operator.sub`` / ``torch.cat``, so the merge
analysis reads the graph as it reads a traced one. The graph is the path this input took.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from surgeon.model.runtime import on_meta
from surgeon.blockgraph.record import _Call

_NAMED = {"add": operator.add, "add_": operator.add, "__add__": operator.add, "__radd__": operator.add,
          "__iadd__": operator.add, "sub": operator.sub, "sub_": operator.sub, "__sub__": operator.sub,
          "__isub__": operator.sub, "cat": torch.cat, "concat": torch.cat, "concatenate": torch.cat,
          "stack": torch.stack}


def _tensors(value: Any) -> list[torch.Tensor]:
    return [v for v in tree_leaves(value) if isinstance(v, torch.Tensor)]


class _Capture(TorchFunctionMode):
    """Writes `root`'s own ops and its submodules' calls into `self.graph` (see the module doc)."""

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self.graph = fx.Graph()
        self.node_of: dict[int, fx.Node] = {}
        self.keep: list[torch.Tensor] = []  # every tensor seen stays alive: ids are not reused
        self.depth = 0
        self.attrs = {id(t): name for name, t in [*root.named_parameters(), *root.named_buffers()]}
        self.names = {id(m): name for name, m in root.named_modules() if name}

    def bind(self, tensor: torch.Tensor, node: fx.Node) -> None:
        self.keep.append(tensor)
        self.node_of[id(tensor)] = node

    def inputs(self, value: Any) -> list[fx.Node]:
        """The nodes that produced the tensors in `value` (parameters of the root: get_attr)."""
        nodes: list[fx.Node] = []
        for t in _tensors(value):
            node = self.node_of.get(id(t))
            if node is None and id(t) in self.attrs:
                node = self.graph.get_attr(self.attrs[id(t)])
                self.bind(t, node)
            if node is not None and node not in nodes:
                nodes.append(node)
        return nodes

    def emit(self, op: str, target: Any, inputs: list[fx.Node], output: Any) -> None:
        """A node for one op or call; each tensor of its output is bound to it (several: getitem)."""
        outs = _tensors(output)
        if not outs:
            return
        node = self.graph.create_node(op, target, tuple(inputs))
        if len(outs) == 1:
            self.bind(outs[0], node)
            return
        for i, t in enumerate(outs):
            self.bind(t, self.graph.call_function(operator.getitem, (node, i)))

    def __torch_function__(self, func: Callable, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.depth == 0:
            name = getattr(func, "__name__", "")
            self.emit("call_function", _NAMED.get(name, func), self.inputs((args, kwargs)), out)
        return out

    def pre(self, mod: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth == 0:
            self._args = (args, kwargs)
        self.depth += 1

    def post(self, mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.emit("call_module", self.names[id(mod)], self.inputs(self._args), output)


def capture(mod: nn.Module, call: _Call) -> fx.Graph:
    """The one-level graph of `mod` on its recorded `call` (see the module doc); raises what the
    forward raises."""
    meta = any(t.device.type == "meta" for t in _tensors((call.args, call.kwargs)))
    cap = _Capture(mod)
    for t in _tensors((call.args, call.kwargs)):
        if id(t) not in cap.node_of:
            cap.bind(t, cap.graph.placeholder(f"input_{len(cap.node_of)}"))
    handles = []
    try:
        with torch.no_grad(), (on_meta(mod) if meta else nullcontext()):
            cap.attrs = {id(t): name for name, t in [*mod.named_parameters(), *mod.named_buffers()]}
            for m in mod.modules():
                if m is not mod:
                    handles.append(m.register_forward_pre_hook(cap.pre, with_kwargs=True))
                    handles.append(m.register_forward_hook(cap.post, with_kwargs=True))
            with cap:
                out = mod(*call.args, **call.kwargs)
    finally:
        for h in handles:
            h.remove()
    cap.graph.output(tuple(cap.inputs(out)))
    return cap.graph

