"""Evaluation: stream labelled batches through a classifier into `surgeon.metrics.Metrics`.

    ev = surgeon.evaluate(model, surgeon.data.loader("digits", model))
    ev.metrics["acc"], ev.metrics["ece"]            # the paper's metrics (PAPER.md, "Metrics")
    ev.reliability                                  # per-bin accuracy / confidence / count

The model is left exactly as it was (train/eval flags restored, no gradients, nothing written);
batches go to the model's device and every reduction stays there until the end.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed
from .errors import SurgeonError
from .metrics import NLL_MODES, Metrics, mc_dropout_probs, reliability
from .progress import progress as progress_bar
from .tables import Tabular, quantity_rows

__all__ = ["Evaluation", "check_labels", "evaluate", "model_device", "nan_to_none"]


@dataclass
class Evaluation(Tabular):
    """What `evaluate` measured: ``metrics`` (acc, top5, nll, brier, ece, signed_ece, acc90,
    unc90, freq90, iou, iou90), ``reliability`` bins, the number of ``samples`` and ``batches``,
    and ``interrupted`` when Ctrl-C cut the stream short (the metrics cover the whole batches done)."""

    metrics: dict[str, float]
    reliability: dict[str, np.ndarray] = field(repr=False)
    samples: int
    batches: int
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; undefined values (NaN) as None."""
        rel = {k: [None if np.isnan(v) else float(v) for v in a] for k, a in self.reliability.items()}
        return {"metrics": nan_to_none(self.metrics), "reliability": rel, "samples": self.samples, "batches": self.batches,
                "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per metric (undefined values as None)."""
        return quantity_rows({}, self.metrics)


def nan_to_none(values: dict[str, float]) -> dict[str, float | None]:
    """A metrics dict for JSON: undefined values (NaN) become None (null)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without tensors)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_labels(data: Any, num_classes: int) -> None:
    """Refuse, before any work, a dataset whose labels cannot index `num_classes` outputs: images
    without labels (-1) or labels >= num_classes. Reads the ``labels`` of a dataset or of a
    loader's dataset when it keeps them (every `surgeon.data` dataset does); other iterables are
    checked as they stream, by `Metrics`."""
    labels = getattr(data, "labels", None)
    if labels is None:
        labels = getattr(getattr(data, "dataset", None), "labels", None)
    if labels is None or len(labels) == 0:
        return
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0:
        raise SurgeonError("the data has images without labels (e.g. the built-in samples or a flat folder); "
                           "evaluate on labelled data: digits, cifar10:ROOT, cifar100:ROOT or an ImageFolder tree")
    if hi >= num_classes:
        raise SurgeonError(f"the data has labels up to {hi} but the model has {num_classes} classes; "
                           f"build it with --num-classes {hi + 1} or use the matching dataset")


def _classes(model: nn.Module) -> int | None:
    """The classifier's output size from timm / torchvision conventions, when it says."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    spec = getattr(model, "_surgeon_spec", {}) or {}
    return spec.get("num_classes")


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable[Any], *, batches: int | None = None, mc_dropout: int = 0,
             nll: str = "sample", bins: int = 10, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             progress: bool = False, label: str = "evaluating") -> Evaluation:
    """Metrics of `model` on the ``(images, labels)`` batches of `data`, in eval mode.

    Args:
        model: any classifier returning logits (B, K); its train/eval flags are restored after.
        data: an iterable of ``(images, labels)``; labels are integers (B,) or soft targets (B, K).
        batches: stop after this many batches.
        mc_dropout: average the softmax over this many stochastic passes with only the dropout /
            stochastic-depth modules active (0: one deterministic pass).
        nll: ``sample`` (mean over samples) or ``batch`` (the paper's mean of batch means).
        bins: confidence bins of ECE and the reliability diagram.
        transform: applied to each image batch on the device before the forward (a corruption,
            frequency noise).
        progress: show a progress bar (rich).
    """
    if batches is not None and batches < 1:
        raise SurgeonError(f"batches={batches} must be at least 1")
    if mc_dropout < 0:
        raise SurgeonError(f"mc_dropout={mc_dropout} must be 0 (off) or a number of passes")
    if nll not in NLL_MODES:
        raise SurgeonError(f"nll={nll!r} is not a mode; choose from {', '.join(NLL_MODES)}")
    k = _classes(model)
    if k is not None:
        check_labels(data, k)
    device = model_device(model)
    modes = {m: m.training for m in model.modules()}
    metrics: Metrics | None = None
    samples, interrupted = 0, False
    if distributed.active():  # under torchrun: this rank's batches of the first `batches`
        data = distributed.shard_batches(data)
        batches = None if batches is None else -(-(batches - distributed.rank()) // distributed.world())
        if batches == 0:
            data = []
    total = batches if batches is not None else (len(data) if hasattr(data, "__len__") else None)
    try:
        model.eval()
        with progress_bar(progress, total, label) as advance:
            for batch in data:
                if batch is None:  # every file of the batch failed to decode (warned by the loader)
                    continue
                x = batch[0].to(device, non_blocking=True)
                y = batch[1].to(device, non_blocking=True)
                if transform is not None:
                    x = transform(x)
                if mc_dropout:
                    out, probs = mc_dropout_probs(model, x, mc_dropout), True
                else:
                    out, probs = model(x), False
                if metrics is None:
                    metrics = Metrics(out.shape[1], bins=bins, nll=nll)
                metrics.update(out, y, probs=probs)
                samples += x.shape[0]
                advance()
                if batches is not None and metrics.batches >= batches:
                    break
    except KeyboardInterrupt:
        if metrics is None:
            raise
        interrupted = True
        warnings.warn(f"interrupted: metrics cover the first {metrics.batches} batches", stacklevel=2)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if distributed.active():
        metrics, samples = _all_reduce(metrics, device, bins, nll), distributed.total(samples)
    if metrics is None:
        raise SurgeonError("the data yielded no batch to evaluate; check --data (and --subset)")
    return Evaluation(metrics.compute(), reliability(metrics), samples, metrics.batches, interrupted)


def _all_reduce(metrics: Metrics | None, device: torch.device, bins: int, nll: str) -> Metrics | None:
    """The ranks' accumulators summed (label extremes by min / max), once at the end; a rank
    without batches contributes zeros. Every rank gets the whole data's metrics."""
    classes = [k for k in distributed.gather(metrics.num_classes if metrics else None) if k is not None]
    if not classes:
        return None
    if metrics is None:
        metrics = Metrics(classes[0], bins=bins, nll=nll)
    if metrics.acc is None:
        metrics.acc = metrics._start(device)  # zeros; label extremes 0 and K - 1 are neutral
    distributed.all_reduce_sums(metrics.acc, keep=("edges",), minimum=("label_min",), maximum=("label_max",))
    metrics.batches = int(distributed.total(metrics.batches))
    return metrics
