"""The block graph on a representative zoo: exact equivalence, stages, kinds, selection."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import surgeon
from surgeon import SurgeonError

# (spec, img_size for load_model, input size): small inputs where the architecture allows.
ZOO = [
    ("resnet18", None, (3, 64, 64)),
    ("resnet50", None, (3, 64, 64)),
    ("resnetv2_50", None, (3, 64, 64)),
    ("convnext_tiny", None, (3, 64, 64)),
    ("vit_tiny_patch16_224", 64, (3, 64, 64)),
    ("deit_tiny_patch16_224", 64, (3, 64, 64)),
    ("swin_tiny_patch4_window7_224", None, (3, 224, 224)),
    ("pit_ti_224", None, (3, 224, 224)),
    ("mixer_s16_224", 64, (3, 64, 64)),
    ("efficientnet_b0", None, (3, 64, 64)),
    ("mobilenetv3_small_100", None, (3, 64, 64)),
    ("regnety_002", None, (3, 64, 64)),
    ("coatnet_0_rw_224", None, (3, 224, 224)),
    ("maxvit_tiny_rw_224", None, (3, 224, 224)),
    ("mobilevit_xxs", None, (3, 64, 64)),
    ("tv:resnet18", None, (3, 64, 64)),
    ("tv:vgg11", None, (3, 64, 64)),
    ("tv:alexnet", None, (3, 96, 96)),
    ("tv:vit_b_16", 64, (3, 64, 64)),
    ("tv:swin_t", None, (3, 64, 64)),
    ("tv:convnext_tiny", None, (3, 64, 64)),
    ("tv:efficientnet_b0", None, (3, 64, 64)),
    ("tv:mobilenet_v3_small", None, (3, 64, 64)),
    ("tv:densenet121", None, (3, 64, 64)),
]

_cache: dict[str, tuple[nn.Module, surgeon.blockgraph.BlockGraph]] = {}


def built(spec: str) -> tuple[nn.Module, surgeon.blockgraph.BlockGraph]:
    if spec not in _cache:
        _, img, size = next(z for z in ZOO if z[0] == spec)
        torch.manual_seed(0)
        model = surgeon.load_model(spec, img_size=img)
        _cache[spec] = (model, surgeon.graph(model, input_size=size))
    return _cache[spec]


def kinds(g: surgeon.blockgraph.BlockGraph, stage: str) -> list[str]:
    return [b.kind for b in g.stages[stage]]


@pytest.mark.parametrize("spec", [z[0] for z in ZOO])
def test_exact_equivalence_and_state(spec):
    model, g = built(spec)
    assert g.method == "fx", g.fallback_reason
    x = torch.randn(2, *g.input_size)
    with torch.no_grad():
        assert torch.equal(model(x), g.module(x))
    # same state_dict keys and tensors, both directions load strictly
    a, b = model.state_dict(), g.module.state_dict()
    assert list(a) == list(b) or set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    g.module.load_state_dict(a, strict=True)
    model.load_state_dict(b, strict=True)
    # blocks cover every parameter exactly once
    assert sum(blk.params for blk in g.blocks) == sum(p.numel() for p in model.parameters())
    assert g.blocks[0].address == "stem" and g.blocks[-1].address == "head"
    assert g.blocks[-1].out_shape == tuple(model(x[:1]).shape)
    assert all(blk.kind in surgeon.blockgraph.KINDS for blk in g.blocks)
    assert surgeon.blockgraph.feature_info_mismatch(g) is None


def test_resnet_stages_follow_layers():
    model, g = built("resnet50")
    assert list(g.stages) == ["c1", "c2", "c3", "c4"]
    for i, stage in enumerate(g.stages.values(), start=1):
        assert [b.path for b in stage] == [f"layer{i}.{j}" for j in range(len(getattr(model, f"layer{i}")))]
        assert all(b.kind == "conv" for b in stage)
    assert g["stem"].members == ("conv1", "bn1", "act1", "maxpool")
    assert g["c2.b0"].downsamples and not g["c2.b1"].downsamples
    assert g["c3.b5"].path == "layer3.5"
    assert g["c1.b0"].flops > 0 and g["c4.b2"].out_shape == (1, 2048, 2, 2)


def test_vit_is_one_stage_of_alternating_halves():
    model, g = built("vit_tiny_patch16_224")
    assert list(g.stages) == ["c1"]
    assert kinds(g, "c1") == ["msa", "mlp"] * 12
    b = g["c1.b0"]
    assert b.tap == ("blocks.0.norm2", "in") and b.layout == "NLC" and b.grid == (4, 4) and b.prefix_tokens == 1
    # the attention half's output is x + attn(norm1(x)), checked against the model's own pieces
    blk = model.blocks[0]
    x = torch.randn(1, *g.input_size)
    with torch.no_grad():
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        expected = tokens + blk.ls1(blk.attn(blk.norm1(tokens)))
        seen = {}
        h = blk.norm2.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        model(x)
        h.remove()
    assert torch.allclose(seen["x"], expected, atol=1e-6)
    assert len(g.select("kind:msa")) == 12


def test_hybrids_have_the_right_kinds():
    _, g = built("swin_tiny_patch4_window7_224")
    assert [len(s) for s in g.stages.values()] == [4, 5, 13, 5]
    assert all(kinds(g, s)[0] == "downsample" for s in ("c2", "c3", "c4"))
    assert kinds(g, "c1") == ["msa", "mlp"] * 2
    _, g = built("convnext_tiny")
    assert [len(s) for s in g.stages.values()] == [3, 4, 10, 4]
    assert kinds(g, "c2") == ["downsample"] + ["conv"] * 3
    _, g = built("coatnet_0_rw_224")
    assert set(kinds(g, "c1") + kinds(g, "c2")) == {"conv"}
    assert kinds(g, "c3") == ["msa", "mlp"] * 7 and kinds(g, "c4") == ["msa", "mlp"] * 2
    _, g = built("maxvit_tiny_rw_224")
    assert kinds(g, "c1") == ["conv", "msa", "mlp", "msa", "mlp"] * 2
    _, g = built("pit_ti_224")
    assert [kinds(g, s)[0] for s in g.stages] == ["msa", "downsample", "downsample"]
    _, g = built("mobilevit_xxs")
    assert [kinds(g, s)[-1] for s in g.stages] == ["conv"] * 5  # a MobileViT block ends in its fusion conv
    assert kinds(g, "c3") == ["conv", "conv"] + ["msa", "mlp"] * 2 + ["conv"]  # 2 transformer layers
    _, g = built("mixer_s16_224")
    assert set(kinds(g, "c1")) == {"mlp"} and len(g.stages["c1"]) == 16
    _, g = built("tv:swin_t")
    assert [len(s) for s in g.stages.values()] == [4, 5, 13, 5]
    _, g = built("tv:vit_b_16")
    assert kinds(g, "c1") == ["msa", "mlp"] * 12
    _, g = built("tv:densenet121")
    assert [kinds(g, s) for s in ("c2", "c3", "c4")] == [["downsample", "conv"]] * 3


def test_select_addresses_paths_globs_kinds():
    _, g = built("resnet50")
    assert [b.address for b in g.select("c2")] == [f"c2.b{i}" for i in range(4)]
    assert g.select("c2.b-1") == [g["c2.b3"]]
    assert [b.address for b in g.select("c*.b-1")] == ["c1.b2", "c2.b3", "c3.b5", "c4.b2"]
    assert [b.address for b in g.select("c[23].b0")] == ["c2.b0", "c3.b0"]
    assert g.select("layer2.3") == [g["c2.b3"]]
    assert g.select("layer2") == g.select("c2")
    assert [b.address for b in g.select("layer*.0")] == ["c1.b0", "c2.b0", "c3.b0", "c4.b0"]
    assert g.select("layer3.1.conv2") == [g["c3.b1"]]
    assert [b.address for b in g.select("stem, head")] == ["stem", "head"]
    assert g.select("*") == g.blocks and g.select("kind:conv") == g.select("c*")
    assert g.select(["c1", "c1.b0"]) == g.select("c1")


@pytest.mark.parametrize("bad, fragment", [
    ("c9", "valid: stem, c1.b0..b2"),
    ("c2.b7", "c2 has 4 blocks"),
    ("layer9", "unknown block 'layer9'"),
    ("kind:attention", "kinds: stem, conv, msa"),
    ("", "empty block selection"),
])
def test_select_errors_name_the_valid_choices(bad, fragment):
    _, g = built("resnet50")
    with pytest.raises(SurgeonError, match=fragment.replace("[", r"\[").replace(".", r"\.")) as e:
        g.select(bad)
    assert "\n" not in str(e.value)


def test_graph_leaves_model_untouched():
    model = surgeon.load_model("resnet18").train()
    model.layer2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    surgeon.graph(model, input_size=(3, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class Gate(nn.Module):
    """Data-dependent control flow: not traceable by FX."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.mean() > 0:  # data-dependent
            return x + y
        return x - y


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.stage1 = nn.Sequential(Gate(8), Gate(8))
        self.down = nn.Conv2d(8, 16, 2, stride=2)
        self.stage2 = nn.Sequential(Gate(16), Gate(16), Gate(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        if x.isnan().any():  # data-dependent control flow at the root: FX cannot trace the model
            raise ValueError("NaN features")
        return self.fc(x.mean((2, 3)))


def test_untraceable_model_falls_back_to_eager():
    model = Toy().eval()
    g = surgeon.graph(model, input_size=(3, 32, 32))
    assert g.method == "eager" and g.module is model and "TraceError" in (g.fallback_reason or "")
    assert [b.address for b in g.blocks] == ["stem", "c1.b0", "c1.b1", "c2.b0", "c2.b1", "c2.b2", "c2.b3", "head"]
    assert g["c2.b0"].path == "down" and g["c2.b0"].kind == "downsample"
    assert g["c1.b-1"].path == "stage1.1" and g["c1.b1"].kind == "conv"
    assert g["head"].members == ("fc",)
    assert g["c2.b1"].out_shape == (1, 16, 8, 8) and g["c2.b1"].flops == 2 * 16 * 16 * 9 * 64
    assert g.select("stage2.0") == [g["c2.b1"]]


def test_bad_input_size_is_one_line():
    model = surgeon.load_model("vit_tiny_patch16_224")
    with pytest.raises(SurgeonError, match="cannot take input size 3x64x64.*img_size="):
        surgeon.graph(model, input_size=(3, 64, 64))
    with pytest.raises(SurgeonError, match="not C,H,W"):
        surgeon.graph(model, input_size=(3, 64))


class Shared(nn.Module):
    """A module registered under two names and a forward that caches a tensor on the module."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.blocks = nn.Sequential(Gate(8), Gate(8))
        self.blocks[0].pos = self.pos  # the same module, reached from two places
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)
        self.cache = None

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pos(x)
        self.cache = x.sum()  # a forward that writes an attribute
        return self.fc(self.blocks(x).mean((2, 3)))


def test_graph_restores_shared_modules_and_attributes():
    model = Shared().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    model.cache = "untouched"
    g = surgeon.graph(model, input_size=(3, 16, 16))
    assert model.cache == "untouched"
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert len(g.blocks) >= 3


@pytest.mark.parametrize("shape, expected", [
    ((1, 96, 56, 56), ("NCHW", (56, 56), 0)),
    ((1, 56, 56, 96), ("NHWC", (56, 56), 0)),
    ((1, 197, 192), ("NLC", (14, 14), 1)),
    ((1, 196, 192), ("NLC", (14, 14), 0)),
    ((1, 16, 196, 96), ("BTNC", (56, 56), 0)),   # 16 windows of 14x14 tokens
    ((1, 1, 192), (None, None, 0)),              # a lone class token
    ((1, 1000), (None, None, 0)),
])
def test_layouts_are_read_from_shapes(shape, expected):
    from surgeon.blockgraph.layout import _spatial

    assert _spatial(shape, (224, 224), 1) == expected


def test_a_selection_that_matches_nothing_is_empty_not_unknown():
    """A well-formed filter or glob that matches nothing selects no block; an unknown name raises."""
    _, g = built("resnet18")
    assert g.select("kind:msa") == [] and g.select("kind:mlp, kind:downsample") == []
    assert g.select("c[789].b*") == [] and g.select("layer*.7") == []
    assert g.select("kind:msa, c1.b0") == [g["c1.b0"]]
    with pytest.raises(SurgeonError, match="no block matches 'kind:msa'"):
        g["kind:msa"]
    for unknown in ("c9", "layer9", "kind:attention"):
        with pytest.raises(SurgeonError):
            g.select(unknown)


#: the least each command with a block selection needs (a new command with --blocks must be added)
SELECTING = {
    "lesion": ["--blocks", "kind:msa", "--out", "{tmp}/x.safetensors"],
    "insert": ["--after", "kind:msa", "--out", "{tmp}/x.safetensors"],
    "replace": ["--blocks", "kind:msa", "--with", "identity", "--out", "{tmp}/x.safetensors"],
    "lesion-study": ["--blocks", "kind:msa", "--data", "digits"],
    "probe": ["--blocks", "kind:msa", "--data", "digits"],
    "hessian": ["--blocks", "kind:msa", "--data", "digits"],
    "localize": ["--blocks", "kind:msa", "--out", "{tmp}/x.safetensors"],
}


def test_every_command_refuses_a_selection_that_matches_nothing(tmp_path, cli_invoke):
    """`--blocks kind:msa` on a CNN: one line 'no block matches kind:msa in test_resnet', no output."""
    import typer.main

    from surgeon.cli.main import app

    commands = dict(typer.main.get_command(app).commands)
    selecting = {name for name, c in commands.items()
                 if {"--blocks", "--after"} & {o for p in c.params for o in getattr(p, "opts", [])}}
    assert selecting == set(SELECTING), "add the new command to SELECTING"
    for name, extra in SELECTING.items():
        before = ["probe", "fourier"] if name == "probe" else [name]
        args = [*before, "test_resnet", "--input-size", "3,32,32", *(a.format(tmp=tmp_path) for a in extra)]
        result = cli_invoke(*args)
        assert isinstance(result.exception, SurgeonError), (name, result.output, result.exception)
        assert str(result.exception).startswith("no block matches kind:msa in test_resnet"), (name, result.exception)
    assert list(tmp_path.iterdir()) == []


def test_no_match_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "surgeon.cli", "lesion", "resnet18", "--blocks", "kind:msa",
                        "--input-size", "3,32,32", "--out", str(tmp_path / "x.safetensors")],
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "no block matches kind:msa in resnet18" in lines[0], r.stderr


def meta_graph(name: str, **kwargs) -> surgeon.blockgraph.BlockGraph:
    """The graph of a timm model built on the meta device (shapes only: cheap at any size)."""
    with torch.device("meta"):
        model = surgeon.load_model(name, **kwargs)
    return surgeon.graph(model)


def assert_labels_mean_what_they_say(g: surgeon.blockgraph.BlockGraph) -> None:
    """One head, last; no stage block outputs a pooled vector; no 0-parameter 'other' block."""
    assert [b.address for b in g.blocks if b.kind == "head"] == ["head"] and g.blocks[-1].kind == "head"
    assert all(len(b.out_shape) > 2 for b in g.blocks if b.stage is not None)
    assert not [b.address for b in g.blocks if b.kind == "other" and b.params == 0]


@pytest.mark.parametrize("name, classifier", [
    ("repvit_m1", "head"),  # a classifier with its own residual (distillation average)
    ("caformer_s18", "head.fc"),  # MetaFormer: an MLP classifier after norm and pooling
    ("efficientvit_b0", "head"),  # conv, pool, then an MLP classifier
])
def test_classifier_heads_are_the_head(name, classifier):
    """Heads that hold a residual or an MLP were stage blocks (RepViT: ``c4.b3`` of kind mlp, and
    the pooled 384-vector a stage block); pooled features (B, C) belong to the head."""
    g = meta_graph(name)
    assert_labels_mean_what_they_say(g)
    assert any(m == classifier or m.startswith(classifier + ".") or classifier.startswith(m + ".")
               for m in g["head"].members)


def test_downsampling_modules_are_downsample_blocks():
    """RepViT's and LeViT's stage downsampling (timm ``downsample``, with a residual MLP or
    attention inside) are `downsample` blocks; GC ViT's Downsample2d (a residual conv, then a
    strided conv) is one block, not three; an Identity opening a stage joins the stem (HGNetV2)."""
    g = meta_graph("repvit_m1")
    assert [b.path for b in g.select("kind:downsample")] == [f"stages.{i}.downsample" for i in (1, 2, 3)]
    g = meta_graph("levit_128s")
    assert [b.path for b in g.select("kind:downsample")] == ["stages.1.downsample", "stages.2.downsample"]
    g = meta_graph("gcvit_xxtiny")
    down = [b for b in g.blocks if any(m.startswith("stages.3.downsample") for m in b.members)]
    assert [(b.path, b.kind) for b in down] == [("stages.3.downsample", "downsample")]
    g = meta_graph("hgnetv2_b0")
    assert_labels_mean_what_they_say(g)
    assert "stages.0.downsample" in g["stem"].members
    g = meta_graph("selecsls42")  # a parameter-free step between the last stages joins the next block
    assert_labels_mean_what_they_say(g)
    assert not [b for b in g.blocks if b.members == ("from_seq",)]


def test_condconv_blocks_are_conv_blocks():
    """timm's CondConv2d is no nn.Conv2d (its experts' kernels sit flattened in one weight) and its
    routing is a Linear: its blocks are still convolutions, the strided one included (the full
    invariants walk found `efficientnet_cc_*` labelled mlp). Built on the meta device: labels only."""
    from timm.layers import CondConv2d

    from surgeon.blockgraph.kinds import is_conv

    assert is_conv(CondConv2d(4, 8, 3)) and is_conv(nn.Conv2d(4, 8, 3)) and not is_conv(nn.MaxPool2d(3))
    with torch.device("meta"):
        model = timm.create_model("efficientnet_cc_b0_4e")
    g = surgeon.graph(model)
    condconv = [b for b in g.blocks if any(isinstance(m, CondConv2d) for p in b.members
                                           for m in model.get_submodule(p).modules())]
    assert condconv and all(b.kind == "conv" for b in condconv), [(b.address, b.kind) for b in condconv]


@pytest.mark.parametrize("spec", ["resnet50", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "mobilevit_xxs",
                                  "efficientnet_b0", "tv:densenet121"])
def test_graphs_from_the_kept_analyses_equal_graphs_from_scratch(spec):
    """The one-level analyses are kept across graphs (`discovery._ANALYSES`): a graph built with
    them, of the model and of an edited copy, equals one built with none kept."""
    from surgeon.blockgraph import discovery

    model, g = built(spec)
    removable = [b.address for b in g.blocks if b.stage and b.in_shape == b.out_shape and b.kind in ("conv", "mlp")]
    edited = surgeon.remove(g, removable[0]) if removable else surgeon.insert(g, after="c1.b-1", module="identity")
    warm = [surgeon.graph(m, input_size=g.input_size) for m in (model, edited)]
    discovery._ANALYSES.clear()
    cold = [surgeon.graph(m, input_size=g.input_size) for m in (model, edited)]
    for w, c in zip(warm, cold):
        assert [b.to_dict() for b in w.blocks] == [b.to_dict() for b in c.blocks]
        assert w.method == c.method


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x))


def test_a_changed_forward_is_analysed_again(monkeypatch):
    """The kept analyses are keyed by the forward too: patching a class's forward (a residual sum
    added) changes the graph, as it would in a fresh process."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Pair(), _Pair(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4))
    before = surgeon.graph(net, input_size=(3, 16, 16))

    def two_sums(self, x):
        x = x + self.a(x)
        return x + self.b(x)

    monkeypatch.setattr(_Pair, "forward", two_sums)
    after = surgeon.graph(net, input_size=(3, 16, 16))
    assert [b.members for b in before.blocks if b.stage] == [("1",), ("2",)]
    assert [b.members for b in after.blocks if b.stage] == [("1.a",), ("1.b",), ("2.a",), ("2.b",)]


