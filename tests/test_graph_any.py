"""The block graph of models FX cannot trace whole (transformers' ViT, DeiT, Swin, MobileViT; timm's
TinyViT, GC ViT) and of user-written modules: block counts against the config, exactness, taps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import surgeon

tf = pytest.importorskip("transformers")

SIZE = (3, 32, 32)
VIT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8, num_labels=10)


def _hf(cls, config) -> nn.Module:
    from surgeon.model.hf import returning_logits

    torch.manual_seed(0)
    return returning_logits(cls(config).eval(), {"input_size": list(SIZE)})


def _kinds(g: surgeon.blockgraph.BlockGraph) -> list[str]:
    return [b.kind for b in g.blocks]


def _exact(m: nn.Module, g: surgeon.blockgraph.BlockGraph) -> None:
    x = torch.randn(2, *g.input_size)
    with torch.no_grad():
        assert torch.equal(g.module(x), m(x))
    assert sum(b.params for b in g.blocks) == sum(p.numel() for p in m.parameters())


PLAIN = [("vit", tf.ViTForImageClassification, tf.ViTConfig(**VIT)),
         ("deit", tf.DeiTForImageClassification, tf.DeiTConfig(**VIT))]


@pytest.mark.parametrize("name,cls,config", PLAIN, ids=[p[0] for p in PLAIN])
def test_plain_vits_have_two_halves_per_layer(name, cls, config):
    m = _hf(cls, config)
    g = surgeon.graph(m, input_size=SIZE)
    assert list(g.stages) == ["c1"]
    assert _kinds(g) == ["stem"] + ["msa", "mlp"] * config.num_hidden_layers + ["head"]
    assert [b.path.split(".")[2] for b in g.stages["c1"]] == [str(i) for i in range(3) for _ in "ab"]
    assert "classifier" in g["head"].members
    _exact(m, g)


def test_vit_attention_half_is_the_residual_sum():
    """c1.b0 is e + dropout(attention(layernorm_before(e))), e the embeddings: computed from the
    model's own modules and read where the graph's tap says."""
    m = _hf(tf.ViTForImageClassification, tf.ViTConfig(**VIT))
    g = surgeon.graph(m, input_size=SIZE)
    layer = m.vit.layers[0]
    path, side = g["c1.b0"].tap
    assert side == "in"
    x = torch.randn(1, *SIZE)
    seen = {}
    h = m.get_submodule(path).register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        m(x)
        h.remove()
        e = m.vit.embeddings(x)
        expected = e + layer.dropout(layer.attention(layer.layernorm_before(e))[0])
    assert torch.allclose(seen["x"], expected, atol=1e-6)


def test_swin_halves_in_stages_where_resolution_drops():
    config = tf.SwinConfig(image_size=32, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=4,
                           num_labels=10)
    m = _hf(tf.SwinForImageClassification, config)
    g = surgeon.graph(m, input_size=SIZE)
    assert [_kinds_of(g, s) for s in g.stages] == [["msa", "mlp"], ["downsample"] + ["msa", "mlp"] * 2]
    assert g.stages["c2"][-1].grid == (8, 8) and g.stages["c1"][0].grid == (16, 16)
    assert g.blocks[-1].kind == "head" and "classifier" in g.blocks[-1].members
    _exact(m, g)


def _kinds_of(g: surgeon.blockgraph.BlockGraph, stage: str) -> list[str]:
    return [b.kind for b in g.stages[stage]]


def _layers_of(m: nn.Module, *names: str) -> int:
    """Transformer layers, counted by class name (an independent truth)."""
    return sum(type(x).__name__ in names for x in m.modules())


def _check_nested(m: nn.Module, g: surgeon.blockgraph.BlockGraph, layers: int) -> None:
    """One msa and one MLP half per transformer layer, each half one layer's (its members under
    one layer path), and every block after a run of halves that fuses the map it was given
    records where it reads it."""
    halves = [b for b in g.blocks if b.tap[1] == "in" or (b.kind == "mlp" and b.path.endswith(("mlp", "intermediate", "ffn")))]
    assert len(g.select("kind:msa")) == layers == sum(b.kind == "msa" for b in halves)
    assert sum(b.kind == "mlp" for b in halves) == layers
    for b in halves:
        assert len({m.rsplit(".", 1)[0] for m in b.members}) == 1, b.members
    _exact(m, g)


def test_hf_mobilevit_one_pair_per_transformer_layer():
    """A MobileViT block (conv, unfold, L transformer layers, fold, conv, fusion with its input) is
    cut into its parts: the convs, one msa + mlp pair per layer, the fold and fusion (which reads
    the block's input, the downsampling layer's output): the stages stay those of the maps."""
    config = tf.MobileViTConfig(image_size=32, num_labels=10, hidden_sizes=[16, 24, 32],
                                neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32])
    m = _hf(tf.MobileViTForImageClassification, config)
    g = surgeon.graph(m, input_size=SIZE)
    _check_nested(m, g, _layers_of(m, "MobileViTTransformerLayer"))
    fused = [b for b in g.blocks if b.members[-1].endswith(".fusion")]
    assert [b.reads for b in fused] == [(f"mobilevit.encoder.layer.{i}.downsampling_layer", "out") for i in (2, 3, 4)]
    assert all(b.reads is None for b in g.blocks if b not in fused)
    assert len(g.stages) == 5 and [b.grid for b in fused] == [(4, 4), (2, 2), (1, 1)]
    assert g.blocks[-1].kind == "head"


def test_hf_mobilevitv2_patches_have_no_map():
    """transformers' MobileViTV2 layer unfolds its map into (B, C, P, N) patches with a reshape in
    its own forward: its halves read as no map (they were read as windows or a 4x4 map of patch x
    pixel), and the fold after them is no downsampling."""
    config = tf.MobileViTV2Config(image_size=64, num_labels=10, width_multiplier=0.25)
    m = _hf(tf.MobileViTV2ForImageClassification, config)
    g = surgeon.graph(m, input_size=(3, 64, 64))  # 2x2 patches need a 2x2 map in the last stage
    _check_nested(m, g, _layers_of(m, "MobileViTV2TransformerLayer"))
    inner = [b for b in g.blocks if ".transformer.layer." in b.path]
    assert inner and all(b.layout is None and b.grid is None for b in inner)
    folds = [b for b in g.blocks if b.members[-1].endswith("conv_projection")]
    assert folds and all(not b.downsamples and b.kind != "downsample" and b.layout == "NCHW" for b in folds)


def test_nest_windows_read_as_windows():
    """NesT's blockify regroups each level's map into windows of tokens: read as windows over
    exactly the map's positions (BTNC), never as a 196 x 192 map of 4 channels."""
    with torch.device("meta"):
        m = surgeon.load_model("nest_tiny")
    g = surgeon.graph(m)
    for stage, grid in (("c1", (56, 56)), ("c2", (28, 28)), ("c3", (14, 14))):
        halves = [b for b in g.stages[stage] if ".transformer_encoder." in b.path]
        assert halves and {(b.layout, b.grid) for b in halves} == {("BTNC", grid)}, stage


