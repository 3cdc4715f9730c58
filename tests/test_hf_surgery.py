"""Surgery on transformers models (issue #20 item 4): `alternate` and `remove` on HF ResNet and
ConvNeXt keep every shape and every untouched tensor; `remove`, `replace` and `insert` on the
residual halves of HF ViT and Swin (their attention returns ``(output, weights)``, their layers
take masks and grid sizes) give what the model computes with that branch zeroed / replaced, or
refuse in one line; an `hf:` model edited, saved and loaded computes what it did; `localize` on
HF attention is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import surgeon
from tests.test_cli import surgeon as cli

transformers = pytest.importorskip("transformers")
SIZE = (3, 32, 32)


def _resnet():
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 2, 2, 1], num_labels=10)
    return transformers.ResNetForImageClassification(cfg).eval()


def _convnext():
    cfg = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 64], depths=[1, 2, 2, 1], num_labels=10)
    return transformers.ConvNextForImageClassification(cfg).eval()


def _vit():
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, num_labels=10)
    return transformers.ViTForImageClassification(cfg).eval()


def _swin():
    cfg = transformers.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[1, 2], num_heads=[2, 2],
                                  window_size=4, num_labels=10)
    return transformers.SwinForImageClassification(cfg).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (directory written by save_pretrained, the `hf:` model loaded from it)."""
    out = {}
    for name, make in (("vit", _vit), ("swin", _swin)):
        d = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        make().save_pretrained(d)
        out[name] = (d, surgeon.load_model(f"hf:{d}", img_size=32))
    return out


def _zeroed(model: nn.Module, path: str) -> nn.Module:
    """`model` with the module at `path` returning zeros in place of its first output (a forward
    hook: the plain-torch meaning of a removed residual branch)."""
    def hook(mod, args, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]), *out[1:])
        return torch.zeros_like(out)

    model.get_submodule(path).register_forward_hook(hook)
    return model


def _untouched(before: dict, after: nn.Module, edited: str) -> None:
    kept = {k: v for k, v in after.state_dict().items() if not k.startswith(edited + ".")}
    assert kept and all(torch.equal(v, before[k]) for k, v in kept.items())


