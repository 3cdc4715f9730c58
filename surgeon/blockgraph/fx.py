"""torch.fx tracing that knows timm's and torchvision's leaves, and GraphModules that keep the
model's state exactly.

timm marks modules and functions that FX must not trace into (`timm.layers.register_notrace_module`
/ `register_notrace_function`); torchvision wraps its own ops with `torch.fx.wrap`. The tracer
(torchvision's `LeafModuleAwareTracer` given timm's lists) honours both and takes an extra leaf
predicate, so a caller can trace at any granularity: every submodule a leaf (one level deep),
blocks as leaves (the block graph), or torch's default (every layer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

__all__ = ["tracer_class", "symbolic_trace", "graph_module"]

LeafFn = Callable[[nn.Module, str], bool]


@functools.cache
def _timm_registries() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    try:
        import timm  # noqa: F401 - importing the model zoo fills the registries
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # timm is a dependency, but keep tracing usable without it
        return (), ()
    return tuple(get_notrace_modules()), tuple(f for f in get_notrace_functions() if callable(f))


@functools.cache
def tracer_class() -> type[fx.Tracer]:
    """torchvision's `LeafModuleAwareTracer` with timm's notrace registries as its leaf modules and
    functions, an optional extra leaf predicate and tuple unpacking of leaf outputs. Built on first
    use: importing torchvision.models costs seconds, and tracing imports timm (which loads it) anyway.

    Parameter shapes are treated as constants, as timm does, so ``self.weight.shape`` arithmetic
    traces to Python ints rather than graph nodes.
    """
    from torchvision.models.feature_extraction import LeafModuleAwareTracer

    class Tracer(LeafModuleAwareTracer):
        def __init__(self, leaf: LeafFn | None = None, lengths: dict[str, int] | None = None) -> None:
            notrace_modules, notrace_functions = _timm_registries()
            super().__init__(leaf_modules=notrace_modules, autowrap_functions=notrace_functions,
                             param_shapes_constant=True)
            self._leaf = leaf
            self._lengths = lengths or {}

        def iter(self, obj: fx.Proxy):
            """Unpacking a leaf's output (``out, _ = self.attention(x)``) when its recorded call
            returned a tuple of known length (`lengths`: leaf path -> length)."""
            node = obj.node
            if node.op == "call_module" and node.target in self._lengths:
                return iter([obj[i] for i in range(self._lengths[node.target])])
            return super().iter(obj)

        def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
            if self._leaf is not None and self._leaf(m, module_qualified_name):
                return True
            return super().is_leaf_module(m, module_qualified_name)

    return Tracer


def symbolic_trace(root: nn.Module, leaf: LeafFn | None = None,
                   concrete_args: dict[str, Any] | None = None, lengths: dict[str, int] | None = None) -> fx.Graph:
    """Trace `root` into an FX graph (leaves: torch.nn layers, timm's notrace set, `leaf`;
    `lengths`: the tuple lengths of leaves' outputs, see the tracer's `iter`)."""
    return tracer_class()(leaf, lengths).trace(root, concrete_args)


def graph_module(root: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule over `graph` whose state_dict has exactly the keys and tensors of `root`.

    `fx.GraphModule` copies only the attributes the graph uses and registers every copied buffer
    as persistent; here unused parameters and buffers are re-attached (shared with `root`) and
    non-persistent buffers stay non-persistent, so weights load into either module from the other.
    """
    gm = fx.GraphModule(root, graph, class_name=type(root).__name__)
    # Keys the graph never touched: attach the original objects at the deepest existing parent.
    own = set(gm.state_dict(keep_vars=True))
    for name in root.state_dict(keep_vars=True):
        if name in own:
            continue
        parts = name.split(".")
        src, dst = root, gm
        for i, part in enumerate(parts[:-1]):
            src = getattr(src, part)
            if not hasattr(dst, part) or not isinstance(getattr(dst, part), nn.Module):
                dst.add_module(part, src)  # attach the whole original subtree
                own.update(f"{'.'.join(parts[:i + 1])}.{k}" for k in src.state_dict(keep_vars=True))
                break
            dst = getattr(dst, part)
        else:
            value = getattr(src, parts[-1])
            if isinstance(value, nn.Parameter):
                dst.register_parameter(parts[-1], value)
            else:
                dst.register_buffer(parts[-1], value)
            own.add(name)
    # Persistence: mirror each original module's non-persistent buffer set; tensor constants FX
    # lifted out of the code (`_tensor_constant0`) are not state either.
    gm_modules = dict(gm.named_modules())
    original = set(root.state_dict(keep_vars=True))
    for name, _ in list(gm.named_buffers()):
        if name not in original:
            path, _, attr = name.rpartition(".")
            gm_modules[path]._non_persistent_buffers_set.add(attr)
    for path, mod in root.named_modules():
        target = gm_modules.get(path)
        if target is not None and target is not mod and mod._non_persistent_buffers_set:
            target._non_persistent_buffers_set |= mod._non_persistent_buffers_set & set(target._buffers)
    return gm


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """The tensors inside a (possibly nested) tuple / list / dict value, in order."""
    return [v for v in torch.utils._pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
