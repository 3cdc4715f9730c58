"""Step 2 of discovery, between a module's parts: which module calls of its one-level graph run
an atom, which halves are fed a map their parent's code regroups (MobileViT's patches: no map to
read, `mark_regrouped`) and which parts read a value other than the previous part's output (a
fusion with the block's input, a second stream: `mark_reads`, `Block.reads`). Atoms are
`discovery._Atom`s (duck-typed here: this module sits below `discovery`)."""

from __future__ import annotations

from typing import Any

from torch import fx

from surgeon.blockgraph.fx import tensor_leaves
from surgeon.blockgraph.layout import _spatial
from surgeon.blockgraph.merges import _producers, _regrouped_from
from surgeon.blockgraph.record import _Recorder


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def nodes_of(path: str, graph: fx.Graph, atom: Any) -> set[fx.Node]:
    """The module calls of `path`'s graph that run `atom` (its members, or a container of them)."""
    def owns(t: str) -> bool:
        return any(m == t or m.startswith(t + ".") or t.startswith(m + ".") for m in atom.members)
    return {n for n in graph.nodes if n.op == "call_module" and owns(_join(path, n.target))}


def mark_regrouped(rec: _Recorder, path: str, graph: fx.Graph, atoms: list, by_shape: bool = False) -> None:
    """Halves whose module is fed a map regrouped by the parent's own code (`_regrouped_from`:
    MobileViT unfolds its map into patches, (B * P, N, C) in v1, (B, C, P, N) in v2) record the
    positions of that map: their tensors read as a map only as NesT's windows of tokens over
    exactly those positions (`build._read`), else as none, so surgeon never guesses which
    positions patches hold. The part after them gets a regrouped input (it folds them back).
    With `by_shape` (in any descent) only when the halves' input does not read as a map or
    tokens over the same number of positions: a stage that views its map as tokens
    (transformers' CvT: ``view(B, C, H * W).permute(0, 2, 1)``) keeps its reading. The halves
    one module call runs (a container of layers) are decided once, at its input."""
    image = tensor_leaves(rec.calls[""].args)[0].shape[-2:]
    done: set[int] = set()
    owned = [nodes_of(path, graph, x) if x.role == "half" else set() for x in atoms]
    for i, atom in enumerate(atoms):
        if atom.role != "half" or i in done:
            continue
        same = [j for j, x in enumerate(owned) if x & owned[i]]
        done.update(same)
        source = next((s for s in map(_regrouped_from, owned[i]) if s is not None), None)
        if source is None:
            continue
        call = rec.calls[path if source.op == "placeholder" else _join(path, source.target)]
        seen = tensor_leaves(call.args if source.op == "placeholder" else call.output)
        layout, grid, _ = _spatial(seen[0].shape, (image[0], image[1]), 0) if seen else (None, None, 0)
        if by_shape and _same_positions(rec, atom, layout, grid, (image[0], image[1])):
            continue
        for j in same:
            atoms[j].regrouped = grid[0] * grid[1] if grid else -1
        if same[-1] + 1 < len(atoms):
            atoms[same[-1] + 1].regrouped_in = True


def _same_positions(rec: _Recorder, atom: Any, source: str | None, grid: tuple[int, int] | None,
                    image: tuple[int, int]) -> bool:
    """The first half's input is the token reading of the `source` map, or the map reading of
    `source` tokens, over `grid`'s positions (a map regrouped into another map's shape,
    MobileViTV2's (B, C, P, N) patches of a P x N map, is not)."""
    ins = tensor_leaves(rec.calls[atom.members[0]].args)
    layout, seen, _ = _spatial(ins[0].shape, image, 0) if ins else (None, None, 0)
    tokens = {layout, source} & {"NLC"} and {layout, source} <= {"NCHW", "NHWC", "NLC"}
    return bool(tokens and grid and seen and seen[0] * seen[1] == grid[0] * grid[1])


def mark_reads(path: str, graph: fx.Graph, atoms: list) -> None:
    """Each part that reads a module call or input of `path`'s graph other than the previous
    part's (the first part: the inputs) records the earliest as `reads`: the module's input
    ``(path, "in")`` or a child's output; a part that does not read the previous part at all
    (a second stream of tokens) computes off the main stream (`side`: it sets no stage)."""
    owned = [nodes_of(path, graph, x) for x in atoms]
    order = {n: i for i, n in enumerate(graph.nodes)}
    for i, atom in enumerate(atoms):
        if i and owned[i] & owned[i - 1]:
            continue  # the next half of the same layer or container
        fed = set().union(*(_producers(n) for n in owned[i])) - owned[i]
        expected = owned[i - 1] if i else {n for n in graph.nodes if n.op == "placeholder"}
        other = sorted(fed - expected, key=order.__getitem__)
        if not other:
            continue
        first = other[0]
        atom.reads = (path, "in") if first.op == "placeholder" else (_join(path, first.target), "out")
        if i and not fed & expected:
            for j, x in enumerate(atoms):
                if owned[j] & owned[i]:
                    x.side = True
