"""Step 2 of discovery, per module: a one-level FX trace (children as leaves) and the merge analysis
that finds residual adds and concatenations of branches in it."""

from __future__ import annotations

import inspect
import itertools
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from surgeon.blockgraph.capture import capture
from surgeon.blockgraph.fx import symbolic_trace
from surgeon.blockgraph.record import _Call

_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_SHAPE_METHODS = {"size", "dim", "numel", "type", "get_device", "element_size", "stride"}
_ADDS = {operator.add, operator.iadd, torch.add}
_CATS = {torch.cat, torch.concat, torch.stack}


@dataclass
class _Analysis:
    graph: fx.Graph | None
    merges: list[fx.Node]
    adds: list[fx.Node]


def _concrete_args(mod: nn.Module, call: _Call) -> dict[str, Any] | None:
    """FX concrete_args reproducing a recorded call: non-tensor arguments (``mask=None``, flags)
    fixed to their values, tensors (also inside tuples) left as placeholders."""
    sig = inspect.signature(mod.forward)
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        if call.kwargs or len(call.args) != 1:
            raise TypeError("variadic forward called with several arguments")
        return None
    bound = sig.bind(*call.args, **call.kwargs)
    bound.apply_defaults()
    return {name: tree_map(lambda v: fx.PH if isinstance(v, torch.Tensor) else v, value)
            for name, value in bound.arguments.items() if not isinstance(value, torch.Tensor)}


def _shallow_trace(mod: nn.Module, call: _Call, lengths: dict[str, int] | None = None,
                   run: bool = False) -> fx.Graph | None:
    """Trace `mod` with every submodule a leaf, arguments fixed to their recorded non-tensor values
    (`lengths`: children returning tuples, by name, so their outputs can be unpacked); when FX
    cannot trace it (or `run`: a module marked not to be traced), run it on its recorded call
    (`capture.capture`); None when that fails too."""
    if not run:
        try:
            return symbolic_trace(mod, leaf=lambda m, q: q != "", concrete_args=_concrete_args(mod, call),
                                  lengths=lengths)
        except Exception:  # noqa: BLE001 - FX cannot trace it: run it instead
            pass
    try:
        return capture(mod, call)
    except Exception:  # noqa: BLE001 - nor run it alone: "treat this module from its type"
        return None


def _is_metadata(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS) or (
        n.op == "call_method" and n.target in _SHAPE_METHODS
    )


def _is_add(n: fx.Node) -> bool:
    """A sum of tensors (``(out,) + rest``, a tuple concatenation, is none)."""
    return ((n.op == "call_function" and n.target in _ADDS) or (n.op == "call_method" and n.target in ("add", "add_"))) \
        and not any(isinstance(a, (tuple, list)) for a in n.args)


def _is_merge_op(n: fx.Node) -> bool:
    """Ops that join branches: sums (residual) and concatenations (dense / inception / fusion).
    Gating products (squeeze-excitation) and attention matmuls are not merges."""
    return _is_add(n) or (n.op == "call_function" and n.target in _CATS) or (
        n.op == "call_method" and n.target in ("sub", "sub_")) or (n.op == "call_function" and n.target in (operator.sub, torch.sub))


def _analyze(graph: fx.Graph | None) -> _Analysis:
    """Find merges: sums or concatenations of tensors that derive from a common input along
    different module paths (a residual add, a concatenation of branches; not two slices of one
    tensor)."""
    if graph is None:
        return _Analysis(None, [], [])
    sources: dict[fx.Node, frozenset[fx.Node]] = {}  # the inputs a tensor derives from
    producers: dict[fx.Node, frozenset[fx.Node]] = {}  # the last module calls / inputs before it
    merges = []
    for n in graph.nodes:
        if n.op == "placeholder":
            sources[n] = producers[n] = frozenset([n])
            continue
        if n.op in ("get_attr", "output") or _is_metadata(n):
            continue
        parents = [a for a in n.all_input_nodes if a in sources]
        if not parents:
            continue
        sources[n] = frozenset().union(*(sources[a] for a in parents))
        producers[n] = frozenset([n]) if n.op == "call_module" else frozenset().union(*(producers[a] for a in parents))
        if _is_merge_op(n) and any(sources[a] & sources[b] and producers[a] != producers[b]
                                   for a, b in itertools.combinations(parents, 2)):
            merges.append(n)
    return _Analysis(graph, merges, [n for n in merges if _is_add(n)])


def _merging_inputs(n: fx.Node) -> bool:
    """`n` takes two values that derive from a common input along different module paths."""
    a, b = n.all_input_nodes[:2]
    return a is not b and bool((_ancestors(a) | {a}) & (_ancestors(b) | {b}))