@pytest.mark.parametrize("name,layer", [("mobilevit_xxs", "Block"), ("mobilevitv2_050", "LinearTransformerBlock")])
def test_timm_mobilevit_one_pair_per_transformer_layer(name, layer):
    """timm marks MobileViT blocks not traceable and v1's ends in a fusion: each is cut into its
    convs, its layers' halves and the rest, with the same stages as before (one per map size)."""
    torch.manual_seed(0)
    m = surgeon.load_model(name).eval()
    g = surgeon.graph(m, input_size=(3, 64, 64))
    _check_nested(m, g, _layers_of(m, layer))
    assert list(g.stages) == [f"c{i}" for i in range(1, 6)]
    ends = [b for b in g.blocks if b.tap in [(f"stages.{i}.1", "out") for i in (2, 3, 4)]]
    want = [(b.tap[0], "in") for b in ends] if name == "mobilevit_xxs" else [None] * 3
    assert [b.reads for b in ends] == want and [b.grid for b in ends] == [(8, 8), (4, 4), (2, 2)]
    halves = [b for b in g.blocks if ".transformer." in b.path]
    assert all(b.layout is None and b.grid is None for b in halves)  # unfolded patches: no map to read


def test_crossvit_streams_and_cross_attention():
    """CrossViT's multi-scale block: each stream's layers as halves, the second stream starting from
    the block's input (not the first stream), then one block per cross-attention, which reads the
    first stream; nothing downsamples along the depth, so one stage."""
    from timm.models.crossvit import CrossVit

    torch.manual_seed(0)
    m = CrossVit(img_size=48, patch_size=(12, 16), embed_dim=(16, 32), depth=((1, 2, 0), (1, 2, 0)),
                 num_heads=(2, 2), mlp_ratio=(2, 2, 1), num_classes=10).eval()
    g = surgeon.graph(m, input_size=(3, 48, 48))
    blocks = _layers_of(m, "Block")
    assert len(g.select("kind:mlp")) == blocks == 6
    assert sum(b.path.endswith(".attn") for b in g.select("kind:msa")) == blocks
    fusions = [b for b in g.blocks if any(".fusion." in x for x in b.members)]
    assert len(fusions) == 4 and all(b.kind == "msa" for b in fusions)
    assert [b.reads for b in fusions] == [(f"blocks.{i}.blocks.0", "out") for i in (0, 0, 1, 1)]
    second = [b for b in g.blocks if ".blocks.1.0.attn" in b.path]
    assert [b.reads for b in second] == [("blocks.0", "in"), ("blocks.1", "in")]
    assert list(g.stages) == ["c1"]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(g.module(x), m(x))


