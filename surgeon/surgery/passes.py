"""Surgery passes: replace, remove (lesion) and insert blocks; the pass registry and its replay.

Every pass takes a model (or a `BlockGraph` of one), addresses blocks through the block graph,
and returns a *new* model: the input is never mutated, every untouched parameter and buffer is
bit-identical, and every block keeps its input and output shapes, as does the model's output
(`check_shapes`, one forward, run by every pass; else the pass refuses, naming the block and both
shapes). A downsampling block is never replaced by an MSA block (which keeps the resolution): the
pass refuses, as AlterNet puts MSAs only on stride-1 blocks. Passes given by
name and plain arguments are recorded in the model's provenance record (`surgeon.provenance`) so
that `surgeon.save` can write a file that `surgeon.load` rebuilds without user code. A pass of your
own joins them with `register` (recorded with its arguments, saved, and replayed by `surgeon.load`
in any process that imports the module defining it).

    les = surgeon.remove(surgeon.load_model("resnet50"), "c3.b2")
    smooth = surgeon.insert(les, after="c2.b-1", module="smoothing")
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from surgeon import layers
from surgeon.core import checks
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError, first_line
from surgeon.blockgraph import Block, BlockGraph, graph
from surgeon.model.sizes import default_input_size
from surgeon.core.registry import Registry
from surgeon.model.runtime import model_device, restored_modes

__all__ = ["replace", "remove", "insert", "PASSES", "register", "list_passes", "apply_passes", "check_shapes"]

_POST_ACTIVATION = ("Bottleneck", "BasicBlock")  # residual blocks ending in act(x + f(x))
_MSA_ARGS = ("heads", "window", "dim_head", "drop_path")


def _start(model: nn.Module | BlockGraph, input_size) -> tuple[nn.Module, BlockGraph, nn.Module]:
    """(the original model, its block graph, a deep copy to edit)."""
    if isinstance(model, BlockGraph):
        g, model = model, model.model
        if input_size is not None and tuple(input_size) != g.input_size:
            g = graph(model, input_size=input_size)
    else:
        g = graph(model, input_size=input_size)
    return model, g, copy.deepcopy(model)


def _finish(original: nn.Module, new: nn.Module, g: BlockGraph, entry: dict | None,
            edited: Mapping[str, tuple[str, tuple, tuple]] | None = None, *, spatial: bool = True) -> nn.Module:
    """Check shapes with one forward (`check_shapes`) and append the pass to the recipe."""
    check_shapes(g, new, edited or {}, spatial=spatial)
    return provenance.record_pass(original, new, entry)


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
    hooks, seen = [], {}

    def record(key: str, side: str):
        def hook(mod, args, output=None):
            value = args if side == "in" else output
            seen.setdefault((key, side), _first_shape(value))
        return hook

    def watch(path: str, key: str, sides: tuple[str, ...]) -> None:
        try:
            mod = new.get_submodule(path)
        except AttributeError:
            return  # the pass removed or renamed this module: its neighbours' shapes are checked instead
        if "in" in sides:
            hooks.append(mod.register_forward_pre_hook(record(key, "in")))
        if "out" in sides:
            hooks.append(mod.register_forward_hook(record(key, "out")))

    for path in edited:
        watch(path, "edit:" + path, ("in", "out"))
    for b in g.blocks:
        watch(b.members[0], "block:" + b.address, ("in",))
        watch(b.tap[0], "block:" + b.address, (b.tap[1],))
    try:
        after, failure = _run_once(new, g), None
    except SurgeonError as exc:  # the shapes seen before the failure may name the block that caused it
        after, failure = None, exc
    finally:
        for h in hooks:
            h.remove()
    for path, (label, want_in, want_out) in edited.items():
        got_in, got_out = seen.get(("edit:" + path, "in")), seen.get(("edit:" + path, "out"))
        if got_in is not None and got_out is not None and (got_in, got_out) != (tuple(want_in), tuple(want_out)):
            raise SurgeonError(f"{label} must map {_dims(want_in)} to {_dims(want_out)}, but the new module maps "
                               f"{_dims(got_in)} to {_dims(got_out)}; give a module that keeps both shapes")
    for b in g.blocks:
        got = [seen.get(("block:" + b.address, side)) for side in ("in", b.tap[1])]
        want = [b.in_shape, b.out_shape]
        if not spatial:
            got = [(1, _channels(s, b.layout)) if s and len(s) > 1 else s for s in got]
            want = [(1, _channels(s, b.layout)) if len(s) > 1 else s for s in want]
        if any(x is not None and tuple(x) != tuple(y) for x, y in zip(got, want)):
            shown = [_dims(x) if x is not None else "?" for x in got]
            raise SurgeonError(f"the edit changes {b.address} ({b.path}) from {_dims(b.in_shape)} -> {_dims(b.out_shape)} "
                               f"to {shown[0]} -> {shown[1]}; a pass must keep every block's shapes")
    if failure is not None:  # name the edited module or block the forward failed in
        entered = [(label, seen[("edit:" + path, "in")]) for path, (label, _, _) in edited.items()
                   if ("edit:" + path, "in") in seen and ("edit:" + path, "out") not in seen]
        entered += [(f"{b.address} ({b.path})", seen[("block:" + b.address, "in")]) for b in reversed(g.blocks)
                    if ("block:" + b.address, "in") in seen and ("block:" + b.address, b.tap[1]) not in seen]
        if entered:
            raise SurgeonError(f"{entered[0][0]} fails on its input {_dims(entered[0][1])}: {failure}")
        raise failure
    expected = g.blocks[-1].out_shape
    if tuple(after.shape) != tuple(expected):
        raise SurgeonError(f"the edit changed the output shape from {list(expected)} to {list(after.shape)}")


def _shapes_of(original: nn.Module, g: BlockGraph, path: str, block: Block | None) -> dict[str, tuple[str, tuple, tuple]]:
    """What the module at `path` must keep for `check_shapes`: the block's shapes when it is the
    whole block, else (a module inside a block) the module's own shapes in the original model."""
    if block is not None:
        whole = block.members == (path,) and block.tap == (path, "out")
        return {path: (f"{block.address} ({path})", block.in_shape, block.out_shape)} if whole else {}
    seen: dict[str, tuple | None] = {}
    mod = original.get_submodule(path)
    def keep(side: str, value: Any) -> None:  # returns None: a hook's return value would replace the tensors
        seen.setdefault(side, _first_shape(value))

    hooks = [mod.register_forward_pre_hook(lambda m, a: keep("in", a)),
             mod.register_forward_hook(lambda m, a, y: keep("out", y))]
    try:
        _run_once(original, g)
    finally:
        for h in hooks:
            h.remove()
    if seen.get("in") is None or seen.get("out") is None:
        return {}
    return {path: (f"module {path}", seen["in"], seen["out"])}


