"""FLOPs per module from one forward pass.

Counts the operations in PyTorch's FLOP registry (`torch.utils.flop_counter.flop_registry`:
matmuls, convolutions, fused attention), plus the CPU flash-attention kernel that registry lacks,
and credits each to every module active on a caller-maintained stack. A multiply-accumulate is
2 FLOPs, as in `torch.utils.flop_counter`; halve the numbers for the MACs papers often quote.

Why not `FlopCounterMode` itself: it gives the same counts per module (tests/test_library_parity.py
checks it), but it decomposes every op its registry lacks (BatchNorm into some 20 prims), which
made `surgeon.graph` 15-30% slower on resnet50, and it names modules by class plus the last alias
of a shared module where the block graph needs the first path.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop

__all__ = ["FlopCount"]

_aten = torch.ops.aten
_REGISTRY: dict[Any, Any] = dict(flop_registry)
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _REGISTRY[_aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_flop


def _native_mha_flop(query, key, value, embed_dim, num_head, *args, out_val=None, **kwargs) -> int:  # noqa: ANN001
    """nn.MultiheadAttention's inference fast path, one fused op: the Q/K/V projections
    (2·L·E·3E), QKᵀ and AV (2·2·L·S·E) and the output projection (2·L·E·E), per batch item."""
    *batch, length, e = query.shape
    source = key.shape[-2]
    b = 1
    for d in batch:
        b *= d
    return 2 * b * (length * e * e + 2 * source * e * e + 2 * length * source * e + length * e * e)


if hasattr(_aten, "_native_multi_head_attention"):
    _REGISTRY[_aten._native_multi_head_attention] = _native_mha_flop


class FlopCount(TorchDispatchMode):
    """Dispatch mode adding each counted op's FLOPs to ``self.per_module[p]`` for p in `stack`."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.per_module: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = _REGISTRY.get(func._overloadpacket)
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            for path in set(self.stack):
                self.per_module[path] += n
        return out