def test_mobilevit_half_probes_and_removal():
    """A MobileViT half's tokens regroup the map ((B * P, N, C)): no Fourier or variance (listed
    with the reason), no per-sample norm; its statistics are those of the tensor at its tap; the
    fusion block after it is a map again and gets the paper's Fourier. Removing one half leaves
    the rest of the model's output computable and the half the identity; `alternate` refuses to
    put an MSA in place of the fold + fusion group."""
    from tests.test_probes import as_nchw, capture, paper_fourier

    torch.manual_seed(0)
    m = surgeon.load_model("mobilevit_xxs").eval()
    g = surgeon.graph(m, input_size=(3, 64, 64))
    half, fused = g.select("stages.2.1.transformer.0.attn")[0], g.select("stages.2.1.conv_fusion")[0]
    xs = [torch.randn(2, 3, 64, 64)]
    res = surgeon.probe(m, xs, ("fourier", "variance", "stats", "norm"), f"{half.address},{fused.address}")
    reasons = {u.probe: u.reason for u in res.unmeasured if u.block.address == half.address}
    assert set(reasons) == {"fourier", "variance", "norm"} and "no spatial map" in reasons["fourier"]
    acts = capture(m, res.graph, xs)
    flat = acts[half.address].double().flatten()
    assert acts[half.address].shape[0] == 2 * 4  # batch x patch area
    assert res[half.address]["stats"].mean == pytest.approx(flat.mean().item(), rel=1e-4, abs=1e-6)
    assert res[half.address]["stats"].std == pytest.approx(flat.std().item(), rel=1e-4)
    a = as_nchw(acts[fused.address], fused)
    np.testing.assert_allclose(res[fused.address]["fourier"].dlogamp, paper_fourier(a.numpy()), atol=2e-5)
    new = surgeon.remove(g, half.address)
    with torch.no_grad():
        assert new(xs[0]).shape == (2, 1000)
    with pytest.raises(surgeon.SurgeonError, match=r"c3.b6 \(stages.2.1.norm\+.*\) is 3 modules, not one conv block"):
        surgeon.alternate(g, "c3")  # its last conv block is the fold + fusion group: refused in one line


