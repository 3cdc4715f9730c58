"""Evaluation: stream labelled batches through a classifier into `surgeon.metrics.Metrics`.

    ev = surgeon.evaluate(model, surgeon.data.loader("digits", model))
    ev.metrics["acc"], ev.metrics["ece"]            # the paper's metrics (PAPER.md, "Metrics")
    ev.reliability                                  # per-bin accuracy / confidence / count

The model is left exactly as it was (train/eval flags restored, no gradients, nothing written);
batches go to the model's device and every reduction stays there until the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from surgeon.core import checks
from surgeon.parallel import distributed
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.core.jsonio import plain
from surgeon.evaluation.metrics import NLL_MODES, Metrics, check_mc_dropout, mc_dropout_probs, reliability
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import BatchLoop, check_classifier, check_labels, model_device, restored_modes
from surgeon.core.tables import Tabular, quantity_rows
from surgeon._compat import moved_keywords

__all__ = ["EvaluationResult", "check_labels", "evaluate", "model_device", "nan_to_none"]


@dataclass
class EvaluationResult(Tabular):
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
        return {"metrics": plain(self.metrics), "reliability": plain(self.reliability), "samples": self.samples,
                "batches": self.batches, "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per metric (undefined values as None)."""
        return quantity_rows({}, self.metrics)

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        if not self.reliability:  # no confidence bins (an empty evaluation): the metrics themselves
            return viz.plot_rows(self.tidy(), title="evaluation")
        return viz.plot_reliability(self)


#: A metrics dict for JSON, undefined values (NaN) as None: `surgeon.jsonio.plain` (the old name).
nan_to_none = plain


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable[Any], *, batches: int | None = None, mc_dropout: int = 0,
             nll: str = "sample", bins: int = 10, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             progress: bool | str = False, **old: Any) -> EvaluationResult:
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
        progress: show a progress bar (rich); a string: the bar's label (default "evaluating").
        old: ``label=`` of 0.1 (deprecated: give the label as ``progress=``).
    """
    progress, label = _progress_of(progress, old)
    checks.args(batches=batches, mc_dropout=mc_dropout, bins=bins)
    check_mc_dropout(model, mc_dropout)
    if nll not in NLL_MODES:
        raise SurgeonError(f"nll={nll!r} is not a mode; choose from {', '.join(NLL_MODES)}")
    if (k := check_classifier(model, data)) is not None:
        check_labels(data, k)
    device = model_device(model)
    metrics: Metrics | None = None
    samples = 0
    data, batches = _this_rank(data, batches)
    total = batches if batches is not None else (len(data) if hasattr(data, "__len__") else None)

    def step(batch: Any) -> bool:
        nonlocal metrics, samples
        if batch is None:  # every file of the batch failed to decode (warned by the loader)
            return False
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        out, probs = _outputs(model, x if transform is None else transform(x), mc_dropout)
        if metrics is None:
            metrics = Metrics(out.shape[1], bins=bins, nll=nll)
        metrics.update(out, y, probs=probs)
        samples += x.shape[0]
        return True

    loop = BatchLoop("metrics cover", limit=batches)
    with restored_modes(model, "eval"), progress_bar(progress, total, label) as advance:
        loop.run(data, step, advance=advance)
    interrupted = loop.interrupted
    if distributed.active():
        metrics, samples = _all_reduce(metrics, device, bins, nll), distributed.total(samples)
    if metrics is None:
        raise SurgeonError("the data yielded no batch to evaluate; check data= (and subset=)")
    return EvaluationResult(metrics.compute(), reliability(metrics), samples, metrics.batches, interrupted)


def _progress_of(progress: bool | str, old: dict[str, Any]) -> tuple[bool, str]:
    """(show the bar, its label) from ``progress=`` (a label string shows it) or 0.1's ``label=``."""
    moved = moved_keywords(old, ("label",), function="evaluate", new="progress=LABEL")
    if old:
        raise TypeError(f"evaluate() got an unexpected keyword argument {next(iter(old))!r}")
    if isinstance(progress, str):
        return True, progress
    return bool(progress), moved.get("label", "evaluating")


def _this_rank(data: Iterable[Any], batches: int | None) -> tuple[Iterable[Any], int | None]:
    """Under torchrun: this rank's share of the first `batches` batches; else the data as given."""
    if not distributed.active():
        return data, batches
    data = distributed.shard_batches(data)
    batches = None if batches is None else -(-(batches - distributed.rank()) // distributed.world())
    return ([], None) if batches == 0 else (data, batches)  # fewer batches than ranks: this one has none


def _outputs(model: nn.Module, x: torch.Tensor, mc_dropout: int) -> tuple[torch.Tensor, bool]:
    """(logits, False), or with MC dropout (the mean softmax of `mc_dropout` passes, True)."""
    if mc_dropout:
        return mc_dropout_probs(model, x, mc_dropout), True
    return logits_of(model(x)), False


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
