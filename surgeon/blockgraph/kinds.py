"""Block kinds (`KINDS`) and how a block's kind is read from its modules: attention, conv, MLP,
downsampling (by module type and name)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from torch import nn

KINDS = ("stem", "conv", "msa", "mlp", "downsample", "head", "other")
_NOT_ATTENTION = re.compile(r"channel|spatial|selectivekernel|coord|squeeze|excit|cbam|eca", re.I)
_DOWNSAMPLE_NAMES = re.compile(r"pool|downsample|merg|transition|reduc", re.I)


def _is_attention(mod: nn.Module) -> bool:
    name = type(mod).__name__
    if isinstance(mod, nn.MultiheadAttention):
        return True
    if re.search(r"attention|attn|msa", name, re.I) and not _NOT_ATTENTION.search(name):
        return True
    return isinstance(getattr(mod, "qkv", None), nn.Module)


def is_conv(mod: nn.Module) -> bool:
    """A convolution: torch's, or a layer of its own with a kernel and a weight (timm's CondConv2d
    keeps its experts' kernels flattened in one (experts, n) weight; pooling has no weight)."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        return True
    return getattr(mod, "kernel_size", None) is not None and isinstance(mod._parameters.get("weight"), nn.Parameter)


def _kernel_area(mod: nn.Module) -> int:
    k = mod.kernel_size
    return math.prod(k) if isinstance(k, (tuple, list)) else int(k) ** 2


def _kind(model: nn.Module, members: Sequence[str], merging: bool, downsamples: bool) -> str:
    mods = [m for p in members for m in model.get_submodule(p).modules()]
    if downsamples and all(_DOWNSAMPLE_NAMES.search(".".join(p.split(".")[-2:])) for p in members):
        return "downsample"  # a module named for it (timm's `downsample`, Swin's `reduction`), whatever inside
    if any(_is_attention(m) for m in mods):
        return "msa"
    convs = [m for m in mods if is_conv(m)]
    mains = [m for m in mods if is_conv(m) or isinstance(m, nn.Linear)]
    if downsamples and not merging and (len(mains) <= 1 or any(_DOWNSAMPLE_NAMES.search(p) for p in members)):
        return "downsample"
    if any(_kernel_area(c) > 1 for c in convs):
        return "conv"
    if mains:
        return "mlp"
    return "downsample" if downsamples else "other"