def test_tiny_vit_one_pair_per_attention_layer():
    """timm's TinyViT marks its blocks not traceable: running them finds their two halves."""
    with torch.device("meta"):
        m = surgeon.load_model("tiny_vit_5m_224")
    g = surgeon.graph(m)
    layers = sum(len(s.blocks) for s in m.stages[1:])
    assert len(g.select("kind:msa")) == len(g.select("kind:mlp")) == layers == 10
    assert [len(g.stages[s]) for s in g.stages][1:] == [1 + 2 * len(s.blocks) for s in m.stages[1:]]


def test_gc_vit_side_input_sets_no_stage():
    """GC ViT's global query generator (pooled down beside the tokens) leaves the stages to the
    tokens: one stage per timm stage."""
    with torch.device("meta"):
        m = surgeon.load_model("gcvit_xxtiny")
    g = surgeon.graph(m)
    assert len(g.stages) == len(m.stages)
    for i, s in enumerate(g.stages.values()):
        assert {b.path.split(".")[1] for b in s} == {str(i)}
    assert surgeon.blockgraph.feature_info_mismatch(g) is None


def _unit(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))


class ParentResNet(nn.Module):
    """Residual adds written in the parent's forward, around plain Sequentials."""

    def __init__(self, n: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block1, self.block2 = _unit(8, 8), _unit(8, 8)
        self.down = nn.Conv2d(8, 16, 1, stride=2)
        self.block3, self.block4 = _unit(16, 16), _unit(16, 16)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, n)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.block1(x))
        x = F.relu(x + self.block2(x))
        x = self.down(x)
        x = F.relu(x + self.block3(x))
        x = F.relu(x + self.block4(x))
        return self.fc(self.pool(x).flatten(1))


def test_residual_adds_in_the_parent_make_units():
    torch.manual_seed(0)
    m = ParentResNet().eval()
    g = surgeon.graph(m, input_size=SIZE)
    assert [(b.address, b.members, b.kind) for b in g.blocks[1:-1]] == [
        ("c1.b0", ("block1",), "conv"), ("c1.b1", ("block2",), "conv"), ("c2.b0", ("down",), "downsample"),
        ("c2.b1", ("block3",), "conv"), ("c2.b2", ("block4",), "conv")]
    assert g["c2.b2"].tap == ("pool", "in")
    x = torch.randn(1, *SIZE)
    with torch.no_grad():  # the unit's output is relu(x + block4(x)), x the output of block3's unit
        h = m.stem(x)
        for b in (m.block1, m.block2):
            h = F.relu(h + b(h))
        h = m.down(h)
        h = F.relu(h + m.block3(h))
        want = F.relu(h + m.block4(h))
    seen = {}
    hook = m.pool.register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        m(x)
    hook.remove()
    assert torch.allclose(seen["x"], want, atol=1e-6)
    assert g.method == "fx"
    _exact(m, g)


class Layer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MHAViT(nn.Module):
    def __init__(self, d: int = 16, depth: int = 3, n: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 17, d))
        self.layers = nn.ModuleList(Layer(d) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, n)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x)[:, 0])


def test_vit_on_multihead_attention():
    torch.manual_seed(0)
    m = MHAViT().eval()
    g = surgeon.graph(m, input_size=SIZE)
    assert _kinds(g) == ["stem"] + ["msa", "mlp"] * 3 + ["head"]
    assert g["c1.b1"].tap == ("layers.0", "out") and g["c1.b0"].tap == ("layers.0.norm2", "in")
    _exact(m, g)


