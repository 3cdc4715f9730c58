"""Surgery passes: replace, remove (lesion) and insert blocks, and AlterNet's Conv-to-MSA build-up.

Every pass takes a model (or a `BlockGraph` of one), addresses blocks through the block graph,
and returns a *new* model: the input is never mutated, every untouched parameter and buffer is
bit-identical, and input/output shapes are preserved (checked with one forward). Passes given by
name and plain arguments are recorded in ``model._surgeon_recipe`` so that `surgeon.save` can
write a file that `surgeon.load` rebuilds without user code.

    alt = surgeon.alternate(surgeon.load_model("resnet50"), stages={"c2": 1, "c3": 1})
    les = surgeon.remove(alt, "c3.b2")
    smooth = surgeon.insert(les, after="c2.b-1", module="smoothing")
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from . import layers
from .errors import SurgeonError, first_line
from .graph import Block, BlockGraph, graph

__all__ = ["replace", "remove", "insert", "alternate", "cifar_stem", "alter_resnet50", "parse_stages", "PRESETS", "apply_recipe"]

#: Named AlterNets: (base model, its constructor arguments, MSAs per stage). ``paper``: the
#: paper's Alter-ResNet-50 (Fig. 11): a pre-activation ResNet-50 with blocks (3, 4, 6, 4), as in
#: the paper's variant, and MSAs (0, 1, 1, 2) in c1..c4.
PRESETS: dict[str, tuple[str, dict[str, Any], dict[str, int]]] = {
    "paper": ("resnetv2_50", {"layers": [3, 4, 6, 4]}, {"c2": 1, "c3": 1, "c4": 2}),
}


def alter_resnet50(**kwargs: Any) -> nn.Module:
    """The paper's Alter-ResNet-50 (``PRESETS["paper"]``); kwargs go to `surgeon.load_model`."""
    from .models import load_model

    spec, model_kwargs, stages = PRESETS["paper"]
    return alternate(load_model(spec, **model_kwargs, **kwargs), stages)

_POST_ACTIVATION = ("Bottleneck", "BasicBlock")  # residual blocks ending in act(x + f(x))


def _start(model: nn.Module | BlockGraph, input_size) -> tuple[nn.Module, BlockGraph, nn.Module]:
    """(the original model, its block graph, a deep copy to edit)."""
    if isinstance(model, BlockGraph):
        g, model = model, model.model
        if input_size is not None and tuple(input_size) != g.input_size:
            g = graph(model, input_size=input_size)
    else:
        g = graph(model, input_size=input_size)
    return model, g, copy.deepcopy(model)


def _finish(original: nn.Module, new: nn.Module, g: BlockGraph, entry: dict | None) -> nn.Module:
    """Check shapes with one forward and append the pass to the recipe."""
    x = torch.randn(1, *g.input_size, device=_device(original))
    was = {m: m.training for m in new.modules()}
    new.eval()
    try:
        with torch.no_grad():
            after = new(x)
    except Exception as exc:  # noqa: BLE001 - say which edit broke the forward
        raise SurgeonError(f"the edited model no longer runs ({first_line(exc, 140)}); check the block's shapes") from None
    finally:
        for m, t in was.items():
            m.training = t
    expected = g.blocks[-1].out_shape
    if tuple(after.shape) != tuple(expected):
        raise SurgeonError(f"the edit changed the output shape from {list(expected)} to {list(after.shape)}")
    recipe = list(getattr(original, "_surgeon_recipe", []))
    recipe.append(entry if entry is not None else {"pass": "opaque"})
    new._surgeon_recipe = recipe
    return new


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    model.get_submodule(parent).add_module(name, module)


def _single(g: BlockGraph, address: str) -> Block:
    found = g.select(address)
    if len(found) != 1:
        raise SurgeonError(f"{address!r} names {len(found)} blocks; give one, e.g. {found[0].address}")
    return found[0]


