"""Cells: a grid of evaluations (one per corruption and severity, or per frequency band), run in
order or as tasks of a `surgeon.executor`; Ctrl-C keeps the whole cells done.

Randomness: every (corruption, severity) cell and every frequency restarts a `torch.Generator` on
the model's device from `seed`, so a cell's value does not depend on which other cells were asked
for, and one seed gives the same numbers on a given device. The wrapping adds no host sync;
motion blur and JPEG compression read back to the host by their nature (`surgeon.corruptions`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from surgeon.evaluation.evaluate import EvaluationResult, evaluate
from surgeon.parallel.executors import Executor, fan_out
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import model_device


def _generator(model: nn.Module, seed: int) -> torch.Generator:
    return torch.Generator(device=model_device(model)).manual_seed(seed)


def _run(model: nn.Module, cells: dict[Any, Callable[[], dict[str, Any]]], batches: int | None, progress: bool,
         label: str, executor: Executor | None = None) -> tuple[dict[Any, EvaluationResult], bool]:
    """`evaluate` every cell in order; a cell is a function returning evaluate's ``data`` and
    ``transform``. Stops at Ctrl-C, dropping the cell it cut (partial cells would not compare);
    returns the evaluations and whether it was interrupted. Nothing done yet: Ctrl-C propagates.
    With an `executor` (`surgeon.executor("ray")`) every cell is one task."""
    if executor is not None and not executor.in_process:
        return _run_tasks(executor, model, cells, batches, progress, label)
    done: dict[Any, EvaluationResult] = {}
    with progress_bar(progress, len(cells), label) as advance:
        for key, cell in cells.items():
            try:
                ev = evaluate(model, batches=batches, **cell())
            except KeyboardInterrupt:
                if not done:
                    raise
                return done, True
            if ev.interrupted:
                if not done:
                    raise KeyboardInterrupt
                return done, True
            done[key] = ev
            advance()
    return done, False


def _cell_task(model: nn.Module, cell: Callable[[], dict[str, Any]], batches: int | None) -> EvaluationResult:
    return evaluate(model, batches=batches, **cell())


def _run_tasks(ex: Executor, model: nn.Module, cells: dict[Any, Callable[[], dict[str, Any]]], batches: int | None,
               progress: bool, label: str) -> tuple[dict[Any, EvaluationResult], bool]:
    """`_run` with the cells as tasks on `ex`; a cell whose worker died on every attempt is left
    out with a warning naming it; Ctrl-C cancels the tasks and keeps the cells done."""
    keys = list(cells)
    done: dict[Any, EvaluationResult] = {}
    failed: dict[Any, str] = {}
    try:
        with ex, progress_bar(progress, len(cells), label) as advance:
            for i, out in fan_out(ex, _cell_task, (model,), [(cells[k], batches) for k in keys]):
                if out.ok:
                    done[keys[i]] = out.value
                else:
                    failed[keys[i]] = out.failed
                advance()
    except KeyboardInterrupt:
        if not done:
            raise
        return {k: done[k] for k in keys if k in done}, True
    if failed:
        warnings.warn(f"{len(failed)} cell(s) left out, their tasks failed: "
                      + "; ".join(f"{k}: {why}" for k, why in list(failed.items())[:3]), stacklevel=3)
    return {k: done[k] for k in keys if k in done}, False
