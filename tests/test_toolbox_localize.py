"""Local attention (`surgeon.localize`): exact with a full kernel, neighbourhoods from a direct
computation, recorded and replayed like every pass."""

from __future__ import annotations

import itertools

import pytest
import torch

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.layers.local_attention import LocalAttention

SIZE = (3, 32, 32)


def _vit():
    torch.manual_seed(0)
    return surgeon.load_model("test_vit", num_classes=5, img_size=32, patch_size=8)  # a 4x4 grid + 1 class token


def test_full_kernel_is_exact_and_the_original_is_unchanged():
    m = _vit()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    full = surgeon.localize(m, kernel=7)  # 2 * 4 - 1: every query sees the whole grid
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(full(x), m(x))
    assert list(full.state_dict()) == list(m.state_dict())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(mod, LocalAttention) for mod in m.modules())


def _reference(attn, x, allowed):
    """Multi-head attention written out: token i attends to the keys j with allowed[i][j]."""
    b, n, c = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    out = torch.zeros(b, h, n, c // h)
    for i in range(n):
        keys = [j for j in range(n) if allowed[i][j]]
        w = (q[:, :, i:i + 1] @ k[:, :, keys].transpose(-2, -1) * (c // h) ** -0.5).softmax(-1)
        out[:, :, i] = (w @ v[:, :, keys])[:, :, 0]
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("kernel", [1, 3])
def test_neighbourhoods_equal_a_direct_computation(kernel):
    m = _vit()
    attn = m.blocks[0].attn
    local = LocalAttention(attn, (4, 4), 1, kernel)
    cells = [None] + list(itertools.product(range(4), range(4)))  # token 0: the class token
    r = kernel // 2
    allowed = [[a is None or b is None or (abs(a[0] - b[0]) <= r and abs(a[1] - b[1]) <= r) for b in cells]
               for a in cells]
    if kernel == 1:  # each patch sees only itself and the class token
        assert all(sum(row) == 2 for row in allowed[1:])
    x = torch.randn(2, 17, attn.qkv.in_features)
    with torch.no_grad():
        torch.testing.assert_close(local(x), _reference(attn, x, allowed), rtol=1e-5, atol=1e-5)


def test_saved_and_replayed_like_other_passes(tmp_path):
    local = surgeon.localize(_vit(), "kind:msa", kernel=3)
    path = surgeon.save(local, tmp_path / "local.safetensors")
    assert surgeon.read_cfg(path).passes[-1] == {"pass": "localize", "blocks": "kind:msa", "kernel": 3,
                                                      "input_size": list(SIZE)}
    back = surgeon.load(path)
    x = torch.randn(1, *SIZE)
    with torch.no_grad():
        assert torch.equal(back(x), local(x))


def test_bad_requests_are_one_line_errors():
    with pytest.raises(SurgeonError, match="odd"):
        surgeon.localize(_vit(), kernel=2)
    with pytest.raises(SurgeonError, match="odd integer in"):  # the range table's rule (surgeon.core.checks.ARGS)
        surgeon.surgery.alternet.cifar_stem(surgeon.load_model("test_resnet"), kernel=4)
    with pytest.raises(SurgeonError, match=r"c1\.b0 \(layer1\.0\) is a conv block, not attention"):  # why, not what
        surgeon.localize(surgeon.load_model("test_resnet"), "c1.b0", input_size=SIZE)
