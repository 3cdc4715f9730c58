"""`TokenGrid`: a 2-D block (NCHW) run on a token sequence (NLC), so a pass can insert a spatial
block (smoothing, MSA) into a ViT: the patch tokens become the map they came from, prefix tokens
(class, distillation, register) pass through unchanged."""

from __future__ import annotations

import torch
from torch import nn

from surgeon.core.errors import SurgeonError

__all__ = ["TokenGrid"]


class TokenGrid(nn.Module):
    """``y = cat(x[:, :p], to_tokens(block(to_map(x[:, p:]))))`` for tokens x of shape (B, L, C):
    the last H * W tokens, row-major, as a (B, C, H, W) map; the first `prefix` tokens untouched.

    Args:
        block: a module on NCHW maps.
        grid: (H, W) of the patch grid.
        prefix: number of tokens before the patch tokens.
    """

    def __init__(self, block: nn.Module, grid: tuple[int, int], prefix: int = 0) -> None:
        super().__init__()
        self.block, self.grid, self.prefix = block, tuple(grid), prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), p = self.grid, self.prefix
        if x.dim() != 3 or x.shape[1] != p + h * w:
            raise SurgeonError(f"TokenGrid expects (B, {p + h * w}, C) tokens ({p} prefix + a {h}x{w} grid), got "
                               f"{tuple(x.shape)}; keep the input size the model was edited at")
        grid = x[:, p:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        y = self.block(grid).flatten(2).transpose(1, 2)
        return torch.cat([x[:, :p], y], 1)

    def extra_repr(self) -> str:
        return f"grid={self.grid[0]}x{self.grid[1]}, prefix={self.prefix}"
