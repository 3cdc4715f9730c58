"""Hugging Face transformers classifiers by name (`hf:`), built offline from small configs."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import LogitsOf

tf = pytest.importorskip("transformers")

VIT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8, num_labels=10)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hfvit")
    torch.manual_seed(0)
    tf.ViTForImageClassification(tf.ViTConfig(**VIT)).save_pretrained(d)
    return d


def test_load_records_the_data_config_and_rebuilds_offline(vit_dir, tmp_path):
    vit_dir = shutil.copytree(vit_dir, tmp_path / "copy")
    m = surgeon.load_model(f"hf:{vit_dir}")
    ref = tf.ViTForImageClassification.from_pretrained(vit_dir).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = m(x)
        assert torch.equal(y, ref(x).logits)  # the directory's weights, the logits tensor
    assert surgeon.model.sizes.input_size_of(m) == (3, 32, 32)  # no preprocessor_config.json: config.image_size
    assert m.pretrained_cfg["num_classes"] == 10 and len(m.pretrained_cfg["mean"]) == 3
    assert set(dict(m.named_parameters())) == set(dict(ref.named_parameters()))  # transformers' own paths
    f = surgeon.save(m, tmp_path / "vit.safetensors")
    for p in vit_dir.iterdir():  # the file alone rebuilds it
        p.unlink()
    m2 = surgeon.load(f)
    with torch.no_grad():
        assert torch.equal(m2(x), y)


def test_processor_config_sets_size_mean_std(tmp_path):
    tf.ViTForImageClassification(tf.ViTConfig(**VIT)).save_pretrained(tmp_path)
    proc = {"image_processor_type": "ViTImageProcessor", "size": {"height": 48, "width": 48},
            "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "resample": 2}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(proc))
    cfg = surgeon.load_model(f"hf:{tmp_path}").pretrained_cfg
    assert cfg["input_size"] == [3, 48, 48] and cfg["mean"] == [0.5, 0.4, 0.3] and cfg["std"] == [0.2, 0.25, 0.3]
    assert cfg["interpolation"] == "bilinear"


def test_num_classes_and_missing_directory(vit_dir):
    assert surgeon.load_model(f"hf:{vit_dir}", num_classes=3)(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(SurgeonError, match="cannot read the config"):
        surgeon.load_model(f"hf:{vit_dir}/nothing-here")


def test_without_transformers_one_line(monkeypatch, vit_dir):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(SurgeonError, match=r"pip install 'surgeon\[hf\]'"):
        surgeon.load_model(f"hf:{vit_dir}")


def test_core_does_not_import_transformers():
    """No module of surgeon (and its CLI) imports transformers at module level: only surgeon.model.hf, inside functions."""
    import ast
    from pathlib import Path

    root = Path(surgeon.__file__).parent
    for path in [*root.rglob("*.py"), *(root / "cli").resolve().glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "transformers" for n in names), path


def test_hessian_top2_matches_dense_reference(vit_dir):
    """Top-2 Hessian eigenvalues of the NLL w.r.t. the head block (the final layernorm and the
    classifier: 394 parameters) vs torch's dense Hessian."""
    m = surgeon.load_model(f"hf:{vit_dir}")
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    assert surgeon.graph(m)["head"].members == ("vit.layernorm", "classifier")
    got = surgeon.hessian_eigs(m, (x, y), k=2, blocks="head").eigenvalues
    norm, fc = m.vit.layernorm, m.classifier
    params = [t.detach() for t in (norm.weight, norm.bias, fc.weight, fc.bias)]
    seen = {}
    hook = norm.register_forward_pre_hook(lambda mod, a: seen.setdefault("h", a[0]))
    with torch.no_grad():
        m(x)
    hook.remove()

    def nll(flat):
        parts = [p.view_as(t) for p, t in zip(flat.split([t.numel() for t in params]), params)]
        tokens = nn.functional.layer_norm(seen["h"], norm.normalized_shape, parts[0], parts[1], norm.eps)
        return nn.functional.cross_entropy(tokens[:, 0] @ parts[2].T + parts[3], y)  # the CLS token

    dense = torch.autograd.functional.hessian(nll, torch.cat([t.flatten() for t in params]))
    ref = torch.linalg.eigvalsh(dense.double()).abs().sort(descending=True).values[:2]
    assert torch.allclose(torch.as_tensor(got, dtype=torch.float64)[:2].abs(), ref, rtol=1e-3, atol=1e-6)


def test_logits_not_found_one_line():
    class Odd(nn.Module):
        def forward(self, x):
            return {"scores": x}
    with pytest.raises(SurgeonError, match="LogitsOf"):
        LogitsOf(Odd())(torch.zeros(1))
    assert torch.equal(LogitsOf(Odd(), lambda o: o["scores"])(torch.ones(2)), torch.ones(2))


def _hf(config):
    from surgeon.model.hf import returning_logits

    torch.manual_seed(0)
    return returning_logits(tf.AutoModelForImageClassification.from_config(config).eval(), {"input_size": [3, 32, 32]})


@pytest.mark.parametrize("config", [
    tf.ConvNextConfig(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 2, 1], num_labels=10),
    tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 2, 1], num_labels=10),
], ids=["convnext", "resnet"])
def test_residual_blocks_of_untraceable_cnns(config):
    """transformers' ConvNeXt / ResNet (FX cannot trace their encoders): one conv block per residual
    layer of the config, stages where the resolution drops, the head, g.module exact."""
    m = _hf(config)
    g = surgeon.graph(m, input_size=(3, 32, 32))
    convs = [b for b in g.blocks if b.kind == "conv"]
    assert [b.path.rsplit(".", 2)[0] for b in convs] == [
        f"{config.model_type}.encoder.stages.{i}" for i, d in enumerate(config.depths) for _ in range(d)]
    assert sorted(g.stages) == ["c1", "c2", "c3", "c4"] and g.blocks[-1].kind == "head"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(g.module(x), m(x))