class Opaque(nn.Module):
    """A CNN no rule cuts into blocks (no residual, no containers): its convs are layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.d = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        for conv in (self.a, self.b, self.c, self.d):
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("declare", ["list", "function", "attribute"])
def test_declared_blocks_drive_everything(declare):
    torch.manual_seed(0)
    m = Opaque().eval()
    paths = ["b", "c", "d"]
    if declare == "attribute":
        m.surgeon_blocks = paths
        g = surgeon.graph(m, input_size=SIZE)
    else:
        g = surgeon.graph(m, input_size=SIZE, blocks=paths if declare == "list" else
                          (lambda path, mod: isinstance(mod, nn.Conv2d) and path != "a"))
    assert [(b.address, b.members, b.tap) for b in g.blocks] == [
        ("stem", ("a",), ("a", "out")), ("c1.b0", ("b",), ("b", "out")), ("c2.b0", ("c",), ("c", "out")),
        ("c2.b1", ("d",), ("d", "out")), ("head", ("fc",), ("fc", "out"))]
    _exact(m, g)
    x = torch.randn(2, *SIZE)  # downstream: a feature extractor built from the declaration
    feats = surgeon.create_feature_extractor(m, "c*.b-1", input_size=SIZE, declared=None if declare == "attribute"
                                             else paths)(x)
    with torch.no_grad():
        assert torch.equal(feats["c2.b1"], m.d(torch.relu(m.c(torch.relu(m.b(torch.relu(m.a(x))))))))


@pytest.mark.parametrize("bad,fragment", [(["nope"], "not a module"), (["b", "b.weight"], "not a module"),
                                          ("b", "one string"), ([], "no block declared")])
def test_bad_declarations_are_one_line(bad, fragment):
    with pytest.raises(surgeon.SurgeonError, match=fragment) as err:
        surgeon.graph(Opaque(), input_size=SIZE, blocks=bad)
    assert "\n" not in str(err.value)


def test_feature_extractor_matches_torchvision():
    """The last block of every stage of torchvision's ResNet-18 is its layerN output: the same
    tensors as torchvision's own create_feature_extractor."""
    from torchvision.models import resnet18
    from torchvision.models.feature_extraction import (
        create_feature_extractor as tv_extractor,
    )

    torch.manual_seed(0)
    m = resnet18(num_classes=10).eval()
    ours = surgeon.create_feature_extractor(m, {f"c{i}.b-1": f"layer{i}" for i in range(1, 5)}, input_size=SIZE)
    theirs = tv_extractor(m, return_nodes=[f"layer{i}" for i in range(1, 5)])
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(surgeon.SurgeonError, match="valid"):
        surgeon.create_feature_extractor(m, "c9", input_size=SIZE)


def test_feature_extractor_on_hf_swin_reads_the_residual_halves():
    config = tf.SwinConfig(image_size=32, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=4,
                           num_labels=10)
    m = _hf(tf.SwinForImageClassification, config)
    fx = surgeon.create_feature_extractor(m, "kind:mlp", input_size=SIZE)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        feats = fx(x)
        hidden = m.swin(x, output_hidden_states=True).reshaped_hidden_states  # per stage, after its blocks
    assert list(feats) == ["c1.b1", "c2.b2", "c2.b4"]
    assert torch.equal(feats["c2.b4"], hidden[2].flatten(2).transpose(1, 2))


