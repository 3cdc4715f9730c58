"""Local self-attention for ViT blocks: each patch token attends only to the k x k neighbourhood of
its position (the original code's "ConViT", after Yang et al. 2019; not d'Ascoli et al.'s).

The restriction is an additive attention bias (0 inside the neighbourhood, -inf outside) given to
the wrapped attention's own forward as its ``attn_mask``, so the weights and their names are
unchanged: the wrapper adopts the attention's submodules, parameters and attributes as its own.
Prefix tokens (class, distillation and register tokens, at the front as in timm) keep global
attention: they attend to every token and every token attends to them.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from surgeon.core.errors import SurgeonError

__all__ = ["LocalAttention", "local_bias"]


def local_bias(grid: tuple[int, int], prefix: int, kernel: int) -> torch.Tensor | None:
    """The (N, N) additive bias, N = prefix + gh * gw: query patch (i, j) may attend key patch
    (a, b) iff |i - a| <= k // 2 and |j - b| <= k // 2; prefix rows and columns are free. None
    when the kernel covers the whole grid from every position (k >= 2 max(gh, gw) - 1)."""
    gh, gw = grid
    r = kernel // 2
    if r >= max(gh, gw) - 1:
        return None
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near = ((rows[:, None] - rows[None, :]).abs() <= r) & ((cols[:, None] - cols[None, :]).abs() <= r)
    allowed = torch.ones(prefix + gh * gw, prefix + gh * gw, dtype=torch.bool)
    allowed[prefix:, prefix:] = near
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


#: The names an attention module's forward gives its additive mask: timm's, then transformers'.
MASK_ARGS = ("attn_mask", "attention_mask")


class LocalAttention(nn.Module):
    """An attention module restricted to k x k neighbourhoods of a `grid` of patch tokens after
    `prefix` global tokens: any module whose forward takes an additive mask broadcast over batch
    and heads (`scaled_dot_product_attention` semantics) as ``attn_mask`` (timm's ``Attention``)
    or ``attention_mask`` (transformers' ViT / DeiT attention, which add it to the logits)."""

    def __init__(self, attention: nn.Module, grid: tuple[int, int], prefix: int, kernel: int):
        super().__init__()
        params = inspect.signature(attention.forward).parameters
        self._mask_arg = next((name for name in MASK_ARGS if name in params), None)
        if self._mask_arg is None:
            raise SurgeonError(f"{type(attention).__name__} takes no attn_mask or attention_mask, so it cannot be made "
                               "local; localize works on attention that takes an additive mask (timm.layers.Attention, "
                               "transformers' ViT attention)")
        for name, child in attention.named_children():
            self.add_module(name, child)
        for name, p in attention.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in attention.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in attention._non_persistent_buffers_set)
        for key, value in vars(attention).items():
            if not key.startswith("_") and key != "training":
                setattr(self, key, value)
        self.training = attention.training
        self._base = type(attention)
        self.grid, self.prefix, self.kernel = tuple(grid), prefix, kernel
        bias = local_bias(self.grid, prefix, kernel)
        self.register_buffer("local_bias", bias, persistent=False)

    def extra_repr(self) -> str:
        return f"{self._base.__name__}, kernel={self.kernel}, grid={self.grid}, prefix={self.prefix}"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **kwargs):  # noqa: ANN201 - the base's type
        attn_mask = kwargs.pop("attention_mask", attn_mask)  # transformers' name (its layers pass it by position)
        bias = self.local_bias
        if bias is not None:
            if x.shape[1] != bias.shape[0]:
                raise SurgeonError(f"local attention was built for {bias.shape[0]} tokens but got {x.shape[1]}; "
                                   "use the model at the input size it was localized for")
            bias = bias.to(x.dtype)
            if attn_mask is not None:
                extra = attn_mask if attn_mask.dtype != torch.bool else torch.zeros_like(attn_mask, dtype=x.dtype).masked_fill(
                    ~attn_mask, float("-inf"))
                bias = bias + extra
            attn_mask = bias
        return self._base.forward(self, x, **{self._mask_arg: attn_mask}, **kwargs)
