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
import math
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
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import Block, BlockGraph, graph
from surgeon.model.sizes import default_input_size
from surgeon.core.registry import Registry
from surgeon.model.runtime import model_device
from surgeon.surgery.shapes import _dims, _calls_of, _msa_shape, _shapes_of, check_passes_through, check_shapes


__all__ = ["replace", "remove", "insert", "PASSES", "register", "list_passes", "apply_passes"]


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


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path`. Its new submodules take the mode of the module they replace (of the
    parent for an insertion), so an edited eval model stays in eval mode everywhere: a block built
    in train mode inside an eval model would normalise with batch statistics. Submodules already
    in the model (a block wrapped with an inserted one) keep their own flags."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    old = getattr(parent, name, None)
    mode = old.training if isinstance(old, nn.Module) else parent.training
    present = {id(m) for m in model.modules()}
    for m in module.modules():
        if id(m) not in present:
            m.training = mode
    parent.add_module(name, module)


def _is_module_path(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return bool(path)
    except AttributeError:
        return False


def _stand_in(call: tuple, label: str, built: nn.Module) -> nn.Module:
    """`built` made to take and return what the module at `label` did on its `call` (`_calls_of`),
    so its caller still works.

    Rule: a module called with one tensor that returned a tensor (timm's, torchvision's blocks) is
    replaced by `built` as it is. Otherwise `built` is wrapped in `layers.StandIn`: it gets the
    first input only (an attention mask, a grid size are dropped), and where the module returned a
    tuple (an attention module's ``(output, weights)``: transformers, nn.MultiheadAttention) its
    output takes the place of the tuple's first tensor shaped like the module's input, None the
    others. Any other output (a dict, a tuple with no such tensor) is refused in one line."""
    shape_in, n_args, out = call
    if out is None or isinstance(out, torch.Tensor):
        return built if n_args <= 1 else layers.StandIn(built)
    if isinstance(out, (tuple, list)):
        index = next((i for i, v in enumerate(out) if isinstance(v, torch.Tensor) and tuple(v.shape) == shape_in), None)
        if index is not None:
            return layers.StandIn(built, index, len(out))
    raise SurgeonError(f"cannot put a module in place of {label}: it returns a {type(out).__name__} with no tensor shaped "
                       f"like its input {_dims(shape_in)}; edit a module that returns its branch as a tensor")


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
    built = _stand_in(_calls_of(original, g, [path])[path], f"{block.address} ({path})" if block else f"module {path}", built)
    _set_module(new, path, built.to(model_device(original)))
    entry = {"pass": "replace", "address": address, "block": name, "kwargs": kwargs,
             "input_size": list(g.input_size)} if name else None
    return _finish(original, new, g, entry, _shapes_of(original, g, path, block))


def remove(model: nn.Module | BlockGraph, address: str, *, input_size=None) -> nn.Module:
    """Lesion the block at `address`: it becomes the identity. A whole block is replaced by
    nn.Identity; a residual half (a transformer's attention or MLP half, in timm, transformers or
    your own module) by zeroing its branch: the branch's module returns zeros (in the structure it
    returned, `_stand_in`), and one forward checks that the half now passes its input through bit
    for bit (x + 0), else the pass refuses naming the half. Refused for the stem, the head and
    blocks that change shape."""
    original, g, new = _start(model, input_size)
    block = g[address]
    if block.stage is None:
        raise SurgeonError(f"cannot remove the {block.address}: a model needs its stem and head")
    half = block.tap[1] == "in" or (len(block.members) > 1 and block.path in block.members and block.tap[0] not in block.members)
    reshaped = half and math.prod(block.in_shape) == math.prod(block.out_shape)  # timm Swin: (B, HW, C) <-> (B, H, W, C)
    if block.in_shape != block.out_shape and not reshaped:
        raise SurgeonError(
            f"cannot remove {block.address} ({block.path}): it changes the shape from {list(block.in_shape[1:])} "
            f"to {list(block.out_shape[1:])}, so it cannot become the identity; remove a block that keeps its shape")
    if half:
        # a residual half (its tap is the next half's input, or the enclosing block's output):
        # its branch module returns zeros, in the structure it returned, and the half must pass x through
        call = _calls_of(original, g, [block.path])[block.path]
        _set_module(new, block.path, _stand_in(call, f"{block.address} ({block.path})", layers.Zero()))
        check_passes_through(g, new, block)
    else:
        calls = _calls_of(original, g, list(block.members))
        for path in block.members:
            _set_module(new, path, _stand_in(calls[path], f"{block.address} ({path})", nn.Identity()))
    return _finish(original, new, g, {"pass": "remove", "address": address, "input_size": list(g.input_size)},
                   _shapes_of(original, g, block.path, block))


def insert(model: nn.Module | BlockGraph, after: str, module: str | nn.Module | Callable, *,
           name: str | None = None, input_size=None, **kwargs: Any) -> nn.Module:
    """Insert `module` right after the block `after` (e.g. spatial smoothing after a stage:
    ``insert(m, after="c2.b-1", module="smoothing")``).

    Inside an nn.Sequential the new module becomes a sibling named ``<block>_<name>`` and no
    existing key changes; elsewhere the block is wrapped as ``After(block=..., <name>=...)``
    (`layers.After`, an nn.Sequential that passes the block every input and the new module the
    block's output tensor, so transformers layers take insertions too).
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
        _set_module(new, path, layers.After(OrderedDict([("block", parent.get_submodule(last)), (label, built)])))
        inserted = f"{path}.{label}"
    entry = ({"pass": "insert", "after": after, "block": type_name, "name": name, "kwargs": kwargs,
              "input_size": list(g.input_size)} if type_name else None)
    return _finish(original, new, g, entry, {inserted: (where, block.out_shape, block.out_shape)})


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
