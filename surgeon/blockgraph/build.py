"""The entry point `graph`: record, discover, group, number the stages, and trace the block module;
the model's attributes (train/eval flags, caches) are put back as they were."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.sizes import input_size_of
from surgeon.model.runtime import model_device
from surgeon.blockgraph.block import Block
from surgeon.blockgraph.blockgraph import BlockGraph
from surgeon.blockgraph.declared import ATTRIBUTE, Declared, declared_atoms
from surgeon.blockgraph.discovery import _Atom, _Discovery
from surgeon.blockgraph.fx import graph_module, symbolic_trace, tensor_leaves
from surgeon.blockgraph.grouping import _group
from surgeon.blockgraph.kinds import _kind
from surgeon.blockgraph.layout import _spatial
from surgeon.blockgraph.merges import _concrete_args
from surgeon.model.runtime import on_meta
from surgeon.blockgraph.record import _Call, _Recorder, _record


def graph(model: nn.Module, *, input_size: Sequence[int] | None = None, blocks: Declared | None = None) -> BlockGraph:
    """Build the block graph of `model` (which is left exactly as it was).

    Args:
        model: any timm / torchvision / transformers classifier or user-written module (or a
            model edited by surgeon).
        input_size: (C, H, W) of one input; default: the size the model records (trained or
            edited at, `surgeon.models.input_size_of`), else its own (timm's pretrained_cfg,
            torchvision's weight transforms, else 3x224x224).
        blocks: declared blocks, for a model no rule understands: module paths, or a function
            ``(path, module) -> bool``; default: ``model.surgeon_blocks`` when the model has it,
            else the rules (`surgeon.blockgraph.declared`).
    """
    if blocks is None:
        blocks = getattr(model, ATTRIBUTE, None)
    size = tuple(int(s) for s in (input_size or input_size_of(model)))
    if len(size) != 3 or min(size) < 1:
        raise SurgeonError(f"input size {size} is not C,H,W with positive sizes; e.g. input_size=3,224,224")
    ref = next(itertools.chain(model.parameters(), model.buffers()), None)
    device, dtype = model_device(model), (ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
    x = torch.randn(1, *size, device=device, dtype=dtype)
    with _attributes_restored(model):  # train/eval flags, and attributes forwards and traces write
        model.eval()
        rec = _record(model, x)
        atoms = _Discovery(model, rec).run() if blocks is None else declared_atoms(model, rec, blocks)
        blocks = _make_blocks(model, rec, atoms, size)
        _check_resolution(model, blocks, size)
        verify = type(model).__module__.split(".")[0] not in ("timm", "torchvision")  # theirs: the bench's
        if verify:
            _check_head(model, blocks, rec)
        method, module, reason = _block_module(model, blocks, rec.calls[""], x if verify else None)
    return BlockGraph(model, module, method, blocks, size, reason)


def _check_resolution(model: nn.Module, blocks: Sequence[Block], size: tuple[int, ...]) -> None:
    """Refuse an input that the stem shrinks to one pixel: every body block then sees a 1 x 1 map,
    and the stages, told apart by their map size, would merge into one (``3,2,2`` numbered a whole
    ResNet as stage c1)."""
    body = [b for b in blocks if b.stage is not None]
    if tuple(size[1:]) != (1, 1) and body and all(b.grid == (1, 1) for b in body):
        own = ",".join(map(str, input_size_of(model)))
        raise SurgeonError(f"input {'x'.join(map(str, size))} is too small for this model: its maps are 1x1 from the "
                           f"first block on, so its stages cannot be told apart; give a larger input, e.g. its own "
                           f"input_size={own}")


def _check_head(model: nn.Module, blocks: Sequence[Block], rec: _Recorder) -> None:
    """Refuse a classifier (one vector per sample out) whose head no rule finds (transformers'
    Perceiver decodes its logits by cross-attention): a graph without its head would be wrong.
    (timm / torchvision models are checked by bench/graph_coverage.py's invariants instead.)"""
    out = tensor_leaves(rec.calls[""].output)
    if blocks and blocks[-1].address != "head" and out and out[0].ndim == 2:
        raise SurgeonError(f"cannot tell the head of {type(model).__name__} (its last block {blocks[-1].path} is no "
                           "classifier head); declare its blocks: surgeon.graph(model, blocks=[module paths])")


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
        layout, grid, prefix = _read(out_shape, img_hw, prefix_hint, group[-1].regrouped)
        in_layout, in_grid, _ = _read(in_shape, img_hw, prefix_hint, -1 if group[0].regrouped_in else group[0].regrouped)
        downsamples = bool(grid and in_grid and grid[0] * grid[1] < in_grid[0] * in_grid[1])
        merging = any(a.merging for a in group)
        half = len(group) == 1 and group[0].role == "half"
        kind = role if role != "body" else _body_kind(model, members, merging, downsamples, half)
        raw.append((role, members, kind, (tap_path, tap_side), in_shape, out_shape, layout, grid, prefix,
                    params, flops, downsamples, half, all(a.side for a in group),
                    next((a.reads for a in group if a.reads), None)))
    blocks: list[Block] = []
    stage, area, count = 0, None, 0
    for role, members, kind, tap, in_shape, out_shape, layout, grid, prefix, params, flops, down, half, side, reads in raw:
        if role == "body":
            a = grid[0] * grid[1] if grid and not side else None  # a side input's map sets no stage
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
                            in_shape, out_shape, layout, grid, prefix, params, flops, down, reads=reads))
    for i, b in enumerate(blocks):
        b.depth = i / max(len(blocks) - 1, 1)
    return blocks


