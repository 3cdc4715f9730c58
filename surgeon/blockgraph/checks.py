"""Invariants checked against an independent account: the graph's stages against timm's
``feature_info``."""

from __future__ import annotations

from collections.abc import Sequence

from surgeon.blockgraph.block import Block
from surgeon.blockgraph.blockgraph import BlockGraph


def _owner(g: BlockGraph, module: str) -> Block | None:
    """The last block one of whose members is `module`, contains it or lies inside it."""
    hits = [b for b in g.blocks if any(m == module or m.startswith(module + ".") or module.startswith(m + ".")
                                       for m in b.members)]
    return hits[-1] if hits else None


def _reduction(g: BlockGraph, b: Block) -> float:
    """The block's spatial reduction: input height / the block's grid height (inf without a grid)."""
    return g.input_size[1] / b.grid[0] if b.grid else float("inf")


def _place(g: BlockGraph, f: dict) -> Block | None:
    """The block whose output a feature_info entry reads. timm sometimes names a point inside
    a strided block, before its stride (Xception's ``blocks.1.stack.act3``): that is the
    output of the previous block."""
    b = _owner(g, f["module"])
    if b is not None and f["module"] not in b.members and _reduction(g, b) > f["reduction"] * 1.5:
        i = g.blocks.index(b)
        return g.blocks[i - 1] if i else b
    return b


def _levels(g: BlockGraph, info: list[dict], stem: Block | None) -> list[tuple[int, str]]:
    """feature_info's levels outside the stem: (reduction, the last module at that reduction),
    consecutive entries of one reduction merged."""
    groups: list[tuple[int, str]] = []
    for f in info:
        if _place(g, f) is stem:
            continue
        if groups and groups[-1][0] == f["reduction"]:
            groups[-1] = (f["reduction"], f["module"])
        else:
            groups.append((f["reduction"], f["module"]))
    return groups


def _compared_stages(g: BlockGraph, info: list[dict], stem: Block | None, levels: int) -> list[str]:
    """The graph's stages to compare with `levels` feature_info levels. Some timm families list a
    stage kept at the stem's resolution (EfficientNet's blocks.0), others fold it into the stem
    (GhostNet): a leading stage at the stem's grid that no entry reads is dropped while there are
    more stages than levels."""
    stages = list(g.stages)
    owners = {id(_place(g, f)) for f in info}
    while (len(stages) > levels and stem is not None and stem.grid is not None
           and g.stages[stages[0]][-1].grid == stem.grid
           and not any(id(b) in owners for b in g.stages[stages[0]])):
        stages.pop(0)
    return stages


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
    info = [f for f in info if f["module"]]  # '' (the input itself, TResNet) is no stage
    groups = _levels(g, info, stem)
    stages = _compared_stages(g, info, stem, len(groups))
    if len(groups) != len(stages):
        return f"{len(stages)} stages vs {len(groups)} feature_info levels {[r for r, _ in groups]}"
    by_module = {f["module"]: f for f in info}
    for (red, module), stage in zip(groups, stages):
        b = _place(g, by_module[module])
        if b is None:
            return f"feature module {module!r} is in no block"
        got = b.stage if b.stage is not None else (stages[-1] if b.address == "head" else None)
        if got != stage:
            return f"feature module {module!r} (reduction {red}) ends {got}, expected {stage}"
    return None
