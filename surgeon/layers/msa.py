"""The AlterNet MSA block (Park & Kim 2022, Sec. 4, Fig. 11): local multi-head self-attention in
non-overlapping p x p windows, with a relative-position bias shared by the heads.

Pre-activation form (for pre-activation ResNets, ConvNeXt, inverted residuals)::

    z = GELU(BN(x))
    u = BN(conv1x1(z))                                  # to the bottleneck width
    q, k, v = conv1x1(u)  (no bias; heads of dim_head)
    a = softmax(q k^T / sqrt(dim_head) + B) v           # inside each p x p window; B is one
                                                        # (2p-1)^2 table shared by all heads
    y = shortcut(x) + DropPath(conv1x1(a) + bias)       # shortcut: identity, or conv1x1(z)

Post-activation form (for post-activation ResNets, whose blocks end in ``act(x + f(x))``)::

    u = GELU(BN(conv1x1(x)));  a = attention(u);  y = ReLU(shortcut(x) + DropPath(BN(conv1x1(a))))

There is no MLP inside: the neighbouring conv blocks act as the feed-forward part. A feature map
that the window does not divide is padded to a multiple of p (the padded keys masked out) and
cropped back, so a map the window divides is computed exactly as without padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath
from timm.layers.pos_embed_rel import gen_relative_position_index
from torch import nn

from surgeon.core import checks

__all__ = ["MSABlock", "relative_position_index"]


def relative_position_index(window: int) -> torch.Tensor:
    """(p^2, p^2) indices into a (2p-1)^2 table: the bias of query i for key j depends only on
    their offset (dy, dx), stored at (dy + p - 1) * (2p - 1) + (dx + p - 1) (timm's
    `gen_relative_position_index`, as in Swin)."""
    return gen_relative_position_index((window, window))


class MSABlock(nn.Module):
    """Windowed multi-head self-attention block with a residual connection.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output (default: ``in_channels``); a different value adds a
            1x1 projection on the skip.
        width: bottleneck width the attention runs at (default: ``in_channels``).
        heads: attention heads; the attention's inner width is ``heads * dim_head``.
        window: side p of the non-overlapping attention windows.
        dim_head: channels per head (the paper: 64).
        drop_path: stochastic depth rate of the residual branch.
        preact: pre-activation form (True) or post-activation form (False), see the module doc.
        channels_last: inputs and outputs are NHWC (timm ConvNeXt / Swin style) instead of NCHW.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, width: int | None = None,
                 heads: int = 3, window: int = 7, dim_head: int = 64, drop_path: float = 0.0,
                 preact: bool = True, channels_last: bool = False) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            checks.check_int(name, value, min=1, max=1_000_000)
        checks.args(heads=heads, window=window, dim_head=dim_head, drop_path=drop_path)
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        width = in_channels if width is None else width
        self.heads, self.window, self.dim_head = heads, window, dim_head
        self.preact, self.channels_last = preact, channels_last
        inner = heads * dim_head
        if preact:
            self.norm0 = nn.BatchNorm2d(in_channels)
            self.act0 = nn.GELU()
        self.reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.act1 = nn.Identity() if preact else nn.GELU()
        self.q = nn.Conv2d(width, inner, 1, bias=False)
        self.k = nn.Conv2d(width, inner, 1, bias=False)
        self.v = nn.Conv2d(width, inner, 1, bias=False)
        self.rel_bias = nn.Parameter(torch.empty((2 * window - 1) ** 2))
        nn.init.normal_(self.rel_bias, std=0.02)
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)
        self.proj = nn.Conv2d(inner, out_channels, 1, bias=True)
        self.norm2 = nn.Identity() if preact else nn.BatchNorm2d(out_channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels
                         else nn.Identity())
        self.act_out = nn.Identity() if preact else nn.ReLU(inplace=False)

    def attention(self, u: torch.Tensor) -> torch.Tensor:
        """Multi-head attention inside each p x p window of the map `u` (B, C, H, W)."""
        p = self.window
        H, W = u.shape[-2:]
        pad_h, pad_w = (-H) % p, (-W) % p
        q, k, v = self.q(u), self.k(u), self.v(u)
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (0, pad_w, 0, pad_h)) for t in (q, k, v))
        nh, nw = (H + pad_h) // p, (W + pad_w) // p
        split = "b (h d) (nh p1) (nw p2) -> (b nh nw) h (p1 p2) d"
        q, k, v = (rearrange(t, split, h=self.heads, p1=p, p2=p) for t in (q, k, v))
        bias = self.rel_bias[self.rel_index].to(q.dtype)  # (p^2, p^2), shared by heads
        if pad_h or pad_w:  # padded keys never receive attention
            valid = torch.ones(H, W, dtype=torch.bool, device=u.device)
            valid = F.pad(valid, (0, pad_w, 0, pad_h), value=False)
            valid = rearrange(valid, "(nh p1) (nw p2) -> (nh nw) 1 (p1 p2)", p1=p, p2=p)
            mask = bias.masked_fill(~valid, float("-inf"))  # (nh*nw, p^2, p^2)
            mask = mask.unsqueeze(1).repeat(u.shape[0], 1, 1, 1)  # (b*nh*nw, 1, p^2, p^2)
        else:
            mask = bias
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.dim_head))
        a = rearrange(a, "(b nh nw) h (p1 p2) d -> b (h d) (nh p1) (nw p2)", nh=nh, nw=nw, p1=p, p2=p)
        return a[..., :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        if self.preact:
            z = self.act0(self.norm0(x))
            skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(z)
            u = self.norm1(self.reduce(z))
        else:
            skip = self.shortcut(x)
            u = self.act1(self.norm1(self.reduce(x)))
        out = self.norm2(self.proj(self.attention(u)))
        y = self.act_out(skip + self.drop_path(out))
        return y.permute(0, 2, 3, 1) if self.channels_last else y

    def extra_repr(self) -> str:
        return f"heads={self.heads}, window={self.window}, dim_head={self.dim_head}, preact={self.preact}"