def _is_module_path(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return bool(path)
    except AttributeError:
        return False


def _build(module: str | nn.Module | Callable, block: Block | None, kwargs: dict) -> tuple[nn.Module, str | None]:
    """A new module from a registered name, a module (copied) or a factory(block) -> module."""
    if isinstance(module, str):
        return layers.create(module, **kwargs), module
    if isinstance(module, nn.Module):
        return copy.deepcopy(module), None
    if callable(module):
        return module(block, **kwargs), None
    raise SurgeonError(f"expected a registered block name, an nn.Module or a factory, not {type(module).__name__}")


def replace(model: nn.Module | BlockGraph, address: str, module: str | nn.Module | Callable, *,
            input_size=None, **kwargs: Any) -> nn.Module:
    """Replace the block at `address` (or the module at a module path) with `module`.

    `module` is a registered block name (``"msa"``, ``"smoothing"``: recorded, so the result can
    be saved), an nn.Module, or a factory called as ``factory(block, **kwargs)``.
    """
    original, g, new = _start(model, input_size)
    owner = next((b for b in g.blocks if b.path == address), None)  # a block named by its module path
    if owner is not None:
        path, block = address, owner
    elif _is_module_path(original, address) and not re.fullmatch(r"c\d+(\.b-?\d+)?|stem|head", address):
        path, block = address, None
    else:
        block = _single(g, address)
        if len(block.members) > 1 and block.tap[1] == "out" and block.path not in block.members:
            raise SurgeonError(
                f"{block.address} spans several modules ({', '.join(block.members)}); address one by module path")
        path = block.path
    if module == "msa" and block is not None and "in_channels" not in kwargs:  # size it like alternate
        kwargs = {**_msa_shape(original, block), **kwargs}
    built, name = _build(module, block, kwargs)
    _set_module(new, path, built.to(_device(original)))
    entry = {"pass": "replace", "address": address, "block": name, "kwargs": kwargs,
             "input_size": list(g.input_size)} if name else None
    return _finish(original, new, g, entry)


def remove(model: nn.Module | BlockGraph, address: str, *, input_size=None) -> nn.Module:
    """Lesion the block at `address`: it becomes the identity (a transformer half: its residual
    branch returns zeros, so the half passes its input through). Refused for the stem, the head
    and blocks that change shape."""
    original, g, new = _start(model, input_size)
    block = _single(g, address)
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
    return _finish(original, new, g, {"pass": "remove", "address": address, "input_size": list(g.input_size)})


def insert(model: nn.Module | BlockGraph, after: str, module: str | nn.Module | Callable, *,
           name: str | None = None, input_size=None, **kwargs: Any) -> nn.Module:
    """Insert `module` right after the block `after` (e.g. spatial smoothing after a stage:
    ``insert(m, after="c2.b-1", module="smoothing")``).

    Inside an nn.Sequential the new module becomes a sibling named ``<block>_<name>`` and no
    existing key changes; elsewhere the block is wrapped as ``Sequential(block=..., <name>=...)``.
    """
    original, g, new = _start(model, input_size)
    block = _single(g, after)
    path, side = block.tap
    if side != "out":
        raise SurgeonError(f"cannot insert after {block.address}, a transformer half inside {path.rpartition('.')[0]}; "
                           "insert after the whole transformer block (its second half)")
    if block.address == "head":
        raise SurgeonError("cannot insert after the head: the logits are the model's output")
    built, type_name = _build(module, block, kwargs)
    built = built.to(_device(original))
    label = name or type_name or type(built).__name__.lower()
    parent_path, _, last = path.rpartition(".")
    parent = new.get_submodule(parent_path)
    if isinstance(parent, nn.Sequential):
        items = list(parent._modules.items())
        i = [k for k, _ in items].index(last)
        items.insert(i + 1, (f"{last}_{label}", built))
        rebuilt = nn.Sequential(OrderedDict(items))
        if parent_path:
            _set_module(new, parent_path, rebuilt)
        else:
            raise SurgeonError("cannot insert into a model that is itself an nn.Sequential; wrap it first")
    else:
        _set_module(new, path, nn.Sequential(OrderedDict([("block", parent.get_submodule(last)), (label, built)])))
    entry = ({"pass": "insert", "after": after, "block": type_name, "name": name, "kwargs": kwargs,
              "input_size": list(g.input_size)} if type_name else None)
    return _finish(original, new, g, entry)


def parse_stages(stages: str | Mapping[str, int] | None) -> dict[str, int]:
    """``"c2,c3"`` -> {c2: 1, c3: 1}; ``"c2=1,c3=1,c4=2"`` -> counts; a mapping passes through."""
    if stages is None:
        raise SurgeonError("no stages given; e.g. --stages c2,c3 or --stages c2=1,c3=1,c4=2")
    if isinstance(stages, Mapping):
        items = [(str(k), v) for k, v in stages.items()]
    else:
        items = []
        for part in (p.strip() for p in stages.split(",") if p.strip()):
            name, _, count = part.partition("=")
            try:
                items.append((name.strip(), int(count) if count else 1))
            except ValueError:
                raise SurgeonError(f"bad stage {part!r}: write c2 or c2=1") from None
    out: dict[str, int] = {}
    for name, count in items:
        if not re.fullmatch(r"c\d+", name):
            raise SurgeonError(f"bad stage name {name!r}: stages are c1, c2, ... (see surgeon inspect)")
        if name in out:
            raise SurgeonError(f"stage {name} is given twice; give each stage once, e.g. {name}={out[name] + count}")
        if not isinstance(count, int) or count < 1:
            raise SurgeonError(f"stage {name} needs at least one MSA, not {count}")
        out[name] = count
    if not out:
        raise SurgeonError("no stages given; e.g. --stages c2,c3")
    return out


def _channels(shape: tuple[int, ...], layout: str | None) -> int:
    return shape[-1] if layout == "NHWC" else shape[1]


def _bottleneck_width(module: nn.Module) -> int | None:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.out_channels if conv is not None else None


def _msa_shape(model: nn.Module, block: Block) -> dict[str, Any]:
    """MSABlock arguments that fit in place of `block`: channels, bottleneck width, layout, form."""
    if block.layout not in ("NCHW", "NHWC"):
        raise SurgeonError(f"{block.address} has no 2-D feature map ({block.layout}); an MSA block replaces conv blocks")
    target = model.get_submodule(block.path)
    c, c_out = _channels(block.in_shape, block.layout), _channels(block.out_shape, block.layout)
    return {"in_channels": c, "out_channels": c_out, "width": _bottleneck_width(target) or c,
            "channels_last": block.layout == "NHWC", "preact": type(target).__name__ not in _POST_ACTIVATION}


def alternate(model: nn.Module | BlockGraph, stages: str | Mapping[str, int], *,
              heads: int | Mapping[str, int] | None = None, window: int | None = None, dim_head: int = 64,
              drop_path: float = 0.0, preact: bool | None = None, input_size=None) -> nn.Module:
    """AlterNet's build-up rules as a pass (paper Sec. 4, Fig. 11).

    A stage of n conv blocks with m MSAs becomes ``[Conv] * (n - 2m) + [Conv, MSA] * m``: it ends
    with an MSA and MSAs alternate with convs (rule 1). Each MSA block takes the width of the
    block it replaces (the bottleneck width for bottleneck blocks); heads grow with the stage,
    3 * 2^(i-1) in c_i, i.e. 3, 6, 12, 24 (rule 3); the window defaults to the largest size <= 7
    that fits the stage's feature map.

    Args:
        stages: ``{"c2": 1, "c3": 1}`` or ``"c2,c3"`` / ``"c2=1,c3=1,c4=2"``.
        heads: one count for every stage, or per stage; default 3 * 2^(i-1).
        window: attention window side; default min(7, the stage's map size).
        preact: MSA block form; default: post-activation for ResNet Bottleneck/BasicBlock stages,
            pre-activation otherwise (pre-activation ResNets, ConvNeXt, inverted residuals).
    """
    counts = parse_stages(stages)
    original, g, new = _start(model, input_size)
    for stage, m in counts.items():
        if stage not in g.stages:
            raise SurgeonError(f"unknown stage {stage}; this model has {', '.join(g.stages)} (see surgeon inspect)")
        convs = [b for b in g.stages[stage] if b.kind == "conv"]
        if not convs:
            kinds = sorted({b.kind for b in g.stages[stage]})
            raise SurgeonError(f"stage {stage} has no conv block to replace (kinds: {', '.join(kinds)})")
        n = len(convs)
        if 2 * m > n:
            raise SurgeonError(f"stage {stage} has {n} conv blocks, so it takes at most {n // 2} MSAs (m <= n/2), not {m}")
        grid = convs[-1].grid
        if grid is None or convs[-1].layout not in ("NCHW", "NHWC"):
            raise SurgeonError(f"stage {stage} has no 2-D feature map ({convs[-1].layout}); alternate works on conv stages")
        stage_index = int(stage[1:])
        h = heads.get(stage) if isinstance(heads, Mapping) else heads
        h = h or 3 * 2 ** (stage_index - 1)
        p = window or min(7, *grid)
        if p > min(grid):
            raise SurgeonError(f"window {p} is larger than {stage}'s {grid[0]}x{grid[1]} feature map; use --window {min(grid)} or less")
        for i in range(m):
            block = convs[n - 2 * m + 1 + 2 * i]
            if block.downsamples or len(block.members) != 1:
                raise SurgeonError(f"{block.address} ({block.path}) downsamples; MSAs replace stride-1 conv blocks")
            shape = _msa_shape(original, block)
            if preact is not None:
                shape["preact"] = preact
            msa = layers.MSABlock(**shape, heads=h, window=p, dim_head=dim_head, drop_path=drop_path)
            _set_module(new, block.path, msa.to(_device(original)))
    entry = {"pass": "alternate", "stages": counts, "heads": dict(heads) if isinstance(heads, Mapping) else heads,
             "window": window, "dim_head": dim_head, "drop_path": drop_path, "preact": preact,
             "input_size": list(g.input_size)}
    return _finish(original, new, g, entry)


def cifar_stem(model: nn.Module | BlockGraph, *, kernel: int = 3, input_size=None) -> nn.Module:
    """The small-image (CIFAR) form of an ImageNet stem, as in He et al.'s CIFAR ResNets and the
    paper's CIFAR models: the stem's first strided convolution becomes a `kernel` x `kernel`
    convolution with stride 1 and 'same' padding (same channels, freshly initialised) and its
    strided pooling layers become the identity. A 32 px image then reaches the first stage at
    32 px instead of 8, so a ResNet's stages see 32 / 16 / 8 / 4 px maps, where AlterNet's 4 x 4
    windows fit (PAPER.md: "on 32 px CIFAR inputs (16/8/4) only window 4 fits")."""
    original, g, new = _start(model, input_size)
    stem = next((b for b in g.blocks if b.kind == "stem"), None)
    if stem is None:
        raise SurgeonError("this model has no stem block (see surgeon inspect); cifar_stem edits a convolutional stem")
    inside = [(f"{path}.{sub}" if sub else path, m) for path in stem.members
              for sub, m in original.get_submodule(path).named_modules()]
    conv = next(((p, m) for p, m in inside if isinstance(m, nn.Conv2d) and max(m.stride) > 1), None)
    pools = [p for p, m in inside if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and _stride(m) > 1]
    if conv is None and not pools:
        raise SurgeonError(f"the stem ({', '.join(stem.members)}) has no strided convolution or pooling: "
                           "it already keeps the input's resolution")
    if conv is not None:
        path, c = conv
        small = nn.Conv2d(c.in_channels, c.out_channels, kernel, stride=1, padding=kernel // 2, groups=c.groups,
                          bias=c.bias is not None)
        _set_module(new, path, small.to(c.weight.device, c.weight.dtype))
    for path in pools:
        _set_module(new, path, nn.Identity())
    return _finish(original, new, g, {"pass": "cifar_stem", "kernel": kernel, "input_size": list(g.input_size)})


def _stride(pool: nn.Module) -> int:
    s = pool.stride
    return max(s) if isinstance(s, (tuple, list)) else int(s or 1)


_PASSES: dict[str, Callable[..., nn.Module]] = {"replace": replace, "remove": remove, "insert": insert,
                                                 "alternate": alternate, "cifar_stem": cifar_stem}


def apply_recipe(model: nn.Module, passes: list[dict]) -> nn.Module:
    """Replay recorded passes on a freshly built base model."""
    for entry in passes:
        args = dict(entry)
        kind = args.pop("pass")
        if kind not in _PASSES:
            raise SurgeonError(f"the recipe has a pass {kind!r} this surgeon cannot replay; upgrade surgeon")
        kwargs = args.pop("kwargs", None) or {}
        if kind in ("replace", "insert"):
            args["module"] = args.pop("block")
        model = _PASSES[kind](model, **args, **kwargs)
    return model
