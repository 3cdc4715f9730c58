"""Streaming metrics against hand-computed values and a naive per-sample reference; streaming
exactness; the paper's per-batch NLL; NaN and bad-label handling; MC dropout leaves the model as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.layers import DropPath
from torch import nn

from surgeon.core.errors import SurgeonError
from surgeon.evaluation.metrics import Metrics, mc_dropout_probs, reliability

# Five samples, K = 4; class 3 is never predicted nor present (so IoU leaves it out).
# Columns: p, label, prediction, confidence c, bin (lo, hi], correct.
HAND_P = [
    [0.70, 0.20, 0.10, 0.0],  # y=0, pred 0, c=.70, bin (.6,.7], right
    [0.02, 0.95, 0.03, 0.0],  # y=1, pred 1, c=.95, bin (.9,1],  right
    [0.15, 0.30, 0.55, 0.0],  # y=1, pred 2, c=.55, bin (.5,.6], wrong
    [0.92, 0.05, 0.03, 0.0],  # y=2, pred 0, c=.92, bin (.9,1],  wrong
    [0.10, 0.85, 0.05, 0.0],  # y=0, pred 1, c=.85, bin (.8,.9], wrong
]
HAND_Y = [0, 1, 1, 2, 0]
HAND = {
    "acc": 0.4,  # 2 right of 5
    "top5": 1.0,  # top-min(5, 4) = all 4 classes
    # -(ln .7 + ln .95 + ln .3 + ln .03 + ln .1) / 5 = (.356675 + .051293 + 1.203973 + 3.506558 + 2.302585) / 5
    "nll": 1.4842168,
    # per sample sum_k (onehot - p)^2: .09+.04+.01 = .14; .0004+.0025+.0009 = .0038; .0225+.49+.3025 = .815;
    # .8464+.0025+.9409 = 1.7898; .81+.7225+.0025 = 1.535; total 4.2836 / 5
    "brier": 0.85672,
    # bins: (.6,.7] {.70 right} |1-.7| = .3; (.9,1] {.95 right, .92 wrong} |.5-.935| = .435 (n=2);
    # (.5,.6] {.55 wrong} .55; (.8,.9] {.85 wrong} .85  ->  (.3 + 2*.435 + .55 + .85) / 5 = 2.57 / 5
    "ece": 0.514,
    # (.3 - .87 - .55 - .85) / 5 = acc - mean c = .4 - 3.97 / 5
    "signed_ece": -0.394,
    "acc90": 0.5,  # c > .9: samples 2 (right) and 4 (wrong)
    "unc90": 2 / 3,  # wrong: 3, 4, 5; of those c <= .9: 3 and 5
    "freq90": 0.4,  # 2 of 5
    # class 0: TP 1 (s1), FP 1 (s4), FN 1 (s5) -> 1/3; class 1: TP 1 (s2), FP 1 (s5), FN 1 (s3) -> 1/3;
    # class 2: TP 0, FP 1 (s3), FN 1 (s4) -> 0; class 3 left out: (1/3 + 1/3 + 0) / 3
    "iou": 2 / 9,
    # on s2 (pred 1, y 1) and s4 (pred 0, y 2): class 0: 0/1, class 1: 1/1, class 2: 0/1 -> 1/3
    "iou90": 1 / 3,
}


def naive(p: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Every metric from its definition, by python loops over samples (float64)."""
    n, k = p.shape
    soft = targets.ndim == 2
    ys = [int(np.argmax(t)) if soft else int(t) for t in targets]
    qs = [t if soft else np.eye(k)[t] for t in targets]
    preds = [int(np.argmax(pi)) for pi in p]
    confs = [float(np.max(pi)) for pi in p]
    right = [pr == y for pr, y in zip(preds, ys)]
    top = [y in np.argsort(-pi, kind="stable")[: min(5, k)] for pi, y in zip(p, ys)]
    nll = [-sum(q[j] * math.log(pi[j]) for j in range(k) if q[j] > 0) for pi, q in zip(p, qs)]
    brier = [sum((q[j] - pi[j]) ** 2 for j in range(k)) for pi, q in zip(p, qs)]
    ece = signed = 0.0
    for b in range(bins):
        members = [i for i in range(n) if b / bins < confs[i] <= (b + 1) / bins]
        if members:
            gap = np.mean([right[i] for i in members]) - np.mean([confs[i] for i in members])
            ece += len(members) / n * abs(gap)
            signed += len(members) / n * gap
    hi = [c > 0.9 for c in confs]
    wrong = [i for i in range(n) if not right[i]]

    def miou(keep: list[bool]) -> float:
        vals = []
        for c in range(k):
            tp = sum(1 for i in range(n) if keep[i] and preds[i] == c and ys[i] == c)
            fp = sum(1 for i in range(n) if keep[i] and preds[i] == c and ys[i] != c)
            fn = sum(1 for i in range(n) if keep[i] and preds[i] != c and ys[i] == c)
            if tp + fp + fn:
                vals.append(tp / (tp + fp + fn))
        return float(np.mean(vals)) if vals else math.nan

    return {
        "acc": float(np.mean(right)), "top5": float(np.mean(top)), "nll": float(np.mean(nll)),
        "brier": float(np.mean(brier)), "ece": ece, "signed_ece": signed,
        "acc90": float(np.mean([right[i] for i in range(n) if hi[i]])) if any(hi) else math.nan,
        "unc90": float(np.mean([not hi[i] for i in wrong])) if wrong else math.nan,
        "freq90": float(np.mean(hi)), "iou": miou([True] * n), "iou90": miou(hi),
    }


