"""Step 2 of discovery, over the model: walk the module tree from the root and cut it into atoms
(plain layers, residual units, transformer halves) from the recorded calls and the merge analysis."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_map

from surgeon.blockgraph.fx import _timm_registries, tensor_leaves
from surgeon.blockgraph.kinds import _DOWNSAMPLE_NAMES, _is_attention, is_conv
from surgeon.blockgraph.layout import _spatial
from surgeon.blockgraph.merges import _Analysis, _analyze, _branch_modules, _depends_on, _downstream_module, _merging_inputs, _returns_sum_of_inputs, _shallow_trace, _side_modules
from surgeon.blockgraph.nesting import _join, mark_reads, mark_regrouped
from surgeon.blockgraph.record import _Call, _Recorder

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


#: The one-level analyses of this process, by the key of `_Discovery._analysis` (a module's class,
#: children, plain settings, forward and call signature: what its one-level graph depends on, since
#: its children are leaves), kept across graphs: the graph of a model after a pass (the CLI's diff
#: table, a search's candidates) re-traces only the modules the pass changed. Read-only once made.
_ANALYSES: dict[tuple, _Analysis] = {}
_ANALYSES_KEPT = 2048


def _children_key(mod: nn.Module) -> tuple:
    """The children of `mod` as its one-level trace sees them: name and class, and for a
    container the same of its own children (a loop over ``self.blocks`` unrolls to as many calls
    as the list holds: two GC ViT stages of one class but 2 and 6 blocks are traced apart)."""
    return tuple((n, type(c), _children_key(c) if isinstance(c, _CONTAINERS) else None)
                 for n, c in mod.named_children())


@dataclass
class _Atom:
    role: str  # "layer" | "unit" | "half"
    members: list[str]
    tap: tuple[str, str]
    parent: str  # path of the module whose chain produced this atom
    merging: bool = False
    in_container: bool = False
    extra: list[str] = field(default_factory=list)  # direct parameters / buffers owned by the atom
    side: bool = False  # computes a side input off the main stream (it does not set the stages)
    reads: tuple[str, str] | None = None  # another value it reads (`Block.reads`)
    regrouped: int = 0  # its tensors regroup the positions of a map (MobileViT's patches): that map's
    # positions (-1: unknown); they read as no map (NesT's windows aside), set no stage
    regrouped_in: bool = False  # its input does (the fold after MobileViT's transformer layers)


def _parent_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _main_layers(mod: nn.Module) -> int:
    return sum(is_conv(m) or isinstance(m, nn.Linear) for m in mod.modules())


class _Discovery:
    def __init__(self, model: nn.Module, rec: _Recorder) -> None:
        self.model = model
        self.rec = rec
        self._cache = _ANALYSES
        # timm / torchvision keep the order of lists of their first walk (their addresses are
        # stable); a few interleave lists (Twins' pos_block, HRNet) and would be renumbered
        self._historical = type(model).__module__.split(".")[0] in ("timm", "torchvision")

    def run(self) -> list[_Atom]:
        return self._visit("", self.model, is_root=True)

    def _analysis(self, mod: nn.Module, call: _Call, run: bool = False) -> _Analysis:
        """`_analyze` of a one-level trace (`run`: of a run, `capture`), shared by modules of the
        same class, children, settings, forward and call (the twelve blocks of a ViT are traced
        once; so is a model's graph after a pass, `_ANALYSES`)."""
        simple = (bool, int, float, str, type(None))
        lengths = self._tuple_lengths(mod, call)
        key = (
            run,
            getattr(mod.forward, "__func__", mod.forward),  # the class's, or one set on the instance
            tuple(sorted(lengths.items())),
            type(mod),
            _children_key(mod),
            tuple(sorted((k, v) for k, v in vars(mod).items() if not k.startswith("_") and isinstance(v, simple))),
            tuple(sorted((n, p.shape) for n, p in itertools.chain(mod.named_parameters(recurse=False),
                                                                   mod.named_buffers(recurse=False)))),
            repr(tree_map(lambda v: ("T", v.ndim) if isinstance(v, torch.Tensor) else v, (call.args, call.kwargs))),
        )
        try:
            hash(key)
        except TypeError:
            return self._with_child_sums(mod, call, _analyze(_shallow_trace(mod, call, lengths, run)))
        if key not in self._cache:
            if len(self._cache) >= _ANALYSES_KEPT:
                self._cache.clear()
            self._cache[key] = self._with_child_sums(mod, call, _analyze(_shallow_trace(mod, call, lengths, run)))
        return self._cache[key]

    def _with_child_sums(self, mod: nn.Module, call: _Call, a: _Analysis) -> _Analysis:
        """A residual sum written one level down: a child called with the stream and a branch
        (``self.output(mlp_out, hidden_states)``) that returns the sum of what it makes of its
        two inputs (transformers' ``CvtOutput``: ``dense(x) + input_tensor``) is a sum of this
        module's graph too, so the layer splits into its two halves."""
        if a.graph is None or not a.adds:
            return a
        path = next((p for p, c in self.rec.calls.items() if c is call), None)
        found = []
        for n in a.graph.nodes:
            if n.op != "call_module" or len(n.all_input_nodes) != 2 or path is None:
                continue
            if not _merging_inputs(n) or a.adds[-1] not in n.all_input_nodes:
                continue
            child = self.rec.calls.get(_join(path, n.target))
            if child is not None and _returns_sum_of_inputs(self._analysis(mod.get_submodule(n.target), child)):
                found.append(n)
        if not found:
            return a
        order = {n: i for i, n in enumerate(a.graph.nodes)}
        merges = sorted(a.merges + found, key=order.__getitem__)
        return _Analysis(a.graph, merges, sorted(a.adds + found, key=order.__getitem__))

    def _tuple_lengths(self, mod: nn.Module, call: _Call) -> dict[str, int]:
        """The children of `mod` whose recorded output is a tuple, with its length."""
        path = next((p for p, c in self.rec.calls.items() if c is call), None)
        if path is None:
            return {}
        out = {}
        for name, _ in mod.named_children():
            child = self.rec.calls.get(_join(path, name))
            if child is not None and isinstance(child.output, tuple):
                out[name] = len(child.output)
        return out

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
        if not is_root and notrace:  # timm's own leaves: its halves when a run finds them (TinyViT's
            # blocks), else a block if it holds several layers
            analysis = self._analysis(mod, call, run=True) if call is not None else None
            halves = self._halves(path, analysis) if analysis is not None else None
            return (halves or (self._nested(path, kids, analysis) if analysis is not None else None)
                    or [self._single("unit" if _main_layers(mod) > 1 else "layer", path)])
        # the root's own graph only finds residual sums written there (user-written nets): timm's
        # and torchvision's roots have none, and are not traced a second time
        analysis = self._analysis(mod, call) if call is not None and not (is_root and self._historical) else None
        if not is_root and analysis is not None:  # (an uncalled ModuleList is a plain sequence)
            if analysis.merges:
                return (self._halves(path, analysis) or self._nested(path, kids, analysis)
                        or [self._single("unit", path, merging=True)])
            shared = any(k in self.rec.calls and self.rec.calls[k].count > call.count for k, _ in kids)
            if shared:
                return [self._single("unit", path)]  # reused children: one block
            if analysis.graph is None and not isinstance(mod, _CONTAINERS):
                return self._untraceable(path, kids)
        atoms = self._descend(path, kids, analysis)
        if atoms:
            atoms[0].extra += self._direct_state(path, mod)
        split = any(a.role == "half" or a.merging for a in atoms)
        if split and not is_root and self._downsampling_module(path) and not self._backbone(mod):
            return [self._single("unit", path)]  # GC ViT's Downsample2d: a residual conv, then a strided one
        if is_root or isinstance(mod, _CONTAINERS) or split or self._backbone(mod):
            return atoms
        return [self._single("unit" if _main_layers(mod) > 1 else "layer", path)]

    def _backbone(self, mod: nn.Module) -> bool:
        """A chain that holds over half the model's parameters and outputs a map, not pooled
        vectors, is the network itself (transformers' base model under its classifier:
        MobileNetV1; EfficientNet's encoder), not one block (a big head, pooled, stays one)."""
        if not hasattr(self, "_total"):
            self._total = sum(p.numel() for p in self.model.parameters())
        call = next((c for p, c in self.rec.calls.items() if p and self.model.get_submodule(p) is mod), None)
        out = tensor_leaves(call.output)[:1] if call is not None else []
        return bool(out) and out[0].ndim > 2 and 2 * sum(p.numel() for p in mod.parameters()) > self._total > 0

    def _untraceable(self, path: str, kids: list[tuple[str, nn.Module]]) -> list[_Atom]:
        """A module FX cannot trace one level deep (its forward branches on data, builds masks,
        dispatches attention...): its children in call order when they hold residual units or
        halves (a transformers encoder, a TinyViT stage), else one block."""
        atoms = self._descend(path, kids, None)
        if any(a.role == "half" or a.merging for a in atoms):
            atoms[0].extra += self._direct_state(path, self.model.get_submodule(path))
            return atoms
        return [self._single("unit", path)]

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

    def _nested(self, path: str, kids: list[tuple[str, nn.Module]], a: _Analysis) -> list[_Atom] | None:
        """A module the rules above keep as one unit (a merge that is no chain of residual halves,
        or one of timm's leaves) whose children hold two or more transformer layers, each split
        into its halves on its own, is cut in call order instead: its layers before the
        transformer layers, each layer's two halves, then the rest, one unit per attention in it
        (MobileViT: ``conv_kxk``, ``conv_1x1``; L x (msa, mlp); ``norm+conv_proj+conv_fusion``.
        CrossViT: each stream's layers; ``projs`` and the first cross-attention; the second).
        Where a part reads a value other than the previous part's output, it says where
        (`nesting.mark_reads`); tokens that regroup the map's positions have no map
        (`nesting.mark_regrouped`).
        None when there are fewer than two layers or other parts sit between them."""
        if a.graph is None:
            return None
        atoms = [x for k, c in kids for x in self._visit(k, c)]
        halves = [i for i, x in enumerate(atoms) if x.role == "half"]
        if len({atoms[i].parent for i in halves}) < 2 or any(x.role != "half" for x in atoms[halves[0]:halves[-1] + 1]):
            return None
        rest: list[list[_Atom]] = []
        for x in self._in_call_order(atoms[halves[-1] + 1:]):
            if not rest or (self._attends(x) and any(self._attends(y) for y in rest[-1])):
                rest.append([x])
            else:
                rest[-1].append(x)
        units = [_Atom("unit", [m for y in run for m in y.members], run[-1].tap, path, True,
                       extra=[e for y in run for e in y.extra]) for run in rest]
        if units:
            units[-1].tap = (path, "out")
        out = atoms[:halves[-1] + 1] + units
        mark_regrouped(self.rec, path, a.graph, out)
        mark_reads(path, a.graph, out)
        return out

    def _attends(self, atom: _Atom) -> bool:
        return any(_is_attention(m) for p in atom.members for m in self.model.get_submodule(p).modules())

    def _descend(self, path: str, kids: list[tuple[str, nn.Module]], analysis: _Analysis | None) -> list[_Atom]:
        """The atoms of `path`'s children in call order. With its one-level graph: residual sums
        written here around whole children become units (`_parent_units`), and the atoms of
        children off the main stream are marked `side`."""
        per_kid = [(k, self._visit(k, c)) for k, c in kids]
        graph = analysis.graph if analysis is not None else None
        if sum(isinstance(c, _CONTAINERS) and k not in self.rec.calls for k, c in kids) >= 2 and not self._historical:
            return self._in_call_order([a for _, atoms in per_kid for a in atoms])
        if graph is None:
            return [a for _, atoms in per_kid for a in atoms]
        per_kid = self._parent_units(path, analysis, per_kid)
        mark_regrouped(self.rec, path, graph, [a for _, atoms in per_kid for a in atoms], by_shape=True)
        side = _side_modules(graph, lambda t: type(self.model.get_submodule(_join(path, t))))
        main = {_join(path, n.target.split(".")[0]) for n in graph.nodes
                if n.op == "call_module" and n.target not in side}
        for k, atoms in per_kid:
            if k not in main and any(_join(path, t.split(".")[0]) == k for t in side):
                for a in atoms:
                    a.side = True
        return [a for _, atoms in per_kid for a in atoms]

    def _in_call_order(self, atoms: list[_Atom]) -> list[_Atom]:
        """Atoms of lists called in turn (PoolFormer: ``patch_embeddings[i]``, then ``block[i]``),
        in call order: by the last first-call among each atom's members."""
        return sorted(atoms, key=lambda a: max(self.rec.calls[m].order for m in a.members))

    def _parent_units(self, path: str, a: _Analysis,
                      per_kid: list[tuple[str, list[_Atom]]]) -> list[tuple[str, list[_Atom]]]:
        """A residual sum written in `path`'s forward around whole children (``x = relu(x +
        self.block1(x))``, a projection shortcut ``self.body(x) + self.short(x)``): the children on
        its branch become one unit, read where the sum is next read at its own shape (the input of
        the next module call) or, for the module's last sum, at its output. A branch of children
        that are split already, are called more than once or hold no parameters stays as it is;
        when one sum cannot be read, no unit is made here."""
        index = {k: i for i, (k, _) in enumerate(per_kid)}
        units: dict[int, _Atom] = {}
        for add in a.adds:
            paths = list(dict.fromkeys(_join(path, n.target) for n in _branch_modules(add)))
            if not paths or any(p not in index for p in paths):
                continue
            atoms = [x for p in paths for x in per_kid[index[p]][1]]
            if (any(x.role == "half" or x.merging or index[p] in units for p in paths for x in per_kid[index[p]][1])
                    or any(self.rec.calls[p].count != self.rec.calls[path].count for p in paths)
                    or not any(True for p in paths for _ in self.model.get_submodule(p).parameters())):
                continue
            tap = self._sum_tap(path, add, paths[-1])
            if tap is None:  # a sum no module reads (pooled by a function right away): the children
                return per_kid  # stay as they are, rather than leave that one unit to the head
            unit = _Atom("unit", sorted(paths, key=index.__getitem__), tap, path, True,
                         extra=[e for x in atoms for e in x.extra])
            for p in paths:
                units[index[p]] = unit
        out: list[tuple[str, list[_Atom]]] = []
        for i, (k, atoms) in enumerate(per_kid):
            if i not in units:
                out.append((k, atoms))
            elif not out or out[-1][1] != [units[i]]:
                out.append((k, [units[i]]))
        return out

    def _sum_tap(self, path: str, add, last: str) -> tuple[str, str] | None:
        """Where the residual sum `add` of `path`'s graph can be read: the input of the next module
        call it feeds when that input has the branch output's shape (``relu(x + block(x))`` read
        by the next block), else `path`'s own output when that is the sum; None otherwise."""
        shape = [tuple(t.shape) for t in tensor_leaves(self.rec.calls[last].output)[:1]]
        consumer = _downstream_module(add)
        if consumer is not None:
            target = _join(path, consumer.target)
            call = self.rec.calls.get(target)
            seen = [tuple(t.shape) for t in tensor_leaves(call.args)[:1]] if call is not None else []
            return (target, "in") if seen and seen == shape and call.count == 1 else None
        out = [n for n in add.graph.nodes if n.op == "output"]
        if path and out and add in out[0].all_input_nodes[:1]:
            return (path, "out")
        return None