def _read(shape: tuple[int, ...], img_hw: tuple[int, int], prefix_hint: int,
          regrouped: int) -> tuple[str | None, tuple[int, int] | None, int]:
    """`layout._spatial` of a tensor; one that regroups a map of `regrouped` positions (patches
    unfolded by the parent's code) reads only as (B, windows, tokens, C) windows of tokens over
    exactly those positions (NesT's blockify), else as no map (MobileViT's patches): which
    positions a patch tensor holds is not guessed from its shape."""
    if not regrouped:
        return _spatial(shape, img_hw, prefix_hint)
    if len(shape) == 4:
        layout, grid, _ = _spatial((shape[0], shape[1] * shape[2], shape[3]), img_hw, 0)
        if layout and grid[0] * grid[1] == shape[1] * shape[2] == regrouped:
            return "BTNC", grid, 0
    return None, None, 0


def _body_kind(model: nn.Module, members: Sequence[str], merging: bool, downsamples: bool, half: bool) -> str:
    """`kinds._kind` of a body block; a residual half with a small spatial conv beside its MLP
    (TinyViT's ``local_conv`` before ``mlp``) is the kind of its largest member."""
    kind = _kind(model, members, merging, downsamples)
    if half and kind == "conv" and len(members) > 1:
        largest = max(members, key=lambda m: sum(p.numel() for p in model.get_submodule(m).parameters()))
        return _kind(model, [largest], merging, downsamples)
    return kind


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


def _block_module(model: nn.Module, blocks: list[Block], call: _Call,
                  x: torch.Tensor | None) -> tuple[str, nn.Module, str | None]:
    """Trace `model` with the blocks' modules as leaves and, given the input `x`, run the result once
    (on the meta device when the recording ran there): a trace that took a branch this input does
    not take (a None specialised away: transformers' Hiera) fails there. Fall back to the model
    itself. (timm / torchvision traces are checked for exactness by bench/graph_coverage.py.)"""
    leaves = {m for b in blocks for m in b.members}
    try:
        g = symbolic_trace(model, leaf=lambda m, q: q in leaves, concrete_args=_concrete_args(model, call))
        gm = graph_module(model, g)
        meta = any(t.device.type == "meta" for t in tensor_leaves(call.args))
        if x is not None:
            with torch.no_grad(), (on_meta(gm) if meta else nullcontext()):
                gm(torch.empty_like(x, device="meta") if meta else x)
        return "fx", gm, None
    except Exception as exc:  # noqa: BLE001 - FX raises many types; all mean "not traceable"
        return "eager", model, f"{type(exc).__name__}: {first_line(exc, 200)}"
