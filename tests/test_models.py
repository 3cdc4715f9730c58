"""Creating models by name."""

from __future__ import annotations

import pytest

import surgeon
from surgeon import SurgeonError


def test_timm_and_torchvision_names():
    m = surgeon.load_model("resnet18", num_classes=7)
    assert m.fc.out_features == 7 and not m.training
    tv = surgeon.load_model("tv:resnet18", num_classes=7)
    assert type(tv).__module__.startswith("torchvision") and tv.fc.out_features == 7
    vit = surgeon.load_model("vit_tiny_patch16_224", img_size=64)
    assert surgeon.model.sizes.default_input_size(vit) == (3, 64, 64)
    assert surgeon.model.sizes.default_input_size(surgeon.load_model("tv:inception_v3", num_classes=3)) == (3, 299, 299)
    assert surgeon.model.sizes.default_input_size(surgeon.load_model("mobilevit_xxs")) == (3, 256, 256)
    # img_size is meaningless for a CNN: accepted and ignored
    assert surgeon.load_model("resnet18", img_size=64).fc.out_features == 1000


@pytest.mark.parametrize("spec, fragment", [
    ("resnet5", "did you mean resnet50"),
    ("tv:resnet1", "did you mean tv:resnet18"),
    ("vit_tiny_patch16", "did you mean .*vit_tiny_patch16_224"),
    ("", "model name is empty"),
    ("resnet50.pth", "is a weight file, not a model name"),
])
def test_unknown_names_suggest(spec, fragment):
    with pytest.raises(SurgeonError, match=fragment) as e:
        surgeon.load_model(spec)
    assert "\n" not in str(e.value)


def test_pretrained_offline_suggests_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(SurgeonError, match="pass a local file with weights="):
        surgeon.load_model("resnet18", pretrained=True)
    with pytest.raises(SurgeonError, match="either weights= or pretrained=True"):
        surgeon.load_model("resnet18", pretrained=True, weights="x.pt")