def assert_close(got: dict[str, float], want: dict[str, float], tol: float = 1e-9) -> None:
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=tol, nan_ok=True), key


def random_batch(n: int = 400, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 8  # confidences from ~1/k to ~1
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    return logits, torch.randint(0, k, (n,), generator=g)


def test_hand_example():
    m = Metrics(4)
    m.update(torch.tensor(HAND_P), torch.tensor(HAND_Y), probs=True)
    assert_close(m.compute(), HAND, tol=1e-6)


def test_top5_by_hand():
    # logits 0..6: class 6 ranks 1st, 2 ranks 5th, 1 ranks 6th, 0 ranks 7th -> labels 0, 1 miss, 2, 6 hit
    m = Metrics(7)
    m.update(torch.arange(7.0).expand(4, 7), torch.tensor([0, 1, 2, 6]))
    out = m.compute()
    assert out["top5"] == 0.5 and out["acc"] == 0.25


def test_against_naive_reference():
    logits, y = random_batch()
    m = Metrics(10)
    m.update(logits, y)
    got = m.compute()
    assert 0 < got["freq90"] < 1  # both sides of the 0.9 cut-off are exercised
    assert_close(got, naive(torch.softmax(logits, 1).numpy(), y.numpy()))


def test_soft_targets_against_naive_reference():
    logits, _ = random_batch(seed=1)
    q = torch.softmax(torch.randn(logits.shape, dtype=torch.float64) * 3, 1)
    m = Metrics(10)
    m.update(logits, q)
    assert_close(m.compute(), naive(torch.softmax(logits, 1).numpy(), q.numpy()))


def test_probs_equal_logits_path():
    logits, y = random_batch(seed=2)
    a, b = Metrics(10), Metrics(10)
    a.update(logits, y)
    b.update(torch.softmax(logits, 1), y, probs=True)
    assert_close(a.compute(), b.compute(), tol=1e-12)


def test_streaming_uneven_batches_equal_one_batch():
    logits, y = random_batch()
    whole, parts = Metrics(10), Metrics(10)
    whole.update(logits, y)
    for lo, hi in [(0, 1), (1, 57), (57, 58), (58, 300), (300, 400)]:
        parts.update(logits[lo:hi], y[lo:hi])
    parts.update(logits[:0], y[:0])  # an empty batch changes nothing
    assert_close(parts.compute(), whole.compute(), tol=1e-12)
    for key, value in reliability(parts).items():
        np.testing.assert_allclose(value, reliability(whole)[key], rtol=1e-12)


def test_nll_batch_mode_is_mean_of_batch_means():
    logits, y = random_batch(n=4)
    per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    batch = Metrics(10, nll="batch")
    sample = Metrics(10)
    for m in (batch, sample):
        m.update(logits[:1], y[:1])
        m.update(logits[1:], y[1:])
    want = (per_sample[0] + per_sample[1:].mean()) / 2  # batches of 1 and 3 samples
    assert batch.compute()["nll"] == pytest.approx(float(want), rel=1e-12)
    assert sample.compute()["nll"] == pytest.approx(float(per_sample.mean()), rel=1e-12)
    assert abs(batch.compute()["nll"] - sample.compute()["nll"]) > 1e-3


def test_reliability_by_hand():
    m = Metrics(4)
    m.update(torch.tensor(HAND_P), torch.tensor(HAND_Y), probs=True)
    r = reliability(m)
    np.testing.assert_allclose(r["edges"], np.arange(11) / 10)
    np.testing.assert_array_equal(r["count"], [0, 0, 0, 0, 0, 1, 1, 0, 1, 2])
    np.testing.assert_allclose(r["accuracy"], [np.nan] * 5 + [0, 1, np.nan, 0, 0.5])
    np.testing.assert_allclose(r["confidence"], [np.nan] * 5 + [0.55, 0.7, np.nan, 0.85, 0.935])


def test_undefined_values_are_nan():
    m = Metrics(3)
    assert all(math.isnan(v) for v in m.compute().values())  # nothing seen yet
    m.update(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))  # uniform: c = 1/3 everywhere
    out = m.compute()
    assert math.isnan(out["acc90"]) and math.isnan(out["iou90"])
    assert out["freq90"] == 0 and out["unc90"] == 1


