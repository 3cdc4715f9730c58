"""Shapes a pass must keep: `check_shapes` (the one check every pass runs, with one forward at batch
size 1), what an edited module must keep (`_shapes_of`), and the shape of an MSA block that fits in
place of a conv block (`_msa_shape`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line
from surgeon.blockgraph import Block, BlockGraph
from surgeon.model.outputs import logits_of
from surgeon.model.runtime import model_device, on_meta, restored_modes

__all__ = ["check_passes_through", "check_shapes"]


_POST_ACTIVATION = ("Bottleneck", "BasicBlock")  # residual blocks ending in act(x + f(x))


def check_shapes(g: BlockGraph, new: nn.Module, edited: Mapping[str, tuple[str, tuple, tuple]], *,
                 spatial: bool = True) -> None:
    """The one shape check every pass runs: a forward of `new` at batch size 1 must give

    1. each edited module (``edited[path] = (label, in_shape, out_shape)``) the shapes of what it
       replaces (an inserted module: the shape of the map it is inserted into, in and out);
    2. every block of the original graph `g` whose module is still there its input and output
       shapes (with ``spatial=False``, only its channels: the stem pass changes resolutions);
    3. the model's output shape.

    Else a one-line `SurgeonError` names the block and both shapes. `new` is left as it was.
    """
    after, failure, seen = _watched_forward(g, new, edited)
    _check_edited(seen, edited)
    _check_blocks(seen, g, spatial)
    if failure is not None:
        raise _named(failure, seen, g, edited)
    expected = g.blocks[-1].out_shape
    if tuple(after.shape) != tuple(expected):
        raise SurgeonError(f"the edit changed the output shape from {list(expected)} to {list(after.shape)}")


def _watched_forward(g: BlockGraph, new: nn.Module, edited: Mapping[str, tuple[str, tuple, tuple]]
                     ) -> tuple[torch.Tensor | None, SurgeonError | None, dict[tuple[str, str], tuple | None]]:
    """One forward of `new` (`_run_once`) with hooks keeping the first input / output shape of every
    edited module (``("edit:" + path, "in" | "out")``) and of every block of `g` (``("block:" +
    address, ...)``; a block's "out" is read at its tap: a half's output is the next module's
    input). Returns (the logits or None, the forward's failure or None, the shapes seen)."""
    hooks, seen = [], {}

    def record(key: str, slot: str):
        def hook(mod, args, output=None):
            seen.setdefault((key, slot), _first_shape(args if output is None else output))
        return hook

    def watch(path: str, key: str, side: str, slot: str) -> None:
        try:
            mod = new.get_submodule(path)
        except AttributeError:
            return  # the pass removed or renamed this module: its neighbours' shapes are checked instead
        hook = record(key, slot)
        hooks.append(mod.register_forward_pre_hook(hook) if side == "in" else mod.register_forward_hook(hook))

    for path in edited:
        watch(path, "edit:" + path, "in", "in")
        watch(path, "edit:" + path, "out", "out")
    for b in g.blocks:
        watch(b.members[0], "block:" + b.address, "in", "in")
        watch(b.tap[0], "block:" + b.address, b.tap[1], "out")
    try:
        return _run_once(new, g), None, seen
    except SurgeonError as exc:  # the shapes seen before the failure may name the block that caused it
        return None, exc, seen
    finally:
        for h in hooks:
            h.remove()


def _check_edited(seen: dict, edited: Mapping[str, tuple[str, tuple, tuple]]) -> None:
    """Each edited module maps the shapes of what it replaces."""
    for path, (label, want_in, want_out) in edited.items():
        got_in, got_out = seen.get(("edit:" + path, "in")), seen.get(("edit:" + path, "out"))
        if got_in is not None and got_out is not None and (got_in, got_out) != (tuple(want_in), tuple(want_out)):
            raise SurgeonError(f"{label} must map {_dims(want_in)} to {_dims(want_out)}, but the new module maps "
                               f"{_dims(got_in)} to {_dims(got_out)}; give a module that keeps both shapes")


def _check_blocks(seen: dict, g: BlockGraph, spatial: bool) -> None:
    """Every block still there keeps its input and output shapes (only its channels if not `spatial`)."""
    for b in g.blocks:
        got = [seen.get(("block:" + b.address, slot)) for slot in ("in", "out")]
        want = [b.in_shape, b.out_shape]
        if not spatial:
            got = [(1, _channels(s, b.layout)) if s and len(s) > 1 else s for s in got]
            want = [(1, _channels(s, b.layout)) if len(s) > 1 else s for s in want]
        if any(x is not None and tuple(x) != tuple(y) for x, y in zip(got, want)):
            shown = [_dims(x) if x is not None else "?" for x in got]
            raise SurgeonError(f"the edit changes {b.address} ({b.path}) from {_dims(b.in_shape)} -> {_dims(b.out_shape)} "
                               f"to {shown[0]} -> {shown[1]}; a pass must keep every block's shapes")


def _named(failure: SurgeonError, seen: dict, g: BlockGraph, edited: Mapping[str, tuple[str, tuple, tuple]]
           ) -> SurgeonError:
    """The forward's failure, naming the edited module or the innermost block it entered and never left."""
    entered = [(label, seen[("edit:" + path, "in")]) for path, (label, _, _) in edited.items()
               if ("edit:" + path, "in") in seen and ("edit:" + path, "out") not in seen]
    entered += [(f"{b.address} ({b.path})", seen[("block:" + b.address, "in")]) for b in reversed(g.blocks)
                if ("block:" + b.address, "in") in seen and ("block:" + b.address, "out") not in seen]
    if entered:
        return SurgeonError(f"{entered[0][0]} fails on its input {_dims(entered[0][1])}: {failure}")
    return failure


def _shapes_of(original: nn.Module, g: BlockGraph, path: str, block: Block | None) -> dict[str, tuple[str, tuple, tuple]]:
    """What the module at `path` must keep for `check_shapes`: the block's shapes when it is the
    whole block, else (a module inside a block) the module's own shapes in the original model."""
    if block is not None:
        whole = block.members == (path,) and block.tap == (path, "out")
        return {path: (f"{block.address} ({path})", block.in_shape, block.out_shape)} if whole else {}
    shape_in, _, out = _calls_of(original, g, [path])[path]
    shape_out = _first_shape(out)
    if shape_in is None or shape_out is None:
        return {}
    return {path: (f"module {path}", shape_in, shape_out)}


def _calls_of(original: nn.Module, g: BlockGraph, paths: list[str]) -> dict[str, tuple[tuple[int, ...] | None, int, Any]]:
    """For each module path: (the shape of the first tensor the module takes, how many arguments
    it is given, what it returns) on its first call, from one forward of `original` at batch size
    1; (None, 0, None) for a module that is not called."""
    seen: dict[str, tuple] = {}

    def keep(path: str):
        def hook(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:  # None: the output stays
            seen.setdefault(path, (_first_shape(args), len(args) + len(kwargs), output))
        return hook

    handles = [original.get_submodule(p).register_forward_hook(keep(p), with_kwargs=True) for p in paths]
    try:
        _run_once(original, g)
    finally:
        for h in handles:
            h.remove()
    return {p: seen.get(p, (None, 0, None)) for p in paths}


def check_passes_through(g: BlockGraph, new: nn.Module, block: Block) -> None:
    """A removed residual half must be the identity: in one forward of `new`, the tensor its tap
    carries equals, bit for bit, the input of its first module (x + 0 = x; read in row-major order,
    so a half whose caller reshapes around it, timm Swin's (B, HW, C) <-> (B, H, W, C), counts
    when the values pass through in order). Else a one-line
    `SurgeonError`: zeros from the one module do not zero the branch (a norm or bias after it)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(side: str):
        def hook(mod: nn.Module, args: tuple, output: Any = None) -> None:
            t = _first_tensor(args if output is None else output)
            if t is not None and side not in seen:
                seen[side] = t.detach().clone()
        return hook

    first, (tap, side) = new.get_submodule(block.members[0]), block.tap
    handles = [first.register_forward_pre_hook(keep("in"))]
    tap_mod = new.get_submodule(tap)
    handles.append(tap_mod.register_forward_pre_hook(keep("out")) if side == "in" else tap_mod.register_forward_hook(keep("out")))
    try:
        _run_once(new, g, meta=False)  # values, not only shapes
    finally:
        for h in handles:
            h.remove()
    if "in" in seen and "out" in seen and not (seen["in"].numel() == seen["out"].numel()
                                               and torch.equal(seen["in"].reshape(-1), seen["out"].reshape(-1))):
        raise SurgeonError(f"cannot remove {block.address} ({block.path}): with {block.path} returning zeros the half "
                           "still changes its input (its branch adds more than that module's output, e.g. a norm or "
                           "bias after it), so it cannot become the identity")


def _run_once(new: nn.Module, g: BlockGraph, *, meta: bool = True) -> torch.Tensor:
    """One forward at batch size 1 in eval mode without gradients, every module's mode restored:
    on the meta device (`on_meta`: shapes only, no arithmetic) when the model runs there and its
    tensors share one device, else on real tensors (data-dependent control flow, or the edit broke the model: the real forward
    then raises the error that names it). Returns the output's logits (`logits_of`)."""
    x = torch.randn(1, *g.input_size, device=model_device(new))
    with restored_modes(new, "eval"), torch.no_grad():
        if meta and len({t.device for t in (*new.parameters(), *new.buffers())}) <= 1:  # else the real forward names the mix
            try:
                with on_meta(new):
                    return logits_of(new(torch.empty_like(x, device="meta")))
            except Exception:  # noqa: BLE001 - the meta device cannot run this model: use real tensors
                pass
        try:
            out = new(x)
        except Exception as exc:  # noqa: BLE001 - say which edit broke the forward
            raise SurgeonError(f"the edited model no longer runs ({first_line(exc, 140)}); check the block's shapes") from None
    return logits_of(out)  # the output's logits, whatever its type (a transformers ModelOutput, a tuple)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    return None


def _first_shape(value: Any) -> tuple[int, ...] | None:
    t = _first_tensor(value)
    return None if t is None else tuple(t.shape)


def _dims(shape) -> str:
    """(1, 128, 28, 28) -> '[128, 28, 28]' (without the batch dimension)."""
    return str(list(shape[1:])) if isinstance(shape, tuple) and len(shape) > 1 else str(shape)


def _channels(shape: tuple[int, ...], layout: str | None) -> int:
    return shape[-1] if layout == "NHWC" else shape[1]


def _grid(shape: tuple[int, ...], layout: str | None) -> tuple[int, int] | None:
    if layout == "NHWC":
        return tuple(shape[1:3])
    return tuple(shape[2:4]) if layout == "NCHW" else None


def _bottleneck_width(module: nn.Module) -> int | None:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.out_channels if conv is not None else None


def _msa_shape(model: nn.Module, block: Block) -> dict[str, Any]:
    """MSABlock arguments that fit in place of `block`: channels, bottleneck width, layout, form."""
    if block.layout not in ("NCHW", "NHWC"):
        raise SurgeonError(f"{block.address} has no 2-D feature map ({block.layout}); an MSA block replaces conv blocks")
    if _grid(block.in_shape, block.layout) != _grid(block.out_shape, block.layout):
        raise SurgeonError(f"{block.address} ({block.path}) maps {_dims(block.in_shape)} to {_dims(block.out_shape)}: it "
                           "downsamples, and an MSA block keeps the resolution; replace a stride-1 block of the stage")
    target = model.get_submodule(block.path)
    c, c_out = _channels(block.in_shape, block.layout), _channels(block.out_shape, block.layout)
    return {"in_channels": c, "out_channels": c_out, "width": _bottleneck_width(target) or c,
            "channels_last": block.layout == "NHWC", "preact": type(target).__name__ not in _POST_ACTIVATION}
