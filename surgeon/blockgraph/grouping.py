"""Step 3: group the atoms into stem, body blocks and head (the rules for stems, heads, runs of
layers between blocks such as downsampling, and networks of plain layers)."""

from __future__ import annotations

import re

from surgeon.blockgraph.discovery import _Atom, _main_layers
from surgeon.blockgraph.fx import tensor_leaves
from surgeon.blockgraph.record import _Recorder

_STEM_NAMES = re.compile(r"^(stem|stem_\w+|conv_stem|patch_embed)$")


def _group(atoms: list[_Atom], rec: _Recorder) -> list[tuple[str, list[_Atom]]]:
    """Return ``[(role, atoms)]`` with role ``stem`` / ``body`` / ``head``: the stem up to the
    first block (`_stem_end`), the body's blocks up to the last unit before the pooled features,
    then the runs after it that still hold a stage (`_stage_runs`), and the rest as the head."""
    bodyish = [i for i, a in enumerate(atoms) if a.role == "half" or (a.role == "unit" and (a.merging or a.in_container))]
    if not bodyish:
        return _group_plain(atoms, rec)
    start = _stem_end(atoms, bodyish[0])
    cut = _pooled_from(atoms, rec, start)  # pooled features (B, C) are the head's, whatever reads them
    last = max(i for i, a in enumerate(atoms[:cut]) if a.role != "layer" or _inserted(rec, a))
    while 0 < start < last and _is_glue(rec, atoms[start]):
        start += 1  # a parameter-free identity opening the first stage (an Identity downsample) ends the stem
    groups: list[tuple[str, list[_Atom]]] = [("stem", atoms[:start])] if start else []
    unit_parents = {p for a in atoms if a.role != "layer" for p in _ancestors(a.members[0])}
    body = _body_groups(rec, atoms[start:last + 1])
    tail = _runs_by_parent(atoms[last + 1:])
    head_from = _stage_runs(rec, tail, set(map(id, atoms[cut:])), unit_parents)
    body += _joined_glue(rec, tail[:head_from])
    head = [a for run in tail[head_from:] for a in run]
    groups += body
    if head:
        groups.append(("head", head))
    return groups


def _stem_end(atoms: list[_Atom], first: int) -> int:
    """Where the body starts: at the first block-like atom `first`, unless root children named
    like a stem follow (a root child named "stem" is the stem, whatever blocks it is built from;
    if only such children are left, at `first` after all)."""
    start = first
    while start < len(atoms) and _STEM_NAMES.match(atoms[start].members[0].split(".")[0]):
        start += 1
    return first if start == len(atoms) else start


def _body_groups(rec: _Recorder, atoms: list[_Atom]) -> list[tuple[str, list[_Atom]]]:
    """The body's blocks: each unit its own block; consecutive plain layers of one parent form one
    block, and a layer without parameters that does not reduce (an Identity / dropout between
    blocks) joins the block before it."""
    body: list[tuple[str, list[_Atom]]] = []
    for a in atoms:
        if a.role != "layer":
            body.append(("body", [a]))
        elif body and (
            (body[-1][1][0].role == "layer" and body[-1][1][0].parent == a.parent)
            or not (_has_params(rec, a) or _reduces(rec, a))
        ):
            body[-1][1].append(a)
        else:
            body.append(("body", [a]))
    return body


def _runs_by_parent(atoms: list[_Atom]) -> list[list[_Atom]]:
    """Consecutive atoms with the same parent module, as runs."""
    runs: list[list[_Atom]] = []
    for a in atoms:
        if runs and runs[-1][0].parent == a.parent:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def _stage_runs(rec: _Recorder, tail: list[list[_Atom]], pooled: set[int], unit_parents: set[str]) -> int:
    """How many runs after the last block still belong to the body: a run with a main layer that
    lies inside a unit's parent, is strided, or follows a strided run on a map larger than 1x1
    (strided convs after the last block keep a map: a stage, SelecSLS). Parameter-free glue
    decides nothing (it joins whichever side follows); a run reaching the pooled features
    (`pooled`: ids of atoms) is the head's (MobileNetV3's conv_head on 1x1)."""
    head_from, strided_before = 0, False
    for i, run in enumerate(tail):
        if any(id(a) in pooled for a in run):
            break
        if not any(_has_params(rec, a) for a in run):
            continue
        has_main = any(_has_main(rec, a) for a in run)
        inside = any(p and p in unit_parents for p in _ancestors(run[0].parent)[1:] + [run[0].parent])
        span = _Atom("layer", [run[0].members[0], run[-1].members[-1]], run[-1].tap, run[0].parent)
        strided = _reduces(rec, span)
        still_map = strided_before and _output_area(rec, span) > 1
        if has_main and (inside or strided or still_map):
            head_from, strided_before = i + 1, strided_before or strided
        else:
            break
    return head_from


def _joined_glue(rec: _Recorder, runs: list[list[_Atom]]) -> list[tuple[str, list[_Atom]]]:
    """The body's blocks made of `runs`: parameter-free glue joins the run that follows
    (SelecSLS's from_seq)."""
    out: list[tuple[str, list[_Atom]]] = []
    glue: list[_Atom] = []
    for run in runs:
        if any(_has_params(rec, a) for a in run):
            out.append(("body", glue + run))
            glue = []
        else:
            glue += run
    return out


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


def _inserted(rec: _Recorder, a: _Atom) -> bool:
    """A block a surgery pass inserted (a `surgeon.layers` block: smoothing, MSA, a token-grid
    wrapper): it belongs to the body, with the block it follows, never to the head."""
    from surgeon.layers import MSABlock, SpatialSmoothing, TokenGrid

    return isinstance(rec.model.get_submodule(a.members[0]), (MSABlock, SpatialSmoothing, TokenGrid))


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
