"""Surgery on transformers models (issue #20 item 4): `alternate` and `remove` on HF ResNet and
ConvNeXt keep every shape and every untouched tensor, and an `hf:` model edited, saved and loaded
computes what it did; what cannot be edited (a ViT attention half, `localize` on HF attention) is
refused in one line."""

from __future__ import annotations

import pytest
import torch

import surgeon

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


def test_an_hf_model_edited_saved_and_loaded_computes_what_it_did(tmp_path):
    torch.manual_seed(0)
    _resnet().save_pretrained(tmp_path / "hf")
    model = surgeon.load_model(f"hf:{tmp_path / 'hf'}", img_size=32)
    alt = surgeon.alternate(model, {"c2": 1}, input_size=SIZE)
    path = surgeon.save(alt, tmp_path / "alt.safetensors")
    back = surgeon.load(path)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(back(x), alt(x))


def test_what_cannot_be_edited_on_an_hf_vit_is_refused_in_one_line():
    model = _vit()
    g = surgeon.graph(model, input_size=SIZE)
    msa = next(b for b in g.blocks if b.kind == "msa")
    with pytest.raises(surgeon.SurgeonError) as err:
        surgeon.remove(model, msa.address, input_size=SIZE)
    assert "\n" not in str(err.value)
    with pytest.raises(surgeon.SurgeonError, match="cannot be made local") as err:
        surgeon.localize(model, input_size=SIZE)
    assert "\n" not in str(err.value)