def test_all_right_gives_nan_unc90():
    m = Metrics(3)
    m.update(torch.eye(3) * 10, torch.arange(3))
    out = m.compute()
    assert out["acc"] == 1 and out["iou"] == 1 and math.isnan(out["unc90"])


def test_reset():
    logits, y = random_batch()
    m = Metrics(10)
    m.update(logits, y + 100)
    m.reset()
    m.update(logits, y)
    assert_close(m.compute(), naive(torch.softmax(logits, 1).numpy(), y.numpy()))


@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_label_raises_in_compute(bad):
    m = Metrics(3)
    m.update(torch.randn(3, 3), torch.tensor([0, bad, 2]))  # no error (that would need a sync)
    msg = rf"1 target label\(s\) outside \[0, 3\), e.g. {bad}, but the metrics have 3 classes; fix num_classes"
    with pytest.raises(SurgeonError, match=msg):
        m.compute()
    with pytest.raises(SurgeonError, match="outside"):
        reliability(m)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, r"num_classes=0 is out of range; give an integer in \[1, "),
    ({"num_classes": 3, "bins": 0}, r"bins=0 is out of range; give an integer in \[1, "),
    ({"num_classes": 3, "nll": "mean"}, "nll='mean' is not a mode; choose from sample, batch"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(SurgeonError, match=match):
        Metrics(**kwargs)


@pytest.mark.parametrize("out, targets, match", [
    (torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), r"predictions have shape \(2, 4\), expected \(batch, 3\)"),
    (torch.zeros(2, 3), torch.zeros(2), "targets have shape"),  # float labels
    (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), "targets have shape"),
    (torch.zeros(2, 3), torch.zeros(2, 4), "targets have shape"),
])
def test_bad_shapes(out, targets, match):
    with pytest.raises(SurgeonError, match=match):
        Metrics(3).update(out, targets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host syncs")
def test_update_does_not_sync_on_cuda():
    logits, y = (t.cuda() for t in random_batch())
    probs = torch.softmax(logits, 1)
    m = Metrics(10)
    m.update(logits, y)  # the first call allocates the accumulators
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        m.update(logits, y)
        m.update(probs, probs, probs=True)  # soft targets
    finally:
        torch.cuda.set_sync_debug_mode("default")
    acc = naive(probs.cpu().numpy(), y.cpu().numpy())["acc"]
    assert m.compute()["acc"] == pytest.approx((2 * acc + 1) / 3)  # targets = p in the 3rd batch: all right


# ----------------------------------------------------------------------------------------------
# MC dropout


class Net(nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.drop_path = DropPath(0.3)
        self.head = nn.Sequential(nn.Linear(16, 5), nn.BatchNorm1d(5))
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("boom")
        return self.head(self.drop_path(self.body(x)))


def state(model: nn.Module) -> tuple[dict[str, bool], dict[str, torch.Tensor]]:
    return ({n: m.training for n, m in model.named_modules()},
            {k: v.clone() for k, v in model.state_dict().items()})


def test_mc_dropout_restores_modes_and_running_stats():
    model = Net().train()
    model.head.eval()  # mixed flags must come back as they were
    before = state(model)
    seen: dict[str, bool] = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, m.training))
             for n, m in model.named_modules() if n]
    x = torch.randn(6, 8)
    p = mc_dropout_probs(model, x, 4)
    for h in hooks:
        h.remove()
    after = state(model)
    assert after[0] == before[0]
    for key, value in before[1].items():
        assert torch.equal(after[1][key], value), key  # BN running stats untouched
    assert {n for n, t in seen.items() if t} == {"body.3", "drop_path"}  # only the stochastic ones train
    torch.testing.assert_close(p.sum(1), torch.ones(6))


def test_mc_dropout_matches_manual_average():
    model = Net().eval()
    x = torch.randn(6, 8)
    torch.manual_seed(3)
    p = mc_dropout_probs(model, x, 5)
    torch.manual_seed(3)
    model.body[3].train()
    model.drop_path.train()
    with torch.no_grad():
        want = torch.stack([torch.softmax(model(x), 1) for _ in range(5)]).mean(0)
    torch.testing.assert_close(p, want)
    with torch.no_grad():
        assert not torch.allclose(p, torch.softmax(model.eval()(x), 1))  # dropout was on


def test_mc_dropout_restores_modes_on_error():
    model = Net(fail=True).train()
    before = state(model)[0]
    with pytest.raises(RuntimeError, match="boom"):
        mc_dropout_probs(model, torch.randn(2, 8), 3)
    assert state(model)[0] == before


def test_mc_dropout_bad_n():
    with pytest.raises(SurgeonError, match="n=0 passes"):
        mc_dropout_probs(Net(), torch.randn(2, 8), 0)
