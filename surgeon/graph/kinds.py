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


def _kind(model: nn.Module, members: Sequence[str], merging: bool, downsamples: bool) -> str:
    mods = [m for p in members for m in model.get_submodule(p).modules()]
    if downsamples and all(_DOWNSAMPLE_NAMES.search(".".join(p.split(".")[-2:])) for p in members):
        return "downsample"  # a module named for it (timm's `downsample`, Swin's `reduction`), whatever inside
    if any(_is_attention(m) for m in mods):
        return "msa"
    convs = [m for m in mods if isinstance(m, nn.modules.conv._ConvNd)]
    mains = [m for m in mods if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if downsamples and not merging and (len(mains) <= 1 or any(_DOWNSAMPLE_NAMES.search(p) for p in members)):
        return "downsample"
    if any(math.prod(c.kernel_size) > 1 for c in convs):
        return "conv"
    if mains:
        return "mlp"
    return "downsample" if downsamples else "other"
