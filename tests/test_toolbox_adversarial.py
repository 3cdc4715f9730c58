"""FGSM / PGD (`surgeon.evaluation.adversarial`) against a closed-form gradient, and the model left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import surgeon
from surgeon.evaluation.adversarial import Attack, fgsm, pgd
from surgeon.core.errors import SurgeonError

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 3, 4, 4, generator=g), torch.randint(0, 5, (6,), generator=g)


def test_fgsm_equals_the_closed_form_step():
    """Logits W (x - m) / s + b: grad_x NLL = (W^T (softmax - onehot)) / s, elementwise."""
    model = _linear()
    x, y = _batch()
    lin = model[1]
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p = lin(((x - m) / s).flatten(1)).softmax(1)
        grad = ((p - nn.functional.one_hot(y, 5).float()) @ lin.weight).view_as(x) / s
    expected = (x + 0.03 * grad.sign()).clamp(0, 1)
    got = fgsm(model, x, y, 0.03, normalisation=(MEAN, STD))
    assert torch.equal(got, expected)


def test_pgd_without_random_start_is_deterministic_and_stays_in_the_ball():
    model = _linear()
    x, y = _batch()
    a = pgd(model, x, y, 0.05, attack=Attack(alpha=0.02, steps=7, random_start=False), normalisation=(MEAN, STD))
    b = pgd(model, x, y, 0.05, attack=Attack(alpha=0.02, steps=7, random_start=False), normalisation=(MEAN, STD))
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.05 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert (a != x).any()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    r1 = pgd(model, x, y, 0.05, attack=Attack(steps=2), generator=g1, normalisation=(MEAN, STD))
    r2 = pgd(model, x, y, 0.05, attack=Attack(steps=2), generator=g2, normalisation=(MEAN, STD))
    assert torch.equal(r1, r2) and (r1 - x).abs().max() <= 0.05 + 1e-6


def test_pgd_one_step_without_start_is_fgsm_with_alpha_inside_the_ball():
    model = _linear()
    x, y = _batch()
    one = pgd(model, x, y, 0.5, attack=Attack(alpha=0.01, steps=1, random_start=False), normalisation=(MEAN, STD))
    assert torch.equal(one, fgsm(model, x, y, 0.01, normalisation=(MEAN, STD)))


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.drop(self.bn(self.conv(x)).mean((2, 3))))


def test_the_model_is_unchanged_after_attacks():
    torch.manual_seed(0)
    model = _Noisy().train()
    model.conv.bias.requires_grad_(False)
    model.bn.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    data = surgeon.data.normalised([(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))) for _ in range(2)],
                                   mean=(0.5,) * 3, std=(0.25,) * 3)
    res = surgeon.adversarial_robustness(model, data, Attack("pgd", steps=2), [0.01, 0.02], n_ff=2)
    assert len(res.metrics) == 2 and res.samples == 8 and 0 <= res.accuracy[0] <= 1
    surgeon.adversarial_robustness(model, data, "fgsm", [0.01])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {n: m.training for n, m in model.named_modules()}
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def test_bad_arguments_are_one_line_errors():
    model, data = _linear(), [(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))]
    for kwargs in ({"attack": "cw"}, {"eps": [2.0]}, {"eps": []}, {"n_ff": 0}, {"batches": 0}):
        with pytest.raises(SurgeonError) as e:
            surgeon.adversarial_robustness(model, data, **{"attack": "fgsm", "eps": [0.1], **kwargs})
        assert "\n" not in str(e.value)
    with pytest.raises(SurgeonError):
        pgd(model, *data[0], 0.1, attack=Attack(steps=0))
