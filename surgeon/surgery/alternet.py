"""AlterNet: the paper's Conv-to-MSA build-up as a pass (PAPER.md, "AlterNet and the build-up rules").

`alternate` replaces the last `n` blocks of the chosen stages by MSA blocks (Fig. 11: a Conv
block's successor in the same stage; never a downsampling block, which changes the resolution),
sized like the blocks they replace; `cifar_stem` swaps an ImageNet stem for the paper's CIFAR stem
(3x3 conv, no max-pool). `ALTERNETS` names the paper's models.

    alt = surgeon.alternate(surgeon.load_model("resnet50"), stages={"c2": 1, "c3": 1})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from surgeon import layers
from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.core.registry import Registry
from surgeon.core.text import plural
from surgeon.blockgraph import BlockGraph
from surgeon.model.runtime import model_device
from surgeon.surgery.passes import PASSES, _finish, _set_module, _start
from surgeon.surgery.shapes import _msa_shape, _shapes_of

__all__ = ["alternate", "cifar_stem", "parse_stages", "ALTERNETS"]

#: Named AlterNets: (base model, its constructor arguments, MSAs per stage). ``paper``: the
#: paper's Alter-ResNet-50 (Fig. 11): a pre-activation ResNet-50 with blocks (3, 4, 6, 4), as in
#: the paper's variant, and MSAs (0, 1, 1, 2) in c1..c4.
ALTERNETS: Registry[tuple[str, dict[str, Any], dict[str, int]]] = Registry("AlterNet", {
    "paper": ("resnetv2_50", {"layers": [3, 4, 6, 4]}, {"c2": 1, "c3": 1, "c4": 2}),
})


def parse_stages(stages: str | Mapping[str, int] | None) -> dict[str, int]:
    """``"c2,c3"`` -> {c2: 1, c3: 1}; ``"c2=1,c3=1,c4=2"`` -> counts; a mapping passes through."""
    if stages is None:
        raise SurgeonError("no stages given; e.g. stages=c2,c3 or stages=c2=1,c3=1,c4=2")
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
        raise SurgeonError("no stages given; e.g. stages=c2,c3")
    return out


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
    for h in (heads.values() if isinstance(heads, Mapping) else [heads]):
        checks.args(heads=h)
    checks.args(window=window, dim_head=dim_head, drop_path=drop_path)
    counts = parse_stages(stages)
    original, g, new = _start(model, input_size)
    edited = {}
    for stage, m in counts.items():
        if stage not in g.stages:
            raise SurgeonError(f"unknown stage {stage}; this model has {', '.join(g.stages)} (see surgeon inspect)")
        convs = [b for b in g.stages[stage] if b.kind == "conv"]
        if not convs:
            kinds = sorted({b.kind for b in g.stages[stage]})
            raise SurgeonError(f"stage {stage} has no conv block to replace (kinds: {', '.join(kinds)})")
        n = len(convs)
        if 2 * m > n:
            raise SurgeonError(f"stage {stage} has {n} conv blocks, so it takes at most {plural(n // 2, 'MSA')} (m <= n/2), not {m}")
        grid = convs[-1].grid
        if grid is None or convs[-1].layout not in ("NCHW", "NHWC"):
            raise SurgeonError(f"stage {stage} has no 2-D feature map ({convs[-1].layout}); alternate works on conv stages")
        stage_index = int(stage[1:])
        h = heads.get(stage) if isinstance(heads, Mapping) else heads
        h = 3 * 2 ** (stage_index - 1) if h is None else h
        p = min(7, *grid) if window is None else window
        if p > min(grid):
            raise SurgeonError(f"window {p} is larger than {stage}'s {grid[0]}x{grid[1]} feature map; use window={min(grid)} or less")
        for i in range(m):
            block = convs[n - 2 * m + 1 + 2 * i]
            if block.downsamples:
                raise SurgeonError(f"{block.address} ({block.path}) downsamples; MSAs replace stride-1 conv blocks")
            if len(block.members) != 1:  # a group of layers (MobileViT's fold + fusion convs): no one module to swap
                raise SurgeonError(f"{block.address} ({block.path}) is {len(block.members)} modules, not one conv block; "
                                   "MSAs replace whole conv blocks (use surgeon.replace on one module path)")
            shape = _msa_shape(original, block)
            if preact is not None:
                shape["preact"] = preact
            msa = layers.MSABlock(**shape, heads=h, window=p, dim_head=dim_head, drop_path=drop_path)
            _set_module(new, block.path, msa.to(model_device(original)))
            edited.update(_shapes_of(original, g, block.path, block))
    entry = {"pass": "alternate", "stages": counts, "heads": dict(heads) if isinstance(heads, Mapping) else heads,
             "window": window, "dim_head": dim_head, "drop_path": drop_path, "preact": preact,
             "input_size": list(g.input_size)}
    return _finish(original, new, g, entry, edited)


def cifar_stem(model: nn.Module | BlockGraph, *, kernel: int = 3, input_size=None) -> nn.Module:
    """The small-image (CIFAR) form of an ImageNet stem, as in He et al.'s CIFAR ResNets and the
    paper's CIFAR models: the stem's first strided convolution becomes a `kernel` x `kernel`
    convolution with stride 1 and 'same' padding (same channels, freshly initialised) and its
    strided pooling layers become the identity. A 32 px image then reaches the first stage at
    32 px instead of 8, so a ResNet's stages see 32 / 16 / 8 / 4 px maps, where AlterNet's 4 x 4
    windows fit (PAPER.md: "on 32 px CIFAR inputs (16/8/4) only window 4 fits")."""
    checks.args(kernel=kernel)  # odd: a 'same' padding of kernel // 2 keeps the map size
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
    # by design the stem's resolution (and so every later map's) changes; channels and the output are kept
    return _finish(original, new, g, {"pass": "cifar_stem", "kernel": kernel, "input_size": list(g.input_size)},
                   spatial=False)


def _stride(pool: nn.Module) -> int:
    s = pool.stride
    return max(s) if isinstance(s, (tuple, list)) else int(s or 1)


PASSES.register("alternate", alternate)
PASSES.register("cifar_stem", cifar_stem)