class Output(nn.Module):
    """The MLP's last layer and the residual sum, in a child (transformers' ``CvtOutput``)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(2 * d, d)

    def forward(self, hidden, input_tensor):
        return self.dense(hidden) + input_tensor


class ChildSumLayer(Layer):
    def __init__(self, d: int) -> None:
        super().__init__(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU())
        self.output = Output(d)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return self.output(self.mlp(self.norm2(x)), x)


def test_residual_sum_written_in_a_child_splits_the_layer():
    torch.manual_seed(0)
    m = MHAViT().eval()
    m.layers = nn.ModuleList(ChildSumLayer(16) for _ in range(3))
    g = surgeon.graph(m, input_size=SIZE)
    assert _kinds(g) == ["stem"] + ["msa", "mlp"] * 3 + ["head"]
    assert g["c1.b1"].members == ("layers.0.norm2", "layers.0.mlp", "layers.0.output")
    _exact(m, g)


class CrossLayer(Layer):
    def forward(self, q, x):
        q = q + self.attn(self.norm1(q), x, x, need_weights=False)[0]
        return q + self.mlp(self.norm2(q))


class CrossAttentionDecoder(nn.Module):
    """Logits decoded by a residual cross-attention layer from a learned query (Perceiver's way):
    its last block is an MLP half, no classifier head."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, 8)
        self.layers = nn.ModuleList(Layer(d) for _ in range(2))
        self.query = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = CrossLayer(d)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return self.decoder(self.query.expand(len(x), -1, -1), x)[:, 0]


def test_a_classifier_without_a_head_is_refused_in_one_line():
    with pytest.raises(surgeon.SurgeonError, match="declare its blocks") as err:
        surgeon.graph(CrossAttentionDecoder().eval(), input_size=SIZE)
    assert "\n" not in str(err.value)


#: (model, block): one block per family, probed where the graph taps it
PROBED = {
    "hf-vit": (lambda: _hf(tf.ViTForImageClassification, tf.ViTConfig(**VIT)), "c1.b2"),
    "hf-swin": (lambda: _hf(tf.SwinForImageClassification, tf.SwinConfig(
        image_size=32, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=4, num_labels=10)), "c2.b1"),
    "hf-convnext": (lambda: _hf(tf.ConvNextForImageClassification, tf.ConvNextConfig(
        hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 2, 1], num_labels=10)), "c3.b1"),
    "hf-resnet": (lambda: _hf(tf.ResNetForImageClassification, tf.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 2, 1], num_labels=10)), "c3.b1"),
    "parent-resnet": (lambda: ParentResNet().eval(), "c2.b2"),
    "mha-vit": (lambda: MHAViT().eval(), "c1.b3"),
}


@pytest.mark.parametrize("name", list(PROBED))
def test_probes_of_one_block_equal_the_notebook_formulas(name):
    """Fourier dlogamp and feature-map variance of one block equal the paper's formulas computed
    in plain numpy / torch on the tensor a hook reads at the graph's tap (tokens as their grid)."""
    from tests.test_probes import as_nchw, capture, paper_fourier

    torch.manual_seed(0)
    make, address = PROBED[name]
    m = make()
    xs = [torch.randn(2, *SIZE), torch.randn(3, *SIZE)]
    res = surgeon.probe(m, xs, ("fourier", "variance"), address)
    b = res.graph[address]
    a = as_nchw(capture(m, res.graph, xs)[address], b)
    got = res[address]
    np.testing.assert_allclose(got["fourier"].dlogamp, paper_fourier(a.numpy()), atol=2e-5)
    assert got["variance"] == pytest.approx(torch.var(a.double(), dim=(2, 3)).mean().item(), rel=1e-5)


def test_hessian_top2_of_a_user_written_cnn_matches_dense_reference():
    """Top-2 Hessian eigenvalues of the NLL w.r.t. the head of a residual CNN of your own (its
    classifier) vs torch's dense Hessian of the same loss on the classifier's input."""
    torch.manual_seed(0)
    m = ParentResNet().eval()
    x, y = torch.randn(4, *SIZE), torch.randint(0, 10, (4,))
    got = surgeon.hessian_eigs(m, (x, y), k=2, blocks="head").eigenvalues
    params = [t.detach() for t in (m.fc.weight, m.fc.bias)]
    seen = {}
    hook = m.fc.register_forward_pre_hook(lambda mod, a: seen.setdefault("h", a[0]))
    with torch.no_grad():
        m(x)
    hook.remove()

    def nll(flat):
        w, b = (p.view_as(t) for p, t in zip(flat.split([t.numel() for t in params]), params))
        return F.cross_entropy(seen["h"] @ w.T + b, y)

    dense = torch.autograd.functional.hessian(nll, torch.cat([t.flatten() for t in params]))
    ref = torch.linalg.eigvalsh(dense.double()).abs().sort(descending=True).values[:2]
    assert torch.allclose(torch.as_tensor(got, dtype=torch.float64)[:2].abs(), ref, rtol=1e-3, atol=1e-6)
