"""The locality experiment (Park & Kim: local MSAs beat global ones): restrict the self-attention of
selected ViT blocks to k x k neighbourhoods of every query token, as a surgery pass.

    local = surgeon.localize(surgeon.load_model("vit_tiny_patch16_224"), blocks="kind:msa", kernel=3)
    surgeon.save(local, "local.safetensors")      # recorded and replayed like every pass

The attention of each selected block becomes a `surgeon.layers.local_attention.LocalAttention`:
the same module, weights and state_dict names, given an additive attention bias (0 inside the
neighbourhood, -inf outside). Class / distillation / register tokens keep global attention. A
kernel of 2 g - 1 or more (g: the larger side of the token grid) lets every query see the whole
grid, so the model computes exactly what it did; kernel 1 lets each patch see only itself and the
prefix tokens.
"""

from __future__ import annotations

from torch import nn

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import BlockGraph
from surgeon.layers.local_attention import LocalAttention
from surgeon.surgery.passes import PASSES, _finish, _set_module, _start
from surgeon.surgery.shapes import _calls_of

__all__ = ["localize"]


def localize(model: nn.Module | BlockGraph, blocks: str = "kind:msa", *, kernel: int = 3, input_size=None) -> nn.Module:
    """A new model whose selected attention blocks attend only within k x k neighbourhoods.

    Args:
        blocks: a block-graph selection of MSA blocks with a token grid (``kind:msa``: all of them;
            ``c1.b0``, ... see ``surgeon inspect``).
        kernel: odd side k of the neighbourhood, in tokens (the original's default is 3).
        input_size: (C, H, W) that fixes the token grid; default the model's.
    """
    checks.args(kernel=kernel)  # odd: a neighbourhood centred on its query
    original, g, new = _start(model, input_size)
    chosen = g.select(blocks)
    if not chosen:
        raise SurgeonError(f"{blocks!r} selects no block; e.g. kind:msa (see surgeon inspect)")
    calls = _calls_of(original, g, [b.path for b in chosen])
    for b in chosen:
        target = original.get_submodule(b.path)
        why = _not_local(b, calls[b.path][0])
        if why:
            raise SurgeonError(f"{b.address} ({b.path}) {why}; localize works on a ViT's attention over a token "
                               "sequence (NLC with a token grid): select such blocks, e.g. kind:msa of a ViT")
        if isinstance(target, LocalAttention):
            raise SurgeonError(f"{b.address} ({b.path}) is local already (kernel {target.kernel}); localize the "
                               "original model instead")
        gh, gw = b.grid
        prefix = b.in_shape[1] - gh * gw
        expected = getattr(original, "num_prefix_tokens", prefix)
        if prefix < 0 or prefix != expected:
            raise SurgeonError(f"{b.address}: {b.in_shape[1]} tokens do not split into {expected} prefix tokens and a "
                               f"{gh}x{gw} grid; localize works on ViTs with prefix tokens first (timm)")
        _set_module(new, b.path, LocalAttention(new.get_submodule(b.path), (gh, gw), prefix, kernel))
    entry = {"pass": "localize", "blocks": blocks, "kernel": kernel, "input_size": list(g.input_size)}
    return _finish(original, new, g, entry)


def _not_local(b, attends: tuple[int, ...] | None = None) -> str | None:
    """Why block `b` cannot be made local (None when it can): the first condition it fails.
    `attends` is the shape of what its attention module takes (all the block's tokens, or windows)."""
    if b.kind != "msa":
        return f"is a {b.kind} block, not attention"
    if b.layout != "NLC" or len(b.in_shape) != 3:
        return f"is attention on {b.layout} feature maps (windows of a map, as in Swin), not over a token sequence"
    if b.grid is None:
        return "has no token grid (its tokens are not an H x W map)"
    if attends is not None and tuple(attends[1:]) != tuple(b.in_shape[1:]):
        return (f"is attention over windows ({list(attends[1:])}, not the block's {list(b.in_shape[1:])} tokens, "
                "as in Swin), not over the whole token sequence")
    return None


PASSES.register("localize", localize)