def _run_once(new: nn.Module, g: BlockGraph) -> torch.Tensor:
    """One forward at batch size 1 in eval mode without gradients; every module's mode restored."""
    x = torch.randn(1, *g.input_size, device=model_device(new))
    try:
        with restored_modes(new, "eval"), torch.no_grad():
            return new(x)
    except Exception as exc:  # noqa: BLE001 - say which edit broke the forward
        raise SurgeonError(f"the edited model no longer runs ({first_line(exc, 140)}); check the block's shapes") from None


def _first_shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return next((s for s in map(_first_shape, value) if s is not None), None)
    return None


def _dims(shape) -> str:
    """(1, 128, 28, 28) -> '[128, 28, 28]' (without the batch dimension)."""
    return str(list(shape[1:])) if isinstance(shape, tuple) and len(shape) > 1 else str(shape)


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    model.get_submodule(parent).add_module(name, module)


def _is_module_path(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return bool(path)
    except AttributeError:
        return False


def _build(module: str | nn.Module | Callable, block: Block | None, kwargs: dict) -> tuple[nn.Module, str | None]:
    """A new module from a registered name (built for the layout at `block`: `_for_layout`), a
    module (copied) or a factory(block) -> module."""
    if isinstance(module, str):
        return _for_layout(module, block, kwargs), module
    if isinstance(module, nn.Module):
        return copy.deepcopy(module), None
    if callable(module):
        return module(block, **kwargs), None
    raise SurgeonError(f"expected a registered block name, an nn.Module or a factory, not {type(module).__name__}")


def _for_layout(name: str, block: Block | None, kwargs: dict) -> nn.Module:
    """The registered block `name` built for the layout of the tensor it will see at `block`.

    Rule: a block whose factory takes ``channels_last`` works on 2-D feature maps, so it gets
    NCHW maps as they are, NHWC maps with ``channels_last=True``, and tokens (NLC with a patch
    grid) through `layers.TokenGrid` (patch tokens as their grid, prefix tokens untouched); any
    other layout (no map, NesT's windows) is refused, as is a ``channels_last`` that contradicts
    the layout. Blocks without it (identity, zero) act on any layout. Without a block (a module
    path) the layout is unknown and the block is built as given."""
    factory = layers.LAYERS.get(name)
    try:
        spatial = "channels_last" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        spatial = False
    if block is None or not spatial:
        return factory(**kwargs)
    if block.layout not in ("NCHW", "NHWC", "NLC") or not block.grid or min(block.grid) < 1:
        raise SurgeonError(f"{name} works on 2-D feature maps, and {block.address} ({block.path}) gives a "
                           f"{block.layout or 'non-spatial'} output {_dims(block.out_shape)}; choose a block with a feature map")
    channels_last = block.layout == "NHWC"
    if kwargs.get("channels_last", channels_last) != channels_last:
        raise SurgeonError(f"channels_last={kwargs['channels_last']} contradicts the {block.layout} layout at {block.address}; "
                           "drop channels_last (it is set from the layout)")
    if block.layout == "NLC":
        return layers.TokenGrid(factory(**kwargs), block.grid, block.prefix_tokens)
    return factory(**{**kwargs, "channels_last": channels_last})


def replace(model: nn.Module | BlockGraph, address: str, module: str | nn.Module | Callable, *,
            input_size=None, **kwargs: Any) -> nn.Module:
    """Replace the block at `address` (or the module at a module path) with `module`.

    `module` is a registered block name (``"msa"``, ``"smoothing"``: recorded, so the result can
    be saved), an nn.Module, or a factory called as ``factory(block, **kwargs)``. The new module
    must map the block's input shape to its output shape; ``"msa"`` is refused for a block that
    downsamples (an MSA block keeps the resolution; no strided MSA is built in its place).
    """
    checks.args(**{k: v for k, v in kwargs.items() if k in _MSA_ARGS})
    original, g, new = _start(model, input_size)
    owner = next((b for b in g.blocks if b.path == address), None)  # a block named by its module path
    if owner is not None:
        path, block = address, owner
    elif _is_module_path(original, address) and not re.fullmatch(r"c\d+(\.b-?\d+)?|stem|head", address):
        path, block = address, None
    else:
        block = g[address]
        if len(block.members) > 1 and block.tap[1] == "out" and block.path not in block.members:
            raise SurgeonError(
                f"{block.address} spans several modules ({', '.join(block.members)}); address one by module path")
        path = block.path
    if module == "msa" and block is not None and "in_channels" not in kwargs:  # size it like alternate
        kwargs = {**_msa_shape(original, block), **kwargs}
    built, name = _build(module, block, kwargs)
    _set_module(new, path, built.to(model_device(original)))
    entry = {"pass": "replace", "address": address, "block": name, "kwargs": kwargs,
             "input_size": list(g.input_size)} if name else None
    return _finish(original, new, g, entry, _shapes_of(original, g, path, block))


def remove(model: nn.Module | BlockGraph, address: str, *, input_size=None) -> nn.Module:
    """Lesion the block at `address`: it becomes the identity (a transformer half: its residual
    branch returns zeros, so the half passes its input through). Refused for the stem, the head
    and blocks that change shape."""
    original, g, new = _start(model, input_size)
    block = g[address]
    if block.stage is None:
        raise SurgeonError(f"cannot remove the {block.address}: a model needs its stem and head")
    if block.in_shape != block.out_shape:
        raise SurgeonError(
            f"cannot remove {block.address} ({block.path}): it changes the shape from {list(block.in_shape[1:])} "
            f"to {list(block.out_shape[1:])}, so it cannot become the identity; remove a block that keeps its shape")
    if block.tap[1] == "in" or (len(block.members) > 1 and block.path in block.members and block.tap[0] not in block.members):
        # a residual half (its tap is the next half's input, or the enclosing block's output)
        target = original.get_submodule(block.path)
        _set_module(new, block.path, layers.Zero(returns_tuple=isinstance(target, nn.MultiheadAttention)))
    else:
        for path in block.members:
            _set_module(new, path, nn.Identity())
    return _finish(original, new, g, {"pass": "remove", "address": address, "input_size": list(g.input_size)},
                   _shapes_of(original, g, block.path, block))


def insert(model: nn.Module | BlockGraph, after: str, module: str | nn.Module | Callable, *,
           name: str | None = None, input_size=None, **kwargs: Any) -> nn.Module:
    """Insert `module` right after the block `after` (e.g. spatial smoothing after a stage:
    ``insert(m, after="c2.b-1", module="smoothing")``).

    Inside an nn.Sequential the new module becomes a sibling named ``<block>_<name>`` and no
    existing key changes; elsewhere the block is wrapped as ``Sequential(block=..., <name>=...)``.
    """
    original, g, new = _start(model, input_size)
    block = g[after]
    path, side = block.tap
    if side != "out":
        raise SurgeonError(f"cannot insert after {block.address}, a transformer half inside {path.rpartition('.')[0]}; "
                           "insert after the whole transformer block (its second half)")
    if block.address == "head":
        raise SurgeonError("cannot insert after the head: the logits are the model's output")
    built, type_name = _build(module, block, kwargs)
    built = built.to(model_device(original))
    label = name or type_name or type(built).__name__.lower()
    parent_path, _, last = path.rpartition(".")
    parent = new.get_submodule(parent_path)
    where = f"the module inserted after {block.address} ({block.path})"
    if isinstance(parent, nn.Sequential):
        items = list(parent._modules.items())
        i = [k for k, _ in items].index(last)
        items.insert(i + 1, (f"{last}_{label}", built))
        inserted = f"{parent_path}.{last}_{label}"
        rebuilt = nn.Sequential(OrderedDict(items))
        if parent_path:
            _set_module(new, parent_path, rebuilt)
        else:
            raise SurgeonError("cannot insert into a model that is itself an nn.Sequential; wrap it first")
    else:
        _set_module(new, path, nn.Sequential(OrderedDict([("block", parent.get_submodule(last)), (label, built)])))
        inserted = f"{path}.{label}"
    entry = ({"pass": "insert", "after": after, "block": type_name, "name": name, "kwargs": kwargs,
              "input_size": list(g.input_size)} if type_name else None)
    return _finish(original, new, g, entry, {inserted: (where, block.out_shape, block.out_shape)})


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


#: Every pass `surgeon.load` can replay, by the name its record entries carry.
#: `surgeon.surgery.alternet` and `surgeon.surgery.locality` register theirs when the package is imported.
PASSES: Registry[Callable[..., nn.Module]] = Registry("pass", {"replace": replace, "remove": remove, "insert": insert})


def register(name: str | Callable[..., nn.Module] | None = None) -> Any:
    """Register a pass of your own, ``fn(model, **arguments) -> new model``, as ``@register`` or
    ``@register("name")`` (default: the function's name).

    The registered function returns a new model whose provenance record holds the pass with its
    arguments (plain JSON values: numbers, strings, lists, dicts), so `surgeon.save` writes it and
    `surgeon.load` replays it in any process that imports the defining module. Like every pass, it
    must return a new model (the input is never mutated: start from ``copy.deepcopy(model)``) and
    keep every block's shapes (checked with one forward at the model's recorded input size, or
    the ``input_size`` argument when the function takes one).
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        pass_name = name if isinstance(name, str) else fn.__name__
        sig = inspect.signature(fn)
        if any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()):
            raise SurgeonError(f"pass {pass_name}: *args cannot be recorded; use keyword arguments")

        @functools.wraps(fn)
        def recorded(model: nn.Module | BlockGraph, *args: Any, **kwargs: Any) -> nn.Module:
            bound = sig.bind(model, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])
            for p in sig.parameters.values():
                if p.kind is p.VAR_KEYWORD:
                    arguments.update(arguments.pop(p.name, {}))
            original = model.model if isinstance(model, BlockGraph) else model
            new = fn(model, *args, **kwargs)
            if not isinstance(new, nn.Module) or new is original:
                raise SurgeonError(f"pass {pass_name} must return a new model (edit copy.deepcopy(model)), "
                                   f"not {'its input' if new is original else type(new).__name__}")
            size = arguments.get("input_size") or (model.input_size if isinstance(model, BlockGraph) else None)
            recorded_size = provenance.cfg_of(original).input_size
            size = size or (recorded_size[0] if recorded_size else default_input_size(original))
            entry: dict[str, Any] | None = {"pass": pass_name, **arguments}
            try:
                json.dumps(entry, allow_nan=False)
            except (TypeError, ValueError):
                entry = None  # not replayable: recorded as opaque, and save refuses it
            return _finish(original, new, graph(original, input_size=tuple(size)), entry)

        PASSES.register(pass_name, recorded)
        return recorded

    return wrap(name) if callable(name) else wrap


def list_passes() -> list[str]:
    """The names of the registered passes (the built-in ones, AlterNet's, and any `register`ed)."""
    return PASSES.names()


def apply_passes(model: nn.Module, passes: list[dict]) -> nn.Module:
    """Replay recorded passes (a provenance record's ``passes``) on a freshly built base model.
    A pass that is not registered names the closest registered ones: import the module that
    registers it (`register`) before loading."""
    for entry in passes:
        args = dict(entry)
        kind = args.pop("pass")
        fn = PASSES.get(kind, None)
        if fn is None:
            try:
                PASSES.get(kind)
            except SurgeonError as exc:
                raise SurgeonError(f"the file's record has a pass {kind!r} that is not registered ({exc}); import the "
                                   "module that registers it (surgeon.register_pass) before loading") from None
        if kind in ("replace", "insert"):
            args.update(args.pop("kwargs", None) or {})
            args["module"] = args.pop("block")
        model = fn(model, **args)
    return model


