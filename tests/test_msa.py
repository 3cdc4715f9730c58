"""The AlterNet MSA block against its definition, computed a second, naive way."""

from __future__ import annotations

import math

import pytest
import torch

from surgeon.layers import MSABlock, SpatialSmoothing, relative_position_index


def naive_window_attention(block: MSABlock, u: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + B) v over the positions of one window, written out by hand."""
    q, k, v = block.q(u), block.k(u), block.v(u)
    q, k, v = (t[0, :, rows, cols] for t in (q, k, v))  # (inner, h, w)
    h, w = q.shape[1:]
    pos = [(i, j) for i in range(h) for j in range(w)]
    p = block.window
    out = torch.zeros(q.shape[0], h * w)
    for head in range(block.heads):
        sl = slice(head * block.dim_head, (head + 1) * block.dim_head)
        qh, kh, vh = (t[sl].reshape(block.dim_head, -1) for t in (q, k, v))
        logits = qh.T @ kh / math.sqrt(block.dim_head)
        for a, (y1, x1) in enumerate(pos):
            for b, (y2, x2) in enumerate(pos):
                logits[a, b] += block.rel_bias[(y1 - y2 + p - 1) * (2 * p - 1) + (x1 - x2 + p - 1)]
        out[sl] = vh @ logits.softmax(-1).T
    return out.reshape(-1, h, w)


def test_relative_index_hand_computed_2x2():
    # positions (0,0) (0,1) (1,0) (1,1); table index (dy + 1) * 3 + (dx + 1) with d = query - key
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)


@pytest.mark.parametrize("hw", [(8, 8), (5, 7)])
def test_attention_matches_naive_definition(hw):
    torch.manual_seed(0)
    block = MSABlock(16, width=12, heads=2, window=4, dim_head=8).eval()
    u = torch.randn(1, 12, *hw)
    with torch.no_grad():
        got = block.attention(u)
        for r0 in range(0, hw[0], 4):
            for c0 in range(0, hw[1], 4):
                rows, cols = slice(r0, min(r0 + 4, hw[0])), slice(c0, min(c0 + 4, hw[1]))
                ref = naive_window_attention(block, u, rows, cols)
                assert torch.allclose(got[0, :, rows, cols], ref, atol=1e-5)


def test_locality_outside_the_window_changes_nothing_inside():
    block = MSABlock(8, heads=2, window=4, dim_head=4).eval()
    u = torch.randn(1, 8, 8, 8)
    v = u.clone()
    v[..., 4:, :] += 10 * torch.randn_like(v[..., 4:, :])  # windows below the first row of windows
    with torch.no_grad():
        a, b = block.attention(u), block.attention(v)
    assert torch.equal(a[..., :4, :], b[..., :4, :])
    assert not torch.allclose(a[..., 4:, :], b[..., 4:, :])


@pytest.mark.parametrize("preact, c_in, c_out", [(True, 32, 32), (False, 32, 32), (True, 32, 48)])
def test_parameter_count_formula(preact, c_in, c_out):
    w, heads, d, p = 16, 3, 8, 5
    block = MSABlock(c_in, c_out, width=w, heads=heads, window=p, dim_head=d, preact=preact)
    inner = heads * d
    expected = (2 * c_in if preact else 0) + c_in * w + 2 * w + 3 * w * inner + (2 * p - 1) ** 2 \
        + inner * c_out + c_out + (0 if preact else 2 * c_out) + (c_in * c_out if c_in != c_out else 0)
    assert sum(t.numel() for t in block.parameters()) == expected


def test_padding_leaves_divisible_maps_alone_and_layouts_agree():
    torch.manual_seed(0)
    block = MSABlock(8, heads=1, window=4, dim_head=8).eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        y = block(x)
        crop = block(torch.cat([x, torch.randn(2, 8, 8, 3)], dim=-1))  # padded to 12 wide
        nhwc = MSABlock(8, heads=1, window=4, dim_head=8, channels_last=True).eval()
        nhwc.load_state_dict(block.state_dict())
        assert torch.equal(nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), y)
    assert y.shape == x.shape and crop.shape == (2, 8, 8, 11)
    # the first two windows see only the first 8 columns either way
    assert torch.allclose(crop[..., :8], y, atol=1e-6)


def test_spatial_smoothing_closed_form():
    x = torch.tensor([[[[1.0, 100.0], [-5.0, 3.0]]]])
    t = 10.0
    z = torch.relu(t * torch.tanh(x / t))
    expected = torch.tensor([[[[z[0, 0].sum() / 4, (z[0, 0, 0, 1] + z[0, 0, 1, 1]) / 4],
                               [(z[0, 0, 1, 0] + z[0, 0, 1, 1]) / 4, z[0, 0, 1, 1] / 4]]]])
    assert torch.allclose(SpatialSmoothing(t)(x), expected)
