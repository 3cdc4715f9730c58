"""Streaming classification metrics of Park & Kim's robustness and calibration tables (PAPER.md,
"Metrics"), computed on the device, plus MC-dropout predictions and reliability-diagram data.

    m = Metrics(num_classes=100)
    for x, y in loader:
        m.update(model(x), y)             # logits; or probabilities with probs=True
    m.compute()                           # {"acc": ..., "nll": ..., "ece": ..., ...}
    reliability(m)                        # per-bin accuracy / confidence / count

With p the predicted distribution (softmax of the logits, or the given probabilities), the
confidence is c = max_k p_k and the prediction argmax_k p_k. `update` reduces each batch into
on-device accumulators with in-place ops (index_add_, no bincount): it never reads a value back to
the host, so it does not stall a GPU. `compute` copies the accumulators to the host once. Sums that
grow are float64 (float32 on MPS), counts int64; N batches give the same result as one batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from timm.layers import DropBlock2d, DropPath
from torch import nn
from torchvision.ops import StochasticDepth

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.model.runtime import accumulator_dtype, restored_modes

__all__ = ["CONFIDENT", "NLL_MODES", "STOCHASTIC", "Metrics", "reliability", "mc_dropout_probs", "check_mc_dropout"]

CONFIDENT = 0.9  # the confidence cut-off of Acc-90, Unc-90, Freq-90 and IoU-90
NLL_MODES = ("sample", "batch")

STOCHASTIC: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    DropPath, DropBlock2d, StochasticDepth,
)  # the modules MC dropout switches to train mode


class Metrics:
    """Accuracy, calibration and uncertainty metrics over a stream of batches.

    With N samples, labels y (the argmax of soft targets), target distributions q (one-hot for
    integer labels) and B the equal-width confidence bins (lo, hi] of [0, 1]:

    - ``acc`` = P(argmax p = y); ``top5`` = P(y among the min(5, K) most probable classes).
    - ``nll`` = mean over samples of -sum_k q_k log p_k (cross-entropy; with soft targets the
      soft-target cross-entropy). ``nll="batch"``: the paper's mean over batches of the per-batch
      means, which weights samples of small batches more.
    - ``brier`` = mean over samples of sum_k (q_k - p_k)^2 (with integer labels, q is one-hot).
    - ``ece`` = sum_b (n_b / N) |acc_b - conf_b|; ``signed_ece`` = sum_b (n_b / N)(acc_b - conf_b)
      = acc - mean confidence: positive = under-confident. (The paper's code reports
      conf_b - acc_b, the opposite sign.)
    - ``acc90`` = P(correct | c > 0.9); ``unc90`` = P(c <= 0.9 | wrong); ``freq90`` = P(c > 0.9).
    - ``iou`` = mean over classes of TP / (TP + FP + FN), classes with TP + FP + FN = 0 (never
      predicted nor present) left out; ``iou90``: the same over the samples with c > 0.9. (The
      paper's code averages over the classes present among the targets instead.)

    A value with nothing to average over (``acc90`` when no sample has c > 0.9, everything
    before the first update) is NaN. A predicted probability of exactly 0 for the target class
    gives an infinite NLL, as it should. Integer labels outside [0, K) are clamped for the
    accumulators and counted; `compute` raises a `SurgeonError` naming one of them.
    """

    def __init__(self, num_classes: int, *, bins: int = 10, nll: str = "sample"):
        checks.args(num_classes=num_classes, bins=bins)
        if nll not in NLL_MODES:
            raise SurgeonError(f"nll={nll!r} is not a mode; choose from {', '.join(NLL_MODES)}")
        self.num_classes, self.bins, self.nll = num_classes, bins, nll
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.acc: dict[str, torch.Tensor] | None = None
        self.batches = 0

    def _start(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Zeroed accumulators. Rows of the (2, K) count tables: all samples, samples with c > 0.9."""
        f, i, k, b = accumulator_dtype(device), torch.int64, self.num_classes, self.bins
        return {
            "top5": torch.zeros((), dtype=i, device=device),
            "nll": torch.zeros((), dtype=f, device=device),
            "nll_batches": torch.zeros((), dtype=f, device=device),  # sum of per-batch mean NLLs
            "brier": torch.zeros((), dtype=f, device=device),
            "bin_n": torch.zeros(b, dtype=i, device=device),
            "bin_correct": torch.zeros(b, dtype=i, device=device),
            "bin_conf": torch.zeros(b, dtype=f, device=device),  # sum of confidences per bin
            "pred": torch.zeros(2, k, dtype=i, device=device),  # TP + FP per class
            "true": torch.zeros(2, k, dtype=i, device=device),  # TP + FN per class
            "tp": torch.zeros(2, k, dtype=i, device=device),
            "bad": torch.zeros((), dtype=i, device=device),  # labels outside [0, K)
            "label_min": torch.zeros((), dtype=i, device=device),
            "label_max": torch.full((), k - 1, dtype=i, device=device),
            "edges": torch.arange(1, b, device=device, dtype=f) / b,  # inner bin edges
        }

    def _check(self, out: torch.Tensor, targets: torch.Tensor) -> None:
        k = self.num_classes
        if out.dim() != 2 or out.shape[1] != k:
            raise SurgeonError(f"predictions have shape {tuple(out.shape)}, expected (batch, {k}); "
                               f"pass logits or probabilities for the {k} classes")
        soft_ok = targets.dim() == 2 and targets.shape == out.shape and targets.is_floating_point()
        hard_ok = targets.dim() == 1 and targets.shape[0] == out.shape[0] and not targets.is_floating_point()
        if not (soft_ok or hard_ok):
            raise SurgeonError(f"targets have shape {tuple(targets.shape)} and dtype {targets.dtype}; expected "
                               f"integer labels ({out.shape[0]},) or soft float targets ({out.shape[0]}, {k})")

    def _labels(self, targets: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and target distributions q (B, K). Integer labels outside [0, K) are counted and
        their extremes kept, on device, then clamped."""
        if targets.dim() == 2:
            q = targets.to(like.dtype)
            return q.argmax(1), q
        a, k = self.acc, self.num_classes
        a["bad"].add_(((targets < 0) | (targets >= k)).sum())
        torch.minimum(a["label_min"], targets.min(), out=a["label_min"])
        torch.maximum(a["label_max"], targets.max(), out=a["label_max"])
        labels = targets.clamp(0, k - 1).long()
        return labels, torch.zeros_like(like).scatter_(1, labels[:, None], 1.0)

    @torch.no_grad()
    def update(self, logits_or_probs: torch.Tensor, targets: torch.Tensor, *, probs: bool = False) -> None:
        """Add one batch: logits (or, with ``probs=True``, probabilities) of shape (B, K) and
        integer labels (B,) or soft targets (B, K). No host sync."""
        self._check(logits_or_probs, targets)
        if logits_or_probs.shape[0] == 0:
            return
        if self.acc is None:
            self.acc = self._start(logits_or_probs.device)
        a = self.acc
        x = logits_or_probs.detach().to(a["nll"].dtype)
        logp = x.log() if probs else x.log_softmax(1)
        p = x if probs else logp.exp()
        labels, q = self._labels(targets.detach(), p)
        nll = -torch.where(q > 0, q * logp, 0.0).sum(1)
        a["nll"].add_(nll.sum())
        a["nll_batches"].add_(nll.mean())
        a["brier"].add_((q - p).square().sum())
        conf, pred = p.max(1)
        correct = pred == labels
        top = p.topk(min(5, self.num_classes), 1).indices
        a["top5"].add_((top == labels[:, None]).any(1).sum())
        b = torch.bucketize(conf, a["edges"])
        a["bin_n"].index_add_(0, b, torch.ones_like(b))
        a["bin_correct"].index_add_(0, b, correct.long())
        a["bin_conf"].index_add_(0, b, conf)
        rows = torch.stack([torch.ones_like(correct), conf > CONFIDENT]).long()  # (2, B) sample weights
        a["pred"].index_add_(1, pred, rows)
        a["true"].index_add_(1, labels, rows)
        a["tp"].index_add_(1, labels, rows * correct)
        self.batches += 1

    def host(self) -> dict[str, np.ndarray]:
        """The accumulators as numpy arrays (one copy from the device); raises a `SurgeonError`
        if any label was outside [0, K)."""
        a = self.acc if self.acc is not None else self._start(torch.device("cpu"))
        v = {k: t.cpu().numpy() for k, t in a.items()}
        if v["bad"] > 0:
            k = self.num_classes
            example = int(v["label_max"]) if v["label_max"] >= k else int(v["label_min"])
            raise SurgeonError(f"{int(v['bad'])} target label(s) outside [0, {k}), e.g. {example}, but the metrics "
                               f"have {k} classes; fix num_classes or map the labels to 0..{k - 1}")
        return v

    def compute(self) -> dict[str, float]:
        """All metrics as floats (NaN where undefined); see the class docstring."""
        v = self.host()
        n, correct = v["pred"][0].sum(), v["tp"][0].sum()
        n90, correct90 = v["pred"][1].sum(), v["tp"][1].sum()
        wrong, wrong90 = n - correct, n90 - correct90
        gap = v["bin_correct"] - v["bin_conf"]  # per bin: n_b (acc_b - conf_b)
        return {
            "acc": _ratio(correct, n),
            "top5": _ratio(v["top5"], n),
            "nll": _ratio(v["nll"], n) if self.nll == "sample" else _ratio(v["nll_batches"], self.batches),
            "brier": _ratio(v["brier"], n),
            "ece": _ratio(np.abs(gap).sum(), n),
            "signed_ece": _ratio(gap.sum(), n),
            "acc90": _ratio(correct90, n90),
            "unc90": _ratio(wrong - wrong90, wrong),
            "freq90": _ratio(n90, n),
            "iou": _mean_iou(v["tp"][0], v["pred"][0], v["true"][0]),
            "iou90": _mean_iou(v["tp"][1], v["pred"][1], v["true"][1]),
        }


def _ratio(num: float, den: float) -> float:
    """num / den as a float; NaN when den is 0."""
    return float(num) / float(den) if den else math.nan


def _mean_iou(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over classes with TP + FP + FN > 0 of TP / (TP + FP + FN); TP + FP + FN = pred + true - TP."""
    union = pred + true - tp
    seen = union > 0
    return float((tp[seen] / union[seen]).mean()) if seen.any() else math.nan


def reliability(metrics: Metrics) -> dict[str, np.ndarray]:
    """Reliability-diagram data (paper: per-bin accuracy bars against the diagonal, plus a
    confidence histogram): bin ``edges`` (bins + 1), per-bin ``accuracy`` acc_b and mean
    ``confidence`` conf_b (NaN for empty bins), and ``count`` n_b."""
    v = metrics.host()
    n = v["bin_n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": np.linspace(0.0, 1.0, metrics.bins + 1),
            "accuracy": np.where(n > 0, v["bin_correct"] / n, np.nan),
            "confidence": np.where(n > 0, v["bin_conf"] / n, np.nan),
            "count": n,
        }


@contextmanager
def _dropout_only(model: nn.Module) -> Iterator[None]:
    """Eval mode except the `STOCHASTIC` modules, in train mode; every module's flag restored after."""
    with restored_modes(model, "eval"):
        for m in model.modules():
            if isinstance(m, STOCHASTIC):
                m.training = True
        yield


def check_mc_dropout(model: nn.Module, passes: int, name: str = "mc_dropout") -> None:
    """Refuse MC dropout (`passes` > 0) on a model with no `STOCHASTIC` module of rate > 0: every
    pass would give the same prediction (a rate of 0, as timm ViTs' Dropout(p=0), counts as none)."""
    rates = [getattr(m, "p", getattr(m, "drop_prob", 1.0)) for m in model.modules() if isinstance(m, STOCHASTIC)]
    if passes and not any(not isinstance(r, (int, float)) or r > 0 for r in rates):
        raise SurgeonError(f"{name}={passes} asks for MC dropout, but the model has no dropout (no Dropout / DropPath "
                           f"module with a rate above 0): every pass would be the same; pass {name}=0, or build the "
                           "model with dropout (timm: drop_path_rate=0.1)")


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """MC-dropout prediction: p = (1/n) sum_i softmax(model(x)) over n stochastic passes, with only
    the Dropout / DropPath / DropBlock / StochasticDepth modules in train mode (BatchNorm and
    everything else in eval). Every module's train/eval flag is restored afterwards, also on error.
    Dropout applied functionally on a parent's flag (``F.dropout(x, training=self.training)``, e.g.
    timm ResNet's head ``drop_rate``) stays off."""
    if n < 1:
        raise SurgeonError(f"n={n} passes; MC dropout needs at least 1")
    with _dropout_only(model):
        return sum(torch.softmax(logits_of(model(x)).float(), 1) for _ in range(n)) / n