def _returns_sum_of_inputs(a: _Analysis) -> bool:
    """The graph's output is a sum of two values derived from different inputs (``dense(x) + y``)."""
    if a.graph is None:
        return False
    out = next((n for n in a.graph.nodes if n.op == "output"), None)
    first = out.all_input_nodes[:1] if out is not None else []
    if not first or not _is_add(first[0]) or len(first[0].all_input_nodes) != 2:
        return False
    inputs = [{m for m in _ancestors(x) | {x} if m.op == "placeholder"} for x in first[0].all_input_nodes]
    return bool(inputs[0] and inputs[1] and inputs[0] != inputs[1])


def _downstream_module(start: fx.Node) -> fx.Node | None:
    """The first call_module node fed by `start` through non-module, non-merge ops."""
    frontier, seen, found = [start], set(), []
    while frontier:
        n = frontier.pop()
        for u in n.users:
            if u in seen:
                continue
            seen.add(u)
            if u.op == "call_module":
                found.append(u)
            elif u.op in ("call_function", "call_method") and not _is_metadata(u):
                frontier.append(u)
    if not found:
        return None
    order = {n: i for i, n in enumerate(start.graph.nodes)}
    return min(found, key=order.__getitem__)


def _depends_on(node: fx.Node, ancestor: fx.Node) -> bool:
    stack, seen = list(node.all_input_nodes), set()
    while stack:
        n = stack.pop()
        if n is ancestor:
            return True
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return False


def _ancestors(node: fx.Node) -> set[fx.Node]:
    stack, seen = list(node.all_input_nodes), set()
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def _branch_modules(add: fx.Node) -> list[fx.Node]:
    """The module calls on the residual branch of the sum `add`: those it derives from that come
    after its fork (the last node both summands derive from; ``x`` in ``x + block(x)``), in graph
    order; [] when the summands share no fork."""
    if len(add.all_input_nodes) != 2:
        return []
    a, b = add.all_input_nodes
    order = {n: i for i, n in enumerate(add.graph.nodes)}
    common = (_ancestors(a) | {a}) & (_ancestors(b) | {b})
    if not common:
        return []
    fork = max(common, key=order.__getitem__)
    before = _ancestors(fork) | {fork}
    return sorted((n for n in _ancestors(add) - before if n.op == "call_module"), key=order.__getitem__)


def _side_modules(graph: fx.Graph, class_of) -> set[str]:
    """Targets of the module calls that compute a side input: a value handed, beside the main
    stream, as a later argument to two or more calls of modules of one class (GC ViT's global
    query, given to every block of its stage), or only to other side modules (the generator
    before its norm). `class_of(target)` is the class of the module called."""
    side: set[fx.Node] = set()
    for n in reversed([n for n in graph.nodes if n.op == "call_module"]):
        later, first, direct = _consumers(n)
        if direct or any(u not in side for u in first):
            continue
        if (len(later) >= 2 and len({class_of(u.target) for u in later}) == 1) or (first and not later):
            side.add(n)
    return {n.target for n in side}


def _consumers(start: fx.Node) -> tuple[list[fx.Node], list[fx.Node], bool]:
    """The module calls that read `start`'s output through other ops: those reading it as a later
    argument, those reading it as their first, and whether it reaches the graph output directly."""
    later, first, direct = [], [], False
    frontier, seen = [start], {start}
    while frontier:
        n = frontier.pop()
        for u in n.users:
            if u.op == "output":
                direct = True
            elif u.op == "call_module":
                (first if u.all_input_nodes[:1] == [n] else later).append(u)
            elif u not in seen and not _is_metadata(u):
                seen.add(u)
                frontier.append(u)
    return later, first, direct


#: ops that keep every position where a reading of the tensor expects it: indexing, the token
#: reading of a map (``flatten``, ``transpose``, ``permute``, ``contiguous``), element-wise arithmetic
_KEEPS_POSITIONS = {"getitem", "flatten", "transpose", "permute", "contiguous", "add", "iadd", "mul", "imul", "sub",
                    "truediv", "dropout", "to", "float", "type_as", "clone"}


def _producers(node: fx.Node) -> set[fx.Node]:
    """The module calls and inputs whose values reach `node`'s arguments through other ops."""
    found, stack, seen = set(), list(node.all_input_nodes), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op in ("call_module", "placeholder"):
            found.add(n)
        elif n.op != "get_attr":
            stack.extend(n.all_input_nodes)
    return found


def _regrouped_from(node: fx.Node) -> fx.Node | None:
    """The module call or input whose value reaches `node`'s first argument through an op that can
    regroup positions (``reshape``, ``view``, ``unfold``, a function such as NesT's ``blockify``:
    anything not in `_KEEPS_POSITIONS`); None when only position-keeping ops lie between."""
    n = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    regroups = False
    while n is not None and n.op in ("call_function", "call_method"):
        regroups = regroups or (not _is_metadata(n) and getattr(n.target, "__name__", str(n.target)) not in _KEEPS_POSITIONS)
        n = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
    return n if regroups and n is not None and n.op in ("call_module", "placeholder") else None
