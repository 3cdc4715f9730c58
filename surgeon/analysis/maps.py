"""Where a block output's spatial positions are: `Geometry` reads one block output (NCHW, NHWC,
tokens with prefix tokens dropped, NesT's windows) as maps over its H x W positions, row-major.
"""

from __future__ import annotations

import math

import torch

from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import Block

__all__ = ["Geometry"]


class Geometry:
    """How to read one block output as maps: a view (B, C, P) (``pos_dim`` 2) or (B, P, C)
    (``pos_dim`` 1) over its P = H * W spatial positions, and each position's (row, col)."""

    def __init__(self, block: Block, device: torch.device):
        self.block = block
        self.layout = block.layout if block.grid and min(block.grid) >= 2 else None
        self.grid = block.grid
        self.pos_dim = 2 if self.layout == "NCHW" else 1
        if self.layout is None:
            return
        h, w = block.grid
        if self.layout == "BTNC":  # NesT: T windows of N tokens, windows and tokens row-major
            t, n = block.out_shape[1], block.out_shape[2]
            side = math.isqrt(n)
            t_idx, n_idx = torch.arange(t * n).div(n, rounding_mode="floor"), torch.arange(t * n) % n
            rows = t_idx.div(w // side, rounding_mode="floor") * side + n_idx.div(side, rounding_mode="floor")
            cols = (t_idx % (w // side)) * side + n_idx % side
        else:
            pos = torch.arange(h * w)
            rows, cols = pos.div(w, rounding_mode="floor"), pos % w
        self.rows, self.cols = rows.to(device), cols.to(device)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (one block output) as a (B, C, P) or (B, P, C) view; unchanged without a grid."""
        if self.layout is None:
            return x
        if self.layout == "NCHW":
            m = x.flatten(2)
        elif self.layout == "NLC":
            m = x[:, self.block.prefix_tokens:]
        else:
            m = x.flatten(1, 2)
        if m.dim() != 3 or m.shape[self.pos_dim] != self.rows.numel():
            raise SurgeonError(
                f"block {self.block.address} gave shape {tuple(x.shape)}, not the {self.layout} layout with a "
                f"{self.grid[0]}x{self.grid[1]} grid seen when the graph was built; keep every input the same size"
            )
        return m

    def unflatten(self, m: torch.Tensor) -> torch.Tensor:
        """A (b, C, P) / (b, P, C) chunk as (b, C, H, W) / (b, H, W, C), positions row-major."""
        h, w = self.grid
        if self.layout == "BTNC":
            m = m.new_empty(m.shape).index_copy_(1, self.rows * w + self.cols, m)
        return m.unflatten(self.pos_dim, (h, w))
