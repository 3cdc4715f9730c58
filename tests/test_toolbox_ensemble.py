"""Ensembles (`surgeon.surgery.ensemble`): the mean of the members' softmax, saved and loaded as one file."""

from __future__ import annotations

import pytest
import torch

import surgeon
from surgeon.core.errors import SurgeonError

SIZE = (3, 32, 32)


def _members():
    torch.manual_seed(0)
    a = surgeon.load_model("test_resnet", num_classes=5)
    b = surgeon.insert(surgeon.load_model("test_resnet", num_classes=5), after="c1.b-1", module="smoothing", input_size=SIZE)
    return a, b


def _normalised(model, pix):
    """What `model` sees of pixels in [0, 1]: its own timm data config's mean / std (computed here, by hand)."""
    cfg = model.pretrained_cfg
    mean, std = (torch.tensor(cfg[k], dtype=torch.float32).view(1, -1, 1, 1) for k in ("mean", "std"))
    return (pix - mean) / std


def test_probabilities_are_the_mean_of_the_members_softmax():
    a, b = _members()
    ens = surgeon.ensemble([a, b], input_size=SIZE)
    pix = torch.rand(3, *SIZE)  # the ensemble takes pixels in [0, 1] (mean 0, std 1 in its data config)
    with torch.no_grad():
        expected = (a(_normalised(a, pix)).softmax(1) + b(_normalised(b, pix)).softmax(1)) / 2
        got = ens(pix).softmax(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert ens.num_classes == 5 and ens.input_size == SIZE
    assert ens.pretrained_cfg["mean"] == (0.0,) * 3 and ens.pretrained_cfg["std"] == (1.0,) * 3


def test_members_with_other_normalisation_see_their_own_input_in_any_order():
    """Each member gets its own mean / std; the member order changes neither the output (up to the
    float summation order of the mean) nor the preprocessing the data layer reads."""
    torch.manual_seed(0)
    a = surgeon.load_model("test_resnet", num_classes=4)
    a.pretrained_cfg = {**a.pretrained_cfg, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    v = surgeon.load_model("test_vit", num_classes=4, img_size=32)  # mean / std 0.5
    av, va = surgeon.ensemble([a, v], input_size=SIZE), surgeon.ensemble([v, a], input_size=SIZE)
    pix = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = (a(_normalised(a, pix)).softmax(1) + v((pix - 0.5) / 0.5).softmax(1)) / 2
        torch.testing.assert_close(av(pix).softmax(1), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(va(pix), av(pix), rtol=1e-6, atol=1e-6)
    assert va.pretrained_cfg == av.pretrained_cfg
    t_av, t_va = surgeon.data.eval_transform(av), surgeon.data.eval_transform(va)
    assert repr(t_av) == repr(t_va)


def test_a_saved_ensemble_is_used_at_its_size(tmp_path):
    """The members' recorded size is the ensemble's, recorded in its file (no input_size= given)."""
    a, b = _members()  # b is edited at 32 px: it records that size
    ens = surgeon.ensemble([a, b], input_size=SIZE)
    trained_at = surgeon.ensemble([b, b])
    assert trained_at.input_size == SIZE
    path = surgeon.save(trained_at, tmp_path / "e.safetensors")
    back = surgeon.load(path)
    assert surgeon.model.sizes.input_size_of(back) == SIZE and surgeon.read_cfg(path).input_size == (SIZE, "edited")
    assert surgeon.model.sizes.input_size_of(surgeon.load(surgeon.save(ens, tmp_path / "f.safetensors"))) == SIZE


def test_saved_ensemble_loads_with_its_member_recipes(tmp_path):
    a, b = _members()
    ens = surgeon.ensemble([a, b], input_size=SIZE)
    path = surgeon.save(ens, tmp_path / "ens.safetensors")
    record = surgeon.read_cfg(path)
    assert [m["base"]["spec"] for m in record.base["members"]] == ["test_resnet", "test_resnet"]
    assert record.base["members"][1]["passes"][0]["pass"] == "insert"
    back = surgeon.load(path)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(back(x), ens(x))


def test_members_of_other_sizes_or_class_counts_are_refused():
    a = surgeon.load_model("test_resnet", num_classes=5)
    with pytest.raises(SurgeonError, match="class counts"):
        surgeon.ensemble([a, surgeon.load_model("test_resnet", num_classes=3)])
    with pytest.raises(SurgeonError, match="input sizes"):
        surgeon.ensemble([surgeon.load_model("test_vit", num_classes=5, img_size=32),
                          surgeon.load_model("test_vit", num_classes=5, img_size=48)])


def test_inputs_unchanged_and_ensemble_usable_by_evaluate():
    a, b = _members()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    ens = surgeon.ensemble([a, b], input_size=SIZE)
    data = [(torch.randn(4, *SIZE), torch.randint(0, 5, (4,)))]
    ev = surgeon.evaluate(ens, data)
    assert ev.samples == 4
    with torch.no_grad():
        for p in ens.members[0].parameters():
            p.add_(1.0)  # a copy: the given model stays as it was
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())
