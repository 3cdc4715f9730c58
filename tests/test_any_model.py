"""Models that are not timm / torchvision: outputs that are not tensors (one rule, `surgeon.model.outputs`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError


@dataclass
class Out:  # a ModelOutput-like dataclass: logits not first
    features: torch.Tensor
    logits: torch.Tensor


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


class Wrapped(nn.Module):
    """`net` returning its logits inside `form`."""

    def __init__(self, net: nn.Module, form):
        super().__init__()
        self.net, self.form = net, form

    def forward(self, x):
        return self.form(self.net(x))


FORMS = {"dataclass": lambda t: Out(t.mean(1), t), "dict": lambda t: {"logits": t, "aux": t * 2},
         "tuple": lambda t: (t, t.sum()), "list": lambda t: [None, t]}
def _numbers(value):
    """`value` without what names the model or times the run."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k != "model" and "seconds" not in k}
    return [_numbers(v) for v in value] if isinstance(value, (list, tuple)) else value


ANALYSES = {
    "evaluate": lambda m, d: surgeon.evaluate(m, d).to_dict(),
    "evaluate-mc": lambda m, d: surgeon.evaluate(m, d, mc_dropout=2).to_dict(),
    "hessian": lambda m, d: surgeon.hessian_eigs(m, d[0], k=2, blocks="*").eigenvalues.tolist(),
    "landscape": lambda m, d: surgeon.landscape(m, d, lattice=surgeon.analysis.Lattice(dims=1, grid=3)).to_dict(),
    "fgsm": lambda m, d: surgeon.adversarial_robustness(m, surgeon.data.normalised(d, (0.5,) * 3, (0.25,) * 3),
                                                        eps=[0.01]).to_dict(),
    "ensemble": lambda m, d: surgeon.ensemble([m, m], input_size=(3, 8, 8))(d[0][0]).tolist(),
}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)]


@pytest.mark.parametrize("form", FORMS)
def test_logits_of_every_form(form):
    t = torch.randn(2, 3)
    assert surgeon.logits_of(FORMS[form](t)) is t


@pytest.mark.parametrize("analysis", ANALYSES)
@pytest.mark.parametrize("form", ["dataclass", "tuple"])
def test_every_analysis_reads_the_logits_of_any_output(analysis, form, data):
    """Each analysis gives the same numbers on a model whose logits sit in a dict / dataclass /
    tuple as on the same network returning the tensor."""
    net = _net()
    torch.manual_seed(1)
    want = ANALYSES[analysis](net, data)
    torch.manual_seed(1)
    got = ANALYSES[analysis](Wrapped(copy.deepcopy(net), FORMS[form]), data)
    assert _numbers(got) == _numbers(want)


def test_logits_that_cannot_be_found_fail_in_one_line(data):
    model = Wrapped(_net(), lambda t: {"scores": t})
    with pytest.raises(SurgeonError, match="LogitsOf"):
        surgeon.evaluate(model, data)
    fixed = surgeon.model.outputs.LogitsOf(model, lambda o: o["scores"])
    assert surgeon.evaluate(fixed, data).to_dict() == surgeon.evaluate(model.net, data).to_dict()