@pytest.mark.parametrize("name, kind, half", [("vit", "msa", 0), ("vit", "mlp", 1), ("swin", "msa", 1), ("swin", "mlp", 1)])
def test_removing_an_hf_half_zeroes_its_branch_and_the_file_replays(saved, tmp_path, name, kind, half):
    """remove(half) computes what the model computes with the half's branch module returning
    zeros (x -> x for the half), keeps every other tensor, and replays from its file."""
    import copy

    _, model = saved[name]
    g = surgeon.graph(model, input_size=SIZE)
    block = [b for b in g.blocks if b.kind == kind][half]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    les = surgeon.remove(model, block.address)
    _untouched(before, les, block.path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is never changed
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        want = _zeroed(copy.deepcopy(model), block.path)(x)
        assert torch.equal(les(x), want) and not torch.equal(model(x), want)
        back = surgeon.load(surgeon.save(les, tmp_path / "les.safetensors"))
        assert torch.equal(back(x), les(x))


@pytest.mark.parametrize("make", [_vit, _swin], ids=["vit", "swin"])
def test_replace_and_insert_on_hf_halves_keep_shapes_or_refuse_in_one_line(make):
    """The first layer's two halves and the first block of stage 2 (Swin: the downsampling block)
    under replace (identity, zero, smoothing, msa) and insert (smoothing): the logits keep their
    shape, or a one-line refusal names the block."""
    g = surgeon.graph(make(), input_size=SIZE)
    edits = {"identity": lambda b: surgeon.replace(g, b.address, "identity"),
             "zero": lambda b: surgeon.replace(g, b.address, "zero"),
             "smoothing": lambda b: surgeon.replace(g, b.address, "smoothing"),
             "msa": lambda b: surgeon.replace(g, b.address, "msa", heads=1, window=2),
             "insert": lambda b: surgeon.insert(g, after=b.address, module="smoothing")}
    done = set()
    for b in [*g.stages["c1"][:2], *g.stages.get("c2", [])[:1]]:
        for edit, fn in edits.items():
            try:
                new = fn(b)
            except surgeon.SurgeonError as exc:
                assert "\n" not in str(exc) and (b.address in str(exc) or b.path in str(exc)), (edit, str(exc))
                continue
            assert surgeon.logits_of(new(torch.randn(2, *SIZE))).shape == (2, 10)
            done.add((edit, b.kind))
    assert {("identity", "msa"), ("zero", "mlp"), ("insert", "mlp")} <= done


def test_insert_after_an_hf_layer_applies_to_its_output():
    """Smoothing inserted after a whole ViT layer (it takes a mask, returns a tensor) equals the
    model with that smoothing applied to the layer's output by a hook."""
    import copy

    model = _vit()
    g = surgeon.graph(model, input_size=SIZE)
    last = g.stages["c1"][-1]
    new = surgeon.insert(g, after=last.address, module="smoothing")
    ref = copy.deepcopy(model)
    block = surgeon.layers.TokenGrid(surgeon.layers.SpatialSmoothing(), last.grid, last.prefix_tokens)
    ref.get_submodule(last.tap[0]).register_forward_hook(lambda m, a, y: block(y))
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(surgeon.logits_of(new(x)), surgeon.logits_of(ref(x)))


def test_a_half_that_zeros_cannot_make_the_identity_is_refused():
    """A post-norm branch (x + norm(attn(x)), the norm's bias not zero): zeroing the attention
    leaves x + bias, so remove refuses instead of writing a wrong lesion."""
    class Layer(nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.norm1, self.attn, self.post = nn.LayerNorm(d), nn.MultiheadAttention(d, 2, batch_first=True), nn.LayerNorm(d)
            self.norm2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
            nn.init.constant_(self.post.bias, 0.1)

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.post(self.attn(h, h, h, need_weights=False)[0])
            return x + self.mlp(self.norm2(x))

    model = nn.Sequential(nn.Conv2d(3, 16, 8, 8), nn.Flatten(2), surgeon.layers.Transpose() if hasattr(surgeon.layers, "Transpose") else _T(),
                          Layer(), _Pool(), nn.Linear(16, 10)).eval()
    g = surgeon.graph(model, input_size=SIZE)
    msa = next(b for b in g.blocks if b.kind == "msa")
    with pytest.raises(surgeon.SurgeonError, match=r"cannot remove c\d\.b\d \(3\.attn\).*cannot become the identity") as err:
        surgeon.remove(g, msa.address)
    assert "\n" not in str(err.value)
    mlp = next(b for b in g.blocks if b.kind == "mlp")
    assert surgeon.remove(g, mlp.address)  # its branch ends in the zeroed module: accepted


class _T(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class _Pool(nn.Module):
    def forward(self, x):
        return x.mean(1)


def test_cli_lesion_of_an_hf_directory(saved, tmp_path):
    """`surgeon lesion hf:<dir>` on a ViT attention half: exit 0, and the file computes what the API's lesion does."""
    d, model = saved["vit"]
    r = cli("lesion", f"hf:{d}", "--img-size", "32", "--blocks", "c1.b0", "--out", "les.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(surgeon.load(tmp_path / "les.safetensors")(x), surgeon.remove(model, "c1.b0")(x))


@pytest.mark.parametrize("make", [_resnet, _convnext], ids=["resnet", "convnext"])
def test_alternate_and_remove_on_hf_cnns_keep_shapes_and_untouched_tensors(make):
    torch.manual_seed(0)
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = surgeon.graph(model, input_size=SIZE)
    last = g.stages["c2"][-1]
    alt = surgeon.alternate(model, {"c2": 1}, input_size=SIZE)
    x = torch.randn(2, *SIZE)
    assert surgeon.logits_of(alt(x)).shape == (2, 10)
    kept = {k: v for k, v in alt.state_dict().items() if not k.startswith(last.path + ".")}
    assert kept and all(torch.equal(v, before[k]) for k, v in kept.items() if k in before)
    assert any(k.startswith(last.path + ".") for k in alt.state_dict()) and last.path + ".msa" not in before
    les = surgeon.remove(model, last.address, input_size=SIZE)
    assert surgeon.logits_of(les(x)).shape == (2, 10)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is never changed


@pytest.mark.parametrize("make", [_resnet, _convnext], ids=["resnet", "convnext"])
def test_an_hf_model_edited_saved_and_loaded_computes_what_it_did(tmp_path, make):
    torch.manual_seed(0)
    make().save_pretrained(tmp_path / "hf")
    model = surgeon.load_model(f"hf:{tmp_path / 'hf'}", img_size=32)
    alt = surgeon.alternate(model, {"c2": 1}, input_size=SIZE)
    path = surgeon.save(alt, tmp_path / "alt.safetensors")
    back = surgeon.load(path)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(back(x), alt(x))


def _local_reference(attn, x, kernel, grid=(4, 4)):
    """transformers' ViT attention written out (q/k/v/o projections, heads from the module), token
    i attending only to the keys within its k x k neighbourhood and the class token."""
    import itertools

    cells = [None, *itertools.product(range(grid[0]), range(grid[1]))]
    r = kernel // 2
    b, n, c = x.shape
    h, d = attn.num_attention_heads, attn.head_dim
    q, k, v = (proj(x).reshape(b, n, h, d).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = torch.zeros(b, h, n, d)
    for i, a in enumerate(cells):
        keys = [j for j, o in enumerate(cells) if a is None or o is None or (abs(a[0] - o[0]) <= r and abs(a[1] - o[1]) <= r)]
        w = (q[:, :, i:i + 1] @ k[:, :, keys].transpose(-2, -1) * d ** -0.5).softmax(-1)
        out[:, :, i] = (w @ v[:, :, keys])[:, :, 0]
    return attn.o_proj(out.transpose(1, 2).reshape(b, n, h * d))


def test_localize_on_hf_vit_attention_equals_a_direct_computation(saved, tmp_path):
    """transformers' ViT attention takes an additive `attention_mask`: localize restricts it as
    timm's. A full kernel is exact; kernel 1 equals attention written out; the file replays."""
    _, model = saved["vit"]
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(surgeon.localize(model, kernel=7)(x), model(x))  # 2 * 4 - 1: the whole 4x4 grid
    local = surgeon.localize(model, kernel=1)
    attn = local.vit.layers[0].attention
    tokens = torch.randn(2, 17, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(tokens)[0], _local_reference(attn, tokens, 1), rtol=1e-5, atol=1e-5)
        back = surgeon.load(surgeon.save(local, tmp_path / "local.safetensors"))
        assert torch.equal(back(x), local(x)) and not torch.equal(local(x), model(x))


def test_localize_on_hf_swin_window_attention_is_refused_in_one_line():
    with pytest.raises(surgeon.SurgeonError, match=r"c1\.b0 \(.*attention\) is attention over windows") as err:
        surgeon.localize(_swin(), input_size=SIZE)
    assert "\n" not in str(err.value)


def test_alternate_on_pure_attention_models_refuses_as_on_timm(saved, tmp_path):
    """alternate replaces conv blocks: on an HF ViT or Swin, as on timm's ViT, it refuses in one
    line naming the stage and its kinds (API; the CLI exits 2 with that line and no traceback)."""
    def refusal(model):
        with pytest.raises(surgeon.SurgeonError) as err:
            surgeon.alternate(model, "c1", input_size=SIZE)
        return str(err.value)

    want = "stage c1 has no conv block to replace (kinds: mlp, msa)"
    assert refusal(surgeon.load_model("test_vit", img_size=32, patch_size=8)) == want
    assert refusal(saved["vit"][1]) == want and refusal(saved["swin"][1]) == want
    r = cli("alternate", f"hf:{saved['vit'][0]}", "--img-size", "32", "--stages", "c1", "--out", "a.safetensors",
            cwd=tmp_path)
    assert r.returncode == 2 and want in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "a.safetensors").exists()


def test_a_user_written_model_alternates_and_its_save_is_refused_in_one_line(tmp_path):
    """A residual CNN of your own (residual adds in the parent's forward) takes alternate; it has no
    recipe to rebuild it from, so save refuses in one line saying how to get one."""
    from tests.test_graph_any import ParentResNet

    model = ParentResNet().eval()
    alt = surgeon.alternate(model, {"c2": 1}, input_size=SIZE)
    assert isinstance(alt.block4, surgeon.layers.MSABlock) and surgeon.logits_of(alt(torch.randn(2, *SIZE))).shape == (2, 10)
    with pytest.raises(surgeon.SurgeonError, match="no recipe: create it with surgeon.load_model") as err:
        surgeon.save(alt, tmp_path / "alt.safetensors")
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
