"""Prediction latency and throughput (the original code's prediction time, ``ops/tests.py``).

    res = surgeon.latency(model, batch_size=64, repeats=20)
    res.rows[0].ms_mean, res.rows[1].images_per_s

Per batch size (1 and `batch_size`): ``warmup`` untimed forwards, then ``repeats`` timed ones on
one fixed random batch; a forward is one pass, or ``mc_dropout`` stochastic passes averaged
(`surgeon.metrics.mc_dropout_probs`), as the original times MC dropout. Each forward is timed by
`torch.utils.benchmark.Timer` (see `_time`); its clock stops after a device synchronisation (CUDA /
MPS), so the time is the device's, not the launch's. ms per batch is the mean +- the standard
deviation (ddof 1) over the repeats; images/s = batch / mean time.
On CUDA the peak memory allocated during the timed forwards is reported too.

The model runs in eval mode under ``torch.inference_mode``; its train / eval flags are restored.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.evaluation.evaluate import model_device
from surgeon.evaluation.metrics import check_mc_dropout, mc_dropout_probs
from surgeon.model.sizes import input_size_of
from surgeon.model.runtime import display_name, restored_modes
from surgeon.core.tables import Tabular

__all__ = ["LatencyResult", "LatencyRow", "latency"]


@dataclass
class LatencyRow:
    """One batch size: ms per batch (mean, std over the repeats), images per second, and the CUDA
    peak memory in MiB (None elsewhere)."""

    batch_size: int
    ms_mean: float
    ms_std: float
    images_per_s: float
    peak_memory_mib: float | None


@dataclass
class LatencyResult(Tabular):
    model: str
    device: str
    input_size: tuple[int, ...]
    mc_dropout: int
    repeats: int
    warmup: int
    rows: list[LatencyRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x batch size x quantity (ms_mean, ms_std, images_per_s, peak_memory_mib)."""
        return [{"model": self.model, "device": self.device, "batch_size": r.batch_size, "quantity": q,
                 "value": getattr(r, q)} for r in self.rows for q in ("ms_mean", "ms_std", "images_per_s",
                                                                       "peak_memory_mib")]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), x="batch_size", title=f"latency on {self.device}")


def _timer_class() -> type:
    """`torch.utils.benchmark.Timer`, imported on first use without the "No CUDA runtime is found"
    warning its C++-extension helper logs on a machine with CUDA_HOME set and no GPU."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def _time(forward, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of `repeats` timed calls of `forward`, after `warmup` untimed ones, each by
    `torch.utils.benchmark.Timer.timeit(1)`: the process's torch threads, garbage collection off,
    the clock read after an accelerator synchronisation (on the model's device: made current).
    Timer.timeit runs two untimed calls of its own before each timed one, so the whole costs
    warmup + 3 x repeats forwards; blocked_autorange would choose its own number of calls."""
    timer = _timer_class()(stmt="forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        for _ in range(warmup):
            forward()
        return [timer.timeit(1).times[0] for _ in range(repeats)]


def _check(batch_size: int, repeats: int, warmup: int, mc_dropout: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 2), ("warmup", warmup, 0),
                             ("mc_dropout", mc_dropout, 0)):
        if not isinstance(value, int) or value < low:
            raise SurgeonError(f"{name}={value!r} must be an integer >= {low}")
    checks.args(batch_size=batch_size, repeats=repeats, warmup=warmup, mc_dropout=mc_dropout)  # the upper bounds


def latency(model: nn.Module, *, batch_size: int = 64, input_size: Sequence[int] | None = None, repeats: int = 20,
            warmup: int = 3, mc_dropout: int = 0, seed: int = 0) -> LatencyResult:
    """ms per batch at batch 1 and at `batch_size` on the model's device (see the module docstring).

    Args:
        input_size: (C, H, W); default the size the model is used at.
        repeats: timed forwards per batch size (at least 2, for the std); warmup: untimed ones first.
        mc_dropout: passes per forward (0: one deterministic pass).
        seed: of the random input batch.
    """
    _check(batch_size, repeats, warmup, mc_dropout)
    check_mc_dropout(model, mc_dropout)
    size = input_size_of(model, input_size)
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    res = LatencyResult(display_name(model), str(device), size, mc_dropout, repeats, warmup)
    with restored_modes(model, "eval"), torch.inference_mode():
        for b in sorted({1, batch_size}):
            x = torch.randn(b, *size, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
            forward = (lambda x=x: mc_dropout_probs(model, x, mc_dropout)) if mc_dropout else (lambda x=x: model(x))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = _time(forward, device, repeats, warmup)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            mean = statistics.fmean(times)
            res.rows.append(LatencyRow(b, 1e3 * mean, 1e3 * statistics.stdev(times), b / mean, peak))
    return res