class _Stage(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(depth))

    def forward(self, x):
        for blk in self.blocks:
            x = x + blk(x)
        return x


def _staged(depths):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *(_Stage(d) for d in depths), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def test_kept_analyses_tell_apart_lists_of_other_lengths():
    """A module's one-level trace unrolls its loops over lists, so two modules of one class whose
    lists differ in length (GC ViT's stages of 2 and 6 blocks, in two models of one process) are
    analysed apart: the graph of the shorter after the longer equals its graph from scratch."""
    from surgeon.blockgraph import discovery

    deep, shallow = _staged([3, 3]), _staged([1, 2])
    surgeon.graph(deep, input_size=(3, 8, 8))
    warm = surgeon.graph(shallow, input_size=(3, 8, 8))
    discovery._ANALYSES.clear()
    cold = surgeon.graph(shallow, input_size=(3, 8, 8))
    assert [b.to_dict() for b in warm.blocks] == [b.to_dict() for b in cold.blocks]
    assert sum(b.stage is not None for b in cold.blocks) == 3
    discovery._ANALYSES.clear()
    mixed = surgeon.graph(_staged([1, 3]), input_size=(3, 8, 8))  # both lengths in one model
    assert [b.members for b in mixed.blocks if b.stage] == [("1",), ("2.blocks.0",), ("2.blocks.1",), ("2.blocks.2",)]
