"""The block graph: any timm / torchvision classifier as an addressable sequence of stages and blocks.

    g = surgeon.graph(model)
    g.blocks            # [Block(address='stem', ...), Block(address='c1.b0', ...), ..., Block('head')]
    g.stages["c2"]      # the blocks of stage c2
    g.select("c*.b-1")  # the last block of every stage
    g.module            # an nn.Module exactly equivalent to `model`, with blocks as FX leaves

How blocks are found (the paper's decomposition, Sec. 2 and App. A: stem, residual blocks, head;
a transformer block split into its two residual halves):

1. One eager forward in eval mode records, for every module, its first call (arguments, output)
   and call order, and counts FLOPs per module.
2. From the root down, each module is traced one level deep with torch.fx (its children as
   leaves). A module whose graph merges two tensors that come from the same input (a residual
   add, a concatenation of branches) is a *unit*; one with two or more residual adds in a row
   and parameters in each branch is split into halves (``x + attn(norm1(x))``,
   ``x + mlp(norm2(x))``). A module without a merge is a chain: containers are descended; a
   chain of plain layers is one block (or one layer when it holds at most one conv/linear).
3. Layers before the first block form the stem, layers after the last block the head; the
   remaining layer runs between blocks (ConvNeXt downsampling, Swin patch merging, DenseNet
   transitions) become blocks of their own, grouped by parent module.
4. Stages ``c1..cN`` start at the first block after the stem and advance wherever the spatial
   resolution of a block's output drops.

A module FX cannot trace (data-dependent control flow) is treated from its type: containers as
chains, other modules as one block. If the whole model does not trace at block granularity,
``g.module`` is the model itself and ``g.method == "eager"``; addresses and selection still work.
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import math
import operator
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from .errors import SurgeonError, first_line
from .flops import FlopCount
from .fx import _timm_registries, graph_module, symbolic_trace, tensor_leaves
from .modelinfo import default_input_size, input_size_of
from .runtime import model_device
from .tables import Tabular

__all__ = ["Block", "BlockGraph", "graph", "KINDS", "feature_info_mismatch"]

KINDS = ("stem", "conv", "msa", "mlp", "downsample", "head", "other")

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_SHAPE_METHODS = {"size", "dim", "numel", "type", "get_device", "element_size", "stride"}
_ADDS = {operator.add, operator.iadd, torch.add}
_CATS = {torch.cat, torch.concat, torch.stack}
_NOT_ATTENTION = re.compile(r"channel|spatial|selectivekernel|coord|squeeze|excit|cbam|eca", re.I)
_STEM_NAMES = re.compile(r"^(stem|stem_\w+|conv_stem|patch_embed)$")
_DOWNSAMPLE_NAMES = re.compile(r"pool|downsample|merg|transition|reduc", re.I)


# ----------------------------------------------------------------------------------------------
# Public data


@dataclass
class Block:
    """One block of the graph.

    Attributes:
        address: ``stem``, ``c2.b3`` (block 3 of stage c2, counted from 0) or ``head``.
        path: the block's main module path (``layer2.3``; the attention / MLP module for a
            transformer half; ``conv1+bn1+act1+maxpool`` for a group of layers).
        members: the module paths that make up the block, in call order.
        kind: one of `KINDS`.
        stage: ``c1``..``cN``, or None for the stem and head.
        tap: ``(module path, "in" | "out")``: the module input or output that carries the block's
            output (a transformer's attention half ends where ``norm2`` reads its input).
        in_shape / out_shape: tensor shapes at batch size 1.
        layout: ``NCHW``, ``NHWC``, ``NLC`` (tokens), ``BTNC`` (tokens in windows, NesT) or None
            (no spatial map).
        grid: the (H, W) of the feature map, or None.
        prefix_tokens: class / distillation / register tokens before the patch tokens.
        params: number of parameters.
        flops: floating-point operations for one sample (2 per multiply-accumulate).
        downsamples: True when the block lowers the spatial resolution.
        depth: normalised depth i / (L - 1) over all blocks.
    """

    address: str
    path: str
    members: tuple[str, ...]
    kind: str
    stage: str | None
    tap: tuple[str, str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layout: str | None
    grid: tuple[int, int] | None
    prefix_tokens: int
    params: int
    flops: int
    downsamples: bool
    depth: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BlockGraph(Tabular):
    """A model as stem, stages of blocks and head. Build one with `surgeon.graph`."""

    model: nn.Module
    module: nn.Module
    method: str
    blocks: list[Block]
    input_size: tuple[int, int, int]
    fallback_reason: str | None = None
    stages: dict[str, list[Block]] = field(init=False)

    def __post_init__(self) -> None:
        self.stages = {}
        for b in self.blocks:
            if b.stage is not None:
                self.stages.setdefault(b.stage, []).append(b)

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, address: str) -> Block:
        found = self.select(address)
        if not found:
            raise SurgeonError(f"no block matches {address!r}; valid: {self.valid_addresses()}")
        if len(found) != 1:
            raise SurgeonError(f"{address!r} names {len(found)} blocks, not one; use select() for several")
        return found[0]

    def select(self, pattern: str | Sequence[str]) -> list[Block]:
        """Blocks matching `pattern`, in graph order.

        A pattern is a comma-separated union of terms:
        ``*`` (all), ``stem``, ``head``, a stage ``c2``, a block ``c2.b3``, the last block ``c2.b-1``,
        globs ``c*.b-1`` / ``c[23].b*``, a module path ``layer2.3`` (or a prefix ``layer2``, or a glob
        ``layer*.0``), and kind filters ``kind:msa``.

        A filter or glob that matches nothing (``kind:msa`` on a CNN) selects no block: the result
        is ``[]``. A name that does not exist (``c9``, ``layer7``, ``kind:foo``) raises a
        `SurgeonError` listing the valid addresses.
        """
        terms = [pattern] if isinstance(pattern, str) else list(pattern)
        terms = [t.strip() for term in terms for t in term.split(",") if t.strip()]
        if not terms:
            raise SurgeonError(f"empty block selection; valid: {self.valid_addresses()}")
        chosen: set[int] = set()
        for term in terms:
            hits = self._select_term(term)
            if not hits and not (term.startswith("kind:") or any(ch in term for ch in "*?[")):
                raise SurgeonError(f"unknown block {term!r}; valid: {self.valid_addresses()}")
            chosen.update(id(b) for b in hits)
        return [b for b in self.blocks if id(b) in chosen]

    def _select_term(self, term: str) -> list[Block]:
        if term in ("*", "all"):
            return list(self.blocks)
        if term.startswith("kind:"):
            kind = term[5:]
            if kind not in KINDS:
                raise SurgeonError(f"unknown kind {kind!r} in {term!r}; kinds: {', '.join(KINDS)}")
            return [b for b in self.blocks if b.kind == kind]
        m = re.fullmatch(r"([A-Za-z0-9_*?\[\]]+?)(?:\.b(-?\d+|\*))?", term)
        if m and (m.group(1) in ("stem", "head") and m.group(2) is None):
            return [b for b in self.blocks if b.address == term]
        if m and re.fullmatch(r"c[0-9*?\[\]]+", m.group(1)):
            stages = [s for s in self.stages if fnmatch.fnmatchcase(s, m.group(1))]
            out: list[Block] = []
            for s in stages:
                blocks = self.stages[s]
                if m.group(2) in (None, "*"):
                    out += blocks
                else:
                    i = int(m.group(2))
                    if not -len(blocks) <= i < len(blocks):
                        raise SurgeonError(
                            f"{s} has {len(blocks)} blocks, so {s}.b{i} does not exist; "
                            f"use {s}.b0..{s}.b{len(blocks) - 1} or {s}.b-1 for the last"
                        )
                    out.append(blocks[i])
            if stages or not any(ch in m.group(1) for ch in "*?["):
                return out
        # module paths: exact member, prefix, or glob
        return [
            b for b in self.blocks
            if term == b.path
            or any(p == term or p.startswith(term + ".") or term.startswith(p + ".") or fnmatch.fnmatchcase(p, term)
                   for p in b.members)
        ]

    def valid_addresses(self) -> str:
        """A one-line summary of the addresses this graph accepts."""
        parts = []
        for b in self.blocks:
            if b.stage is None:
                parts.append(b.address)
            elif b is self.stages[b.stage][0]:
                n = len(self.stages[b.stage])
                parts.append(f"{b.stage}.b0" + (f"..b{n - 1}" if n > 1 else ""))
        return ", ".join(parts) + f"; module paths like {self.blocks[min(1, len(self.blocks) - 1)].members[0]}; kind:{'|'.join(KINDS)}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: blocks, stage summary and provenance."""
        return {
            "model": type(self.model).__name__,
            "method": self.method,
            "fallback_reason": self.fallback_reason,
            "input_size": list(self.input_size),
            "params": sum(p.numel() for p in self.model.parameters()),
            "flops": sum(b.flops for b in self.blocks),
            "stages": {
                s: {
                    "blocks": len(bs),
                    "grid": list(bs[-1].grid) if bs[-1].grid else None,
                    "kinds": {k: sum(b.kind == k for b in bs) for k in KINDS if any(b.kind == k for b in bs)},
                    "params": sum(b.params for b in bs),
                    "flops": sum(b.flops for b in bs),
                }
                for s, bs in self.stages.items()
            },
            "blocks": [b.to_dict() for b in self.blocks],
        }

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: block x quantity (params, FLOPs at `input_size`)."""
        return [{"block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "output": list(b.out_shape[1:]),
                 "quantity": q, "value": v} for b in self.blocks for q, v in (("params", b.params), ("flops", b.flops))]


# ----------------------------------------------------------------------------------------------
# Step 1: one recorded eager forward


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


# ----------------------------------------------------------------------------------------------
# Step 2: one-level traces and the merge analysis


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


def _shallow_trace(mod: nn.Module, call: _Call) -> fx.Graph | None:
    """Trace `mod` with every submodule a leaf, arguments fixed to their recorded non-tensor values."""
    try:
        return symbolic_trace(mod, leaf=lambda m, q: q != "", concrete_args=_concrete_args(mod, call))
    except Exception:  # noqa: BLE001 - any tracing failure means "treat this module from its type"
        return None


def _is_metadata(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS) or (
        n.op == "call_method" and n.target in _SHAPE_METHODS
    )


def _is_add(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _ADDS) or (n.op == "call_method" and n.target in ("add", "add_"))


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


# ----------------------------------------------------------------------------------------------
# Step 2 (cont.): atoms


@dataclass
class _Atom:
    role: str  # "layer" | "unit" | "half"
    members: list[str]
    tap: tuple[str, str]
    parent: str  # path of the module whose chain produced this atom
    merging: bool = False
    in_container: bool = False
    extra: list[str] = field(default_factory=list)  # direct parameters / buffers owned by the atom


def _parent_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _main_layers(mod: nn.Module) -> int:
    return sum(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in mod.modules())


class _Discovery:
    def __init__(self, model: nn.Module, rec: _Recorder) -> None:
        self.model = model
        self.rec = rec
        self._cache: dict[tuple, _Analysis] = {}

    def run(self) -> list[_Atom]:
        return self._visit("", self.model, is_root=True)

    def _analysis(self, mod: nn.Module, call: _Call) -> _Analysis:
        """`_analyze` of a one-level trace, shared by modules of the same class, children, settings
        and call (the twelve blocks of a ViT are traced once)."""
        simple = (bool, int, float, str, type(None))
        key = (
            type(mod),
            tuple((n, type(c)) for n, c in mod.named_children()),
            tuple(sorted((k, v) for k, v in vars(mod).items() if not k.startswith("_") and isinstance(v, simple))),
            tuple(sorted((n, p.shape) for n, p in itertools.chain(mod.named_parameters(recurse=False),
                                                                   mod.named_buffers(recurse=False)))),
            repr(tree_map(lambda v: ("T", v.ndim) if isinstance(v, torch.Tensor) else v, (call.args, call.kwargs))),
        )
        try:
            hash(key)
        except TypeError:
            return _analyze(_shallow_trace(mod, call))
        if key not in self._cache:
            self._cache[key] = _analyze(_shallow_trace(mod, call))
        return self._cache[key]

    def _first_call(self, path: str, mod: nn.Module) -> int | None:
        """Call order of `mod`, or of its first-called descendant (a ModuleList is never called)."""
        call = self.rec.calls.get(path)
        if call is not None:
            return call.order
        orders = [self.rec.calls[p].order for p in (_join(path, n) for n, _ in mod.named_modules() if n)
                  if p in self.rec.calls]
        return min(orders) if orders else None

    def _borrowed(self, path: str, parent: str) -> bool:
        """True for a module registered under `parent` but called from elsewhere (a shared
        positional encoding that blocks borrow, as in CoaT): it belongs to its callers."""
        call = self.rec.calls.get(path)
        return call is not None and bool(call.caller) and not (parent == call.caller or parent.startswith(call.caller + "."))

    def _children(self, path: str, mod: nn.Module) -> list[tuple[str, nn.Module]]:
        kids = [(_join(path, n), c, self._first_call(_join(path, n), c)) for n, c in mod.named_children()
                if not self._borrowed(_join(path, n), path)
                # a module never called itself (only its parts, via a method such as get_bias())
                # computes a side input, not a step of the main path: unless it is a container
                and (_join(path, n) in self.rec.calls or isinstance(c, _CONTAINERS))]
        return [(k, c) for k, c, order in sorted((kc for kc in kids if kc[2] is not None), key=lambda kc: kc[2])]

    def _direct_state(self, path: str, mod: nn.Module) -> list[str]:
        return [_join(path, n) for n, _ in itertools.chain(mod.named_parameters(recurse=False),
                                                           mod.named_buffers(recurse=False))]

    def _single(self, role: str, path: str, merging: bool = False) -> _Atom:
        parent = _parent_of(path)
        parent_mod = self.model.get_submodule(parent)
        return _Atom(role, [path], (path, "out"), parent, merging, isinstance(parent_mod, _CONTAINERS))

    def _visit(self, path: str, mod: nn.Module, is_root: bool = False) -> list[_Atom]:
        call = self.rec.calls.get(path)
        kids = self._children(path, mod)
        if not is_root and (not kids or (call is None and not isinstance(mod, _CONTAINERS))):
            return [self._single("layer", path)]
        builtin = type(mod).__module__.startswith("torch.nn") and not isinstance(mod, _CONTAINERS)
        if not is_root and builtin:
            return [self._single("layer", path)]
        notrace = isinstance(mod, _timm_registries()[0])
        if not is_root and notrace:  # timm's own leaves: a block if it holds several layers
            return [self._single("unit" if _main_layers(mod) > 1 else "layer", path)]
        if not is_root and call is not None:  # (an uncalled ModuleList is a plain sequence)
            analysis = self._analysis(mod, call)
            if analysis.merges:
                return self._halves(path, analysis) or [self._single("unit", path, merging=True)]
            shared = any(k in self.rec.calls and self.rec.calls[k].count > call.count for k, _ in kids)
            if shared or (analysis.graph is None and not isinstance(mod, _CONTAINERS)):
                return [self._single("unit", path)]  # untraceable or reused children: one block
        atoms = [a for k, c in kids for a in self._visit(k, c)]
        if atoms:
            atoms[0].extra += self._direct_state(path, mod)
        split = any(a.role == "half" or a.merging for a in atoms)
        if split and not is_root and self._downsampling_module(path):
            return [self._single("unit", path)]  # GC ViT's Downsample2d: a residual conv, then a strided one
        if is_root or isinstance(mod, _CONTAINERS) or split:
            return atoms
        return [self._single("unit" if _main_layers(mod) > 1 else "layer", path)]

    def _downsampling_module(self, path: str) -> bool:
        """A module named for downsampling (``downsample``, ``reduction``, ``merge``, ``pool``...)
        whose output has fewer positions than its input: one step between stages."""
        call = self.rec.calls.get(path)
        if call is None or not _DOWNSAMPLE_NAMES.search(path.rsplit(".", 1)[-1]):
            return False
        ins, outs = tensor_leaves(call.args), tensor_leaves(call.output)
        image = tensor_leaves(self.rec.calls[""].args)[0].shape[-2:]
        if not (ins and outs):
            return False
        before, after = (_spatial(t.shape, (image[0], image[1]), 0)[1] for t in (ins[0], outs[0]))
        return bool(before and after and after[0] * after[1] < before[0] * before[1])

    def _halves(self, path: str, a: _Analysis) -> list[_Atom] | None:
        """Split a module with consecutive residual adds into one atom per residual branch."""
        adds = a.adds
        if len(adds) < 2 or len(adds) != len(a.merges):
            return None
        for prev, nxt in itertools.pairwise(adds):
            if not _depends_on(nxt, prev):
                return None
        order = {n: i for i, n in enumerate(a.graph.nodes)}
        bounds = [order[n] for n in adds]
        segments: list[list[str]] = [[] for _ in adds]
        extras: list[list[str]] = [[] for _ in adds]
        for n in a.graph.nodes:
            if n.op not in ("call_module", "get_attr"):
                continue
            i = next((j for j, b in enumerate(bounds) if order[n] < b), len(bounds) - 1)
            target = _join(path, n.target)
            if n.op == "call_module":
                if target not in self.rec.calls:  # a module shared with (and owned by) another place
                    continue
                if target not in segments[i]:
                    segments[i].append(target)
            else:
                extras[i].append(target)
        for seg, extra in zip(segments, extras):
            if not extra and not any(p.numel() for m in seg for p in self.model.get_submodule(m).parameters()):
                return None
        taps: list[tuple[str, str]] = []
        for node in adds[:-1]:
            consumer = _downstream_module(node)
            if consumer is None:
                return None
            taps.append((_join(path, consumer.target), "in"))
        taps.append((path, "out"))
        in_container = isinstance(self.model.get_submodule(_parent_of(path)), _CONTAINERS)
        return [
            _Atom("half", seg, tap, path, True, in_container, extra)
            for seg, tap, extra in zip(segments, taps, extras)
        ]


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


# ----------------------------------------------------------------------------------------------
# Step 3: grouping atoms into stem, blocks, head


def _group(atoms: list[_Atom], rec: _Recorder) -> list[tuple[str, list[_Atom]]]:
    """Return ``[(role, atoms)]`` with role ``stem`` / ``body`` / ``head``."""
    bodyish = [i for i, a in enumerate(atoms) if a.role == "half" or (a.role == "unit" and (a.merging or a.in_container))]
    if not bodyish:
        return _group_plain(atoms, rec)
    start = bodyish[0]
    while start < len(atoms) and _STEM_NAMES.match(atoms[start].members[0].split(".")[0]):
        start += 1  # a root child named "stem" is the stem, whatever blocks it is built from
    if start == len(atoms):
        start = bodyish[0]
    cut = _pooled_from(atoms, rec, start)  # pooled features (B, C) are the head's, whatever reads them
    last = max(i for i, a in enumerate(atoms[:cut]) if a.role != "layer")
    groups: list[tuple[str, list[_Atom]]] = []
    while 0 < start < last and _is_glue(rec, atoms[start]):
        start += 1  # a parameter-free identity opening the first stage (an Identity downsample) ends the stem
    if start:
        groups.append(("stem", atoms[:start]))
    unit_parents = {p for a in atoms if a.role != "layer" for p in _ancestors(a.members[0])}
    body: list[tuple[str, list[_Atom]]] = []
    for a in atoms[start:last + 1]:
        if a.role != "layer":
            body.append(("body", [a]))
        elif body and (
            (body[-1][1][0].role == "layer" and body[-1][1][0].parent == a.parent)
            or not (_has_params(rec, a) or _reduces(rec, a))  # an Identity / dropout between blocks
        ):
            body[-1][1].append(a)
        else:
            body.append(("body", [a]))
    tail: list[list[_Atom]] = []
    for a in atoms[last + 1:]:
        if tail and tail[-1][0].parent == a.parent:
            tail[-1].append(a)
        else:
            tail.append([a])
    head_from, strided_before = 0, False
    pooled = set(map(id, atoms[cut:]))
    for i, run in enumerate(tail):
        if any(id(a) in pooled for a in run):
            break  # a run reaching the pooled features is the head's (MobileNetV3's conv_head on 1x1)
        if not any(_has_params(rec, a) for a in run):
            continue  # parameter-free glue decides nothing: it joins whichever side follows
        has_main = any(_has_main(rec, a) for a in run)
        inside = any(p and p in unit_parents for p in _ancestors(run[0].parent)[1:] + [run[0].parent])
        span = _Atom("layer", [run[0].members[0], run[-1].members[-1]], run[-1].tap, run[0].parent)
        strided = _reduces(rec, span)
        still_map = strided_before and _output_area(rec, span) > 1
        if has_main and (inside or strided or still_map):  # strided convs after the last block keep
            head_from, strided_before = i + 1, strided_before or strided  # a map: a stage (SelecSLS)
        else:
            break
    glue: list[_Atom] = []
    for run in tail[:head_from]:  # parameter-free glue joins the run that follows (SelecSLS's from_seq)
        if any(_has_params(rec, a) for a in run):
            body.append(("body", glue + run))
            glue = []
        else:
            glue += run
    head = [a for run in tail[head_from:] for a in run]
    groups += body
    if head:
        groups.append(("head", head))
    return groups


def _pooled_from(atoms: list[_Atom], rec: _Recorder, start: int) -> int:
    """Index of the first atom after `start` that reads or writes one vector per sample (B, C):
    pooled features, which only the head processes (a classifier with its own residual, as
    RepViT's distillation average, or an MLP, as MetaFormer's; an attention-pooling head);
    ``len(atoms)`` when there is none."""
    for i in range(start + 1, len(atoms)):
        path, side = atoms[i].tap
        call = rec.calls[path]
        outs = tensor_leaves(call.args if side == "in" else call.output)
        if _first_input_ndim(rec, atoms[i]) in (1, 2) or (outs and outs[0].ndim <= 2):
            return i
    return len(atoms)


def _is_glue(rec: _Recorder, a: _Atom) -> bool:
    """A parameter-free layer that keeps the grid (Identity, dropout): it decides no block."""
    return a.role == "layer" and not _has_params(rec, a) and not _reduces(rec, a)


def _group_plain(atoms: list[_Atom], rec: _Recorder) -> list[tuple[str, list[_Atom]]]:
    """A network of plain layers (VGG, AlexNet): a block per conv/linear layer or pooling step."""
    segments: list[list[_Atom]] = []
    for a in atoms:
        flat = _first_input_ndim(rec, a) == 2
        starts = _has_main(rec, a) or _reduces(rec, a) or (flat and _first_input_ndim(rec, segments[-1][0]) != 2 if segments else True)
        if segments and not starts:
            segments[-1].append(a)
        else:
            segments.append([a])
    groups: list[tuple[str, list[_Atom]]] = []
    head_at = next((i for i, s in enumerate(segments) if _first_input_ndim(rec, s[0]) == 2 or _collapses(rec, s)),
                   len(segments))
    if head_at > 1:
        groups.append(("stem", segments[0]))
        groups += [("body", s) for s in segments[1:head_at]]
    else:
        groups += [("body", s) for s in segments[:head_at]]
    if head_at < len(segments):
        groups.append(("head", [a for s in segments[head_at:] for a in s]))
    return groups


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts))]


def _has_main(rec: _Recorder, a: _Atom) -> bool:
    return any(_main_layers(rec.model.get_submodule(m)) for m in a.members)


def _has_params(rec: _Recorder, a: _Atom) -> bool:
    return bool(a.extra) or any(True for m in a.members for _ in rec.model.get_submodule(m).parameters())


def _first_input_ndim(rec: _Recorder, a: _Atom) -> int:
    ts = tensor_leaves(rec.calls[a.members[0]].args)
    return ts[0].ndim if ts else 0


def _collapses(rec: _Recorder, segment: list[_Atom]) -> bool:
    """A convolution used as a fully connected layer: a map larger than 1x1 in, 1x1 out (VGG's
    pre-logits ConvMlp)."""
    ins = tensor_leaves(rec.calls[segment[0].members[0]].args)
    outs = tensor_leaves(rec.calls[segment[-1].members[-1]].output)
    return bool(ins and outs and ins[0].ndim == 4 and outs[0].ndim == 4
                and ins[0].shape[-2:].numel() > 1 and outs[0].shape[-2:].numel() == 1)


def _output_area(rec: _Recorder, a: _Atom) -> int:
    outs = tensor_leaves(rec.calls[a.members[-1]].output)
    return int(outs[0].shape[-2:].numel()) if outs and outs[0].ndim == 4 else 0


def _reduces(rec: _Recorder, a: _Atom) -> bool:
    ins = tensor_leaves(rec.calls[a.members[0]].args)
    outs = tensor_leaves(rec.calls[a.members[-1]].output)
    return bool(ins and outs and ins[0].ndim == 4 and outs[0].ndim == 4 and outs[0].shape[-2:].numel() < ins[0].shape[-2:].numel())


# ----------------------------------------------------------------------------------------------
# Step 4: shapes, layouts, kinds, stages


def _spatial(shape: Sequence[int], img_hw: tuple[int, int], prefix_hint: int) -> tuple[str | None, tuple[int, int] | None, int]:
    """Guess the layout of a block output: ``(layout, (H, W), prefix tokens)``.

    A 4-D tensor is NCHW or NHWC, whichever pair of dims has the input's aspect ratio (NCHW on a
    tie); a 3-D tensor (B, N, C) is a token sequence when N minus a few prefix tokens factors into
    a grid of that aspect ratio.
    """
    H, W = img_hw

    def plausible(h: int, w: int) -> bool:
        return 1 <= h <= H and 1 <= w <= W and abs(math.log((H / h) / (W / w))) < 0.25

    if len(shape) == 4:
        for layout, hw in (("NCHW", (shape[2], shape[3])), ("NHWC", (shape[1], shape[2]))):
            if plausible(*hw):
                return layout, hw, 0
        layout, hw, _ = _spatial((shape[0], shape[1] * shape[2], shape[3]), img_hw, 0)
        # (B, windows, tokens per window, C): NesT's nested blocks
        return ("BTNC", hw, 0) if layout else (None, None, 0)
    if len(shape) == 3 and shape[1] > 1:  # (B, 1, C) is a lone class token (CaiT), not a map
        candidates = []  # (aspect error, preference, prefix, h, w): the best-fitting grid wins
        for rank, p in enumerate(dict.fromkeys([prefix_hint, *range(9)])):
            tokens = shape[1] - p
            h = max(1, round(math.sqrt(max(tokens, 1) * H / W)))
            for hh in (h - 1, h, h + 1):
                if tokens >= 1 and hh >= 1 and tokens % hh == 0 and plausible(hh, tokens // hh):
                    candidates.append((round(abs(math.log((H / hh) / (W / (tokens // hh)))), 6), rank, p, hh, tokens // hh))
        if candidates:
            _, _, p, hh, ww = min(candidates)
            return "NLC", (hh, ww), p
    return None, None, 0


def _is_attention(mod: nn.Module) -> bool:
    name = type(mod).__name__
    if isinstance(mod, nn.MultiheadAttention):
        return True
    if re.search(r"attention|attn|msa", name, re.I) and not _NOT_ATTENTION.search(name):
        return True
    return isinstance(getattr(mod, "qkv", None), nn.Module)


def _kind(model: nn.Module, members: Sequence[str], merging: bool, downsamples: bool) -> str:
    mods = [m for p in members for m in model.get_submodule(p).modules()]
    if downsamples and all(_DOWNSAMPLE_NAMES.search(".".join(p.split(".")[-2:])) for p in members):
        return "downsample"  # a module named for it (timm's `downsample`, Swin's `reduction`), whatever inside
    if any(_is_attention(m) for m in mods):
        return "msa"
    convs = [m for m in mods if isinstance(m, nn.modules.conv._ConvNd)]
    mains = [m for m in mods if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if downsamples and not merging and (len(mains) <= 1 or any(_DOWNSAMPLE_NAMES.search(p) for p in members)):
        return "downsample"
    if any(math.prod(c.kernel_size) > 1 for c in convs):
        return "conv"
    if mains:
        return "mlp"
    return "downsample" if downsamples else "other"


def _label(members: Sequence[str], model: nn.Module, half: bool) -> str:
    if len(members) == 1:
        return members[0]
    if half:
        sizes = [sum(p.numel() for p in model.get_submodule(m).parameters()) for m in members]
        return members[max(range(len(members)), key=sizes.__getitem__)]
    return "+".join(members) if len(members) <= 4 else f"{members[0]}+...+{members[-1]}"


def _first_shape(value: Any) -> tuple[int, ...]:
    ts = tensor_leaves(value)
    return tuple(ts[0].shape) if ts else ()


# ----------------------------------------------------------------------------------------------
# The entry point


def graph(model: nn.Module, *, input_size: Sequence[int] | None = None) -> BlockGraph:
    """Build the block graph of `model` (which is left exactly as it was).

    Args:
        model: any timm or torchvision classifier (or a model edited by surgeon).
        input_size: (C, H, W) of one input; default: the size the model records (trained or
            edited at, `surgeon.models.input_size_of`), else its own (timm's pretrained_cfg,
            torchvision's weight transforms, else 3x224x224).
    """
    size = tuple(int(s) for s in (input_size or input_size_of(model)))
    if len(size) != 3 or min(size) < 1:
        raise SurgeonError(f"input size {size} is not C,H,W with positive sizes; e.g. input_size=3,224,224")
    ref = next(itertools.chain(model.parameters(), model.buffers()), None)
    device, dtype = model_device(model), (ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
    x = torch.randn(1, *size, device=device, dtype=dtype)
    with _attributes_restored(model):  # train/eval flags, and attributes forwards and traces write
        model.eval()
        rec = _record(model, x)
        atoms = _Discovery(model, rec).run()
        blocks = _make_blocks(model, rec, atoms, size)
        method, module, reason = _block_module(model, blocks, rec.calls[""])
    return BlockGraph(model, module, method, blocks, size, reason)


@contextmanager
def _on_meta(model: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer for a meta tensor of the same shape, in place, and put the
    originals back afterwards (torch.func.functional_call leaves modules registered under two
    names on the meta device)."""
    saved = []
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for k, t in store.items():
                if t is not None:
                    saved.append((store, k, t))
                    meta = torch.empty_like(t, device="meta")
                    store[k] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        yield
    finally:
        for store, k, t in saved:
            store[k] = t


@contextmanager
def _attributes_restored(model: nn.Module) -> Iterator[None]:
    """Put back every plain attribute of every module as it was: the train/eval flags, and
    whatever a forward or an FX trace writes (caches of masks or position biases, which would
    otherwise keep meta tensors or proxies): analysis leaves the model as it was."""
    saved = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for m, before in saved:
            now = vars(m)
            for k in [k for k in now if k not in before]:
                del now[k]
            now.update((k, v) for k, v in before.items() if now.get(k) is not v)


def _record(model: nn.Module, x: torch.Tensor) -> _Recorder:
    """Run the recorded forward on the meta device (shapes only, no arithmetic: the model's
    tensors are swapped for meta ones, nothing is copied); a model that needs real values
    (data-dependent control flow, CPU constants) gets a real forward instead."""
    with torch.no_grad():
        try:
            rec = _Recorder(model)
            with _on_meta(model), rec, rec.flops:
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


def _make_blocks(model: nn.Module, rec: _Recorder, atoms: list[_Atom], size: tuple[int, int, int]) -> list[Block]:
    img_hw = (size[1], size[2])
    prefix_hint = int(getattr(model, "num_prefix_tokens", 0) or 0)
    params_of = {n: p.numel() for n, p in model.named_parameters()}
    raw = []
    for role, group in _group(atoms, rec):
        members = [m for a in group for m in a.members]
        tap_path, tap_side = group[-1].tap
        call = rec.calls[tap_path]
        out = call.args if tap_side == "in" else call.output
        out_shape = _first_shape(out)
        in_shape = _first_shape(rec.calls[members[0]].args)
        params = sum(p.numel() for m in members for p in model.get_submodule(m).parameters())
        params += sum(params_of.get(e, 0) for a in group for e in a.extra)
        flops = sum(rec.flops.per_module.get(m, 0) for m in members)
        layout, grid, prefix = _spatial(out_shape, img_hw, prefix_hint)
        in_layout, in_grid, _ = _spatial(in_shape, img_hw, prefix_hint)
        downsamples = bool(grid and in_grid and grid[0] * grid[1] < in_grid[0] * in_grid[1])
        merging = any(a.merging for a in group)
        kind = role if role != "body" else _kind(model, members, merging, downsamples)
        raw.append((role, members, kind, (tap_path, tap_side), in_shape, out_shape, layout, grid, prefix,
                    params, flops, downsamples, len(group) == 1 and group[0].role == "half"))
    blocks: list[Block] = []
    stage, area, count = 0, None, 0
    for role, members, kind, tap, in_shape, out_shape, layout, grid, prefix, params, flops, down, half in raw:
        if role == "body":
            a = grid[0] * grid[1] if grid else None
            if stage == 0 or (a is not None and area is not None and a < 0.75 * area):  # a real stride, not a
                # "valid" convolution trimming a border (Inception 73 -> 71)
                stage, count = stage + 1, 0
            if a is not None and (area is None or a < area):
                area = a
            address, stage_name = f"c{stage}.b{count}", f"c{stage}"
            count += 1
        else:
            address, stage_name = role, None
        blocks.append(Block(address, _label(members, model, half), tuple(members), kind, stage_name, tap,
                            in_shape, out_shape, layout, grid, prefix, params, flops, down))
    for i, b in enumerate(blocks):
        b.depth = i / max(len(blocks) - 1, 1)
    return blocks


def _block_module(model: nn.Module, blocks: list[Block], call: _Call) -> tuple[str, nn.Module, str | None]:
    """Trace `model` with the blocks' modules as leaves; fall back to the model itself."""
    leaves = {m for b in blocks for m in b.members}
    try:
        g = symbolic_trace(model, leaf=lambda m, q: q in leaves, concrete_args=_concrete_args(model, call))
        return "fx", graph_module(model, g), None
    except Exception as exc:  # noqa: BLE001 - FX raises many types; all mean "not traceable"
        return "eager", model, f"{type(exc).__name__}: {first_line(exc, 200)}"


def feature_info_mismatch(g: BlockGraph, feature_info: Sequence[dict] | None = None) -> str | None:
    """Compare the graph's stages with timm's ``feature_info`` (an independent account of stages).

    Entries inside the stem are dropped and the rest grouped by reduction; group i must end in
    stage ``c{i+1}``: its last module lies in that stage's blocks (or in the head, which counts
    for the last stage, as timm lists e.g. DenseNet's final norm). Returns None when they agree,
    a reason starting with ``n/a:`` when feature_info names modules the model does not have, else
    a one-line reason. Models without feature_info agree trivially.
    """
    info = list(feature_info if feature_info is not None else getattr(g.model, "feature_info", None) or [])
    info = [dict(f) for f in info]
    if not info:
        return None
    names = dict(g.model.named_modules())
    absent = [f["module"] for f in info if f["module"] and f["module"] not in names]
    if absent:  # timm's metadata names modules the model does not have (Twins, MViTv2: 'block.0')
        return f"n/a: feature_info names modules the model lacks ({', '.join(absent[:2])})"
    stem = next((b for b in g.blocks if b.address == "stem"), None)

    def owner(module: str) -> Block | None:
        hits = [b for b in g.blocks if any(m == module or m.startswith(module + ".") or module.startswith(m + ".")
                                           for m in b.members)]
        return hits[-1] if hits else None

    def reduction(b: Block) -> float:
        return g.input_size[1] / b.grid[0] if b.grid else float("inf")

    def place(f: dict) -> Block | None:
        """The block whose output a feature_info entry reads. timm sometimes names a point inside
        a strided block, before its stride (Xception's ``blocks.1.stack.act3``): that is the
        output of the previous block."""
        b = owner(f["module"])
        if b is not None and f["module"] not in b.members and reduction(b) > f["reduction"] * 1.5:
            i = g.blocks.index(b)
            return g.blocks[i - 1] if i else b
        return b

    groups: list[tuple[int, str]] = []
    info = [f for f in info if f["module"]]  # '' (the input itself, TResNet) is no stage
    for f in info:
        b = place(f)
        if b is stem:
            continue
        if groups and groups[-1][0] == f["reduction"]:
            groups[-1] = (f["reduction"], f["module"])
        else:
            groups.append((f["reduction"], f["module"]))
    stages = list(g.stages)
    # Some timm families list a stage kept at the stem's resolution (EfficientNet's blocks.0),
    # others fold it into the stem (GhostNet): an unlisted stage at the stem's grid is not a miss.
    owners = {id(place(f)) for f in info}
    while (len(stages) > len(groups) and stem is not None and stem.grid is not None
           and g.stages[stages[0]][-1].grid == stem.grid
           and not any(id(b) in owners for b in g.stages[stages[0]])):
        stages.pop(0)
    if len(groups) != len(stages):
        return f"{len(stages)} stages vs {len(groups)} feature_info levels {[r for r, _ in groups]}"
    by_module = {f["module"]: f for f in info}
    for (red, module), stage in zip(groups, stages):
        b = place(by_module[module])
        if b is None:
            return f"feature module {module!r} is in no block"
        got = b.stage if b.stage is not None else (stages[-1] if b.address == "head" else None)
        if got != stage:
            return f"feature module {module!r} (reduction {red}) ends {got}, expected {stage}"
    return None
