"""Latency (`surgeon.evaluation.latency`): the table's numbers are consistent and the model is unchanged."""

from __future__ import annotations

import pytest
import torch

import surgeon
from surgeon.core.errors import SurgeonError


def test_latency_rows_and_model_unchanged():
    torch.manual_seed(0)
    model = surgeon.load_model("test_resnet", num_classes=3, drop_path_rate=0.1).train()  # MC dropout needs dropout
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = surgeon.latency(model, batch_size=4, input_size=(3, 32, 32), repeats=3, warmup=1, mc_dropout=2)
    assert [r.batch_size for r in res.rows] == [1, 4]
    for r in res.rows:
        assert r.ms_mean > 0 and r.ms_std >= 0 and r.peak_memory_mib is None
        assert r.images_per_s == pytest.approx(r.batch_size / (r.ms_mean / 1e3))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert res.to_dict()["input_size"] == [3, 32, 32]


def test_latency_refuses_bad_counts():
    model = surgeon.load_model("test_resnet", num_classes=3)
    for kwargs in ({"repeats": 1}, {"batch_size": 0}, {"warmup": -1}, {"mc_dropout": -2}, {"mc_dropout": 2},
                   {"repeats": 10**6}):  # MC dropout on a model without dropout; a count past its bound
        with pytest.raises(SurgeonError):
            surgeon.latency(model, **kwargs)
