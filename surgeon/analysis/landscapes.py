"""Loss landscapes (paper Fig. 1a; Li et al., 2018): the objective on a 1-D line or a 2-D plane
of random directions through the weights.

    res = surgeon.landscape(model, loader, lattice=Lattice(dims=2, grid=21, span=1.0, norm="filter"), batches=4,
                            save="landscape.json")     # resumable: finished points are kept on disk
    res.loss, res.stderr                               # (grid, grid) arrays, NaN where not computed

Directions are Gaussian over the whole state_dict, one tensor at a time, rescaled to the tensor's
norm: per output filter (``norm="filter"``, Li et al.: the norm of each slice along dim 0) or the
paper's code's way (``norm="dim0"``: norms taken along dim 0). Tensors with fewer than 2 dimensions
(biases, norm parameters, BatchNorm statistics) and position-embedding / relative-position tables
get zero direction. The point (a, b) is theta + a d1 + b d2, evaluated in eval mode through
``functional_call`` (the model is never written) on the same frozen batches each time; its value is
the mean objective over the batches, with the standard error across them.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from surgeon.core import checks
from surgeon.analysis.hessian import _batch, objective as loss_of
from surgeon.analysis.objective import Objective
from surgeon.analysis.options import NORMS, Lattice
from surgeon.parallel.run import Run
from surgeon._compat import options_from
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.parallel.executors import Executor, fan_out
from surgeon.core.files import check_input, write_text
from surgeon.core.jsonio import dumps
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import analysis_mode, check_batch_labels, check_classifier, display_name, model_device
from surgeon.core.tables import Tabular

__all__ = ["LandscapeResult", "directions", "landscape", "EXCLUDED"]

EXCLUDED = re.compile(r"pos_embed|rel_pos|relative_position|position_bias|pos_bias")


def directions(model: nn.Module, *, norm: str = "filter", seed: int = 0) -> dict[str, torch.Tensor]:
    """One random direction: ``{state_dict name: tensor}`` for every floating tensor with at least
    2 dimensions that is not a position table, Gaussian, rescaled to the weights' norms
    (``filter``: each slice ``d[i]`` to ``||w[i]||``; ``dim0``: norms along dim 0)."""
    checks.args(seed=seed)
    if norm not in NORMS:
        raise SurgeonError(f"unknown direction norm {norm!r}; use filter (Li et al.) or dim0 (the paper's code)")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in model.state_dict().items():
        if not w.is_floating_point() or w.dim() < 2 or EXCLUDED.search(name):
            continue
        d = torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.device, w.dtype)
        dims = tuple(range(1, w.dim())) if norm == "filter" else (0,)
        scale = torch.linalg.vector_norm(w, dim=dims, keepdim=True) / (
            torch.linalg.vector_norm(d, dim=dims, keepdim=True) + 1e-10)
        out[name] = d * scale
    if not out:
        raise SurgeonError("the model has no tensor with 2 or more dimensions to move along")
    return out


@dataclass
class LandscapeResult(Tabular):
    """The objective over ``coords`` (1-D) or ``coords x coords`` (2-D; rows a, columns b).

    ``seconds_per_point`` and ``eval_seconds`` (one evaluation pass over the same batches: the
    median over the computed points of their forward and losses, the weights' move left out; 0
    when every point was read from a saved file) give the cost of a point relative to evaluation."""

    model: str
    coords: np.ndarray
    loss: np.ndarray
    stderr: np.ndarray
    config: dict[str, Any]
    seconds_per_point: float
    eval_seconds: float
    interrupted: bool = False
    failed: dict[str, str] | None = None  # "(i, j)" -> why the point's task failed (left NaN)

    @property
    def done(self) -> int:
        return int(np.isfinite(self.loss).sum())

    def to_dict(self) -> dict[str, Any]:
        def listed(a: np.ndarray) -> Any:
            return np.where(np.isfinite(a), a, None).tolist()

        return {"model": self.model, "config": self.config, "coords": self.coords.tolist(), "loss": listed(self.loss),
                "stderr": listed(self.stderr), "seconds_per_point": self.seconds_per_point,
                "eval_seconds": self.eval_seconds, "interrupted": self.interrupted, "failed": self.failed or {}}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per grid point and quantity (loss, stderr); ``a`` (and ``b`` in 2-D) its coordinates."""
        rows = []
        for index in np.ndindex(self.loss.shape):
            ids = {"model": self.model, **{ax: float(self.coords[i]) for ax, i in zip("ab", index)}}
            rows += [{**ids, "quantity": q, "value": float(a[index]) if np.isfinite(a[index]) else None}
                     for q, a in (("loss", self.loss), ("stderr", self.stderr))]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_landscape(self)


def _resume(path: Path, config: dict[str, Any], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    loss, err = np.full(shape, np.nan), np.full(shape, np.nan)
    if not path.exists():
        return loss, err
    check_input(path, "landscape file")
    try:
        saved = json.loads(path.read_text())
        old = saved["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SurgeonError(f"{str(path)!r} is not a landscape file; pass another save= or delete it") from None
    diff = [k for k in config if old.get(k) != config[k]]
    if diff:
        k = diff[0]
        raise SurgeonError(f"{str(path)!r} holds a landscape with other settings ({k} {old.get(k)!r} here "
                           f"{config[k]!r}); pass another save= or delete it")
    loss[...] = np.array(saved["loss"], dtype=float)
    err[...] = np.array(saved["stderr"], dtype=float)
    return loss, err


def landscape(model: nn.Module, data: Iterable[Any], *, lattice: Lattice | None = None, batches: int = 1,
              objective: Objective | None = None, seed: int = 0, save: str | os.PathLike | None = None,
              run: Run | None = None, **old: Any) -> LandscapeResult:
    """Evaluate `objective` (an `Objective`; default NLL alone) on the `lattice` (a `Lattice`: a
    ``grid`` (x ``grid``) lattice over [-span, span] along ``dims`` random directions, scaled by
    ``norm``), each point on the same `batches` batches of `data` (frozen on the first draw). With
    `save`, every finished point is written there at once and a rerun resumes from it; Ctrl-C
    returns the points done (``interrupted=True``). ``wd=``, ``l2=``, ``label_smoothing=``;
    ``dims=``, ``grid=``, ``span=``, ``norm=``; ``progress=``, ``executor=``: deprecated, build the
    `Objective`, the `Lattice`, the `surgeon.parallel.Run`.

    ``run.executor`` (`surgeon.executor`, e.g. ``surgeon.executor("ray")``): the rows of the grid (the
    points of a 1-D profile) run as its tasks, the model, directions and batches shared once
    (Ray's object store); a row whose worker died on every attempt is left NaN and named in
    ``failed``. The values equal the serial ones (each task computes its points as this process)."""
    objective = options_from(Objective, objective, old, function="landscape", keyword="objective", strict=False)
    lattice = options_from(Lattice, lattice, old, function="landscape", keyword="lattice", strict=False)
    run = options_from(Run, run, old, function="landscape", keyword="run").only(
        "landscape", "progress", "executor")
    (dims, grid, span, norm), progress, executor = astuple(lattice), run.progress, run.executor
    checks.args(batches=batches, seed=seed)
    frozen = [_batch(b, model_device(model)) for b, _ in zip(data, range(batches))]
    if not frozen:
        raise SurgeonError("the data yielded no batches; check data=")
    name = display_name(model)
    config = {"model": name, "dims": dims, "grid": grid, "span": span, "norm": norm, "batches": len(frozen),
              "batch_size": int(frozen[0][0].shape[0]), **objective.keywords(), "seed": seed,
              "params": sum(p.numel() for p in model.parameters())}
    moves = _moves(model, dims, norm, seed)
    check_classifier(model, data)
    path = Path(save) if save is not None else None
    shape = (grid,) * dims
    loss, err = _resume(path, config, shape) if path else (np.full(shape, np.nan), np.full(shape, np.nan))
    sweep = _Sweep(name, np.linspace(-span, span, grid), loss, err, config, path)
    with analysis_mode(model), torch.no_grad():
        check_batch_labels(logits_of(model(frozen[0][0][:1])), torch.cat([y for _, y in frozen]))
        spent, evals, interrupted = _sweep_points(model, sweep, moves, frozen, objective, progress, executor)
    if sweep.failed:
        warnings.warn(f"{len(sweep.failed)} point(s) left NaN, their tasks failed: "
                      + "; ".join(f"{k} {v}" for k, v in list(sweep.failed.items())[:3]), stacklevel=2)
    eval_seconds = float(np.median(evals)) if evals else 0.0
    res = LandscapeResult(name, sweep.coords, loss, err, config, spent / max(1, len(evals)), eval_seconds, interrupted,
                          sweep.failed or None)
    if path:
        _write(path, res)
    return res


class _Moves(NamedTuple):
    """The random directions of a landscape: the state_dict names they move (`keys`) and, per
    direction, one tensor per name (`vectors`)."""

    keys: list[str]
    vectors: list[list[torch.Tensor]]


def _moves(model: nn.Module, dims: int, norm: str, seed: int) -> _Moves:
    """`dims` directions (`directions`), the i-th seeded with ``seed + i``, drawn side by side in
    threads: each is one single-threaded Gaussian stream from its own generator, so the values are
    those of drawing them in turn (resnet18's two: 0.26 s instead of 0.46 s on two cores)."""
    def draw(i: int) -> dict[str, torch.Tensor]:
        return directions(model, norm=norm, seed=seed + i)

    if dims == 1:
        drawn = [draw(0)]
    else:
        with ThreadPoolExecutor(max_workers=dims) as pool:
            drawn = list(pool.map(draw, range(dims)))
    return _Moves(list(drawn[0]), [list(d.values()) for d in drawn])


@dataclass
class _Sweep:
    """A landscape being computed: its coordinates, the points so far (`loss`, `err`: NaN where not
    computed), its settings, the file that keeps finished points (`path`) and the points whose
    tasks failed (``"(i, j)"`` -> why)."""

    name: str
    coords: np.ndarray
    loss: np.ndarray
    err: np.ndarray
    config: dict[str, Any]
    path: Path | None
    failed: dict[str, str] = field(default_factory=dict)

    def keep(self) -> None:
        """Write the points so far to `path` (when set), so a rerun resumes from them."""
        if self.path:
            _write(self.path, LandscapeResult(self.name, self.coords, self.loss, self.err, self.config, 0.0, 0.0))


def _sweep_points(model: nn.Module, sweep: _Sweep, moves: _Moves, frozen: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  objective: Objective, progress: bool, executor: Executor | None) -> tuple[float, list[float], bool]:
    """Compute the points not done yet, in this process or as rows on `executor`, each kept as it
    finishes: (seconds spent on points, the evaluation seconds of each computed point, interrupted).
    Ctrl-C stops with a warning and the points done."""
    todo = [ij for ij in np.ndindex(*sweep.loss.shape) if not np.isfinite(sweep.loss[ij])]
    spent, evals = 0.0, []
    with progress_bar(progress, len(todo), "landscape") as advance:
        try:
            if executor is not None and not executor.in_process:
                def row_done(points: int) -> None:
                    sweep.keep()
                    for _ in range(points):
                        advance()

                return (*_on_executor(executor, model, frozen, moves, sweep, todo, objective, row_done), False)
            base = dict(model.state_dict(keep_vars=False))
            params = dict(model.named_parameters())
            shifted = _Shifted(base, moves)
            for ij in todo:
                start = time.perf_counter()
                sweep.loss[ij], sweep.err[ij], seconds = _point(model, base, params, shifted, sweep.coords, ij, frozen, objective)
                spent += time.perf_counter() - start
                evals.append(seconds)
                sweep.keep()
                advance()
        except KeyboardInterrupt:
            warnings.warn(f"interrupted: {int(np.isfinite(sweep.loss).sum())} of {sweep.loss.size} points done"
                          + (f", kept in {sweep.path}" if sweep.path else ""), stacklevel=3)
            return spent, evals, True
    return spent, evals, False


def _point(model: nn.Module, base: dict[str, torch.Tensor], params: Iterable[str], shifted: _Shifted,
           coords: np.ndarray, ij: tuple[int, ...], frozen: Sequence[tuple[torch.Tensor, torch.Tensor]],
           objective: Objective) -> tuple[float, float, float]:
    """(mean objective, its standard error over the batches, seconds of its evaluation) at theta
    + a d1 (+ b d2), the moved weights from `shifted` (`_Shifted`, reused from point to point),
    the model reparametrised once for all the batches of the point (`_Batches`). The evaluation's
    seconds (the forward and the losses, read back as floats, so a GPU's queue is drained) are
    the point's evaluation pass: `LandscapeResult.eval_seconds` is their median."""
    moved = {**base, **dict(zip(shifted.moves.keys, shifted.at(coords, ij)))}
    start = time.perf_counter()
    logits = functional_call(_Batches(model), {"model." + k: v for k, v in moved.items()}, ([x for x, _ in frozen],))
    values = [float(loss_of(z, y, {k: moved[k] for k in params}, **objective.keywords()))
              for z, (_, y) in zip(logits, frozen)]
    seconds = time.perf_counter() - start
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else np.nan, seconds


class _Shifted:
    """theta + a d1 (+ b d2) in buffers reused from point to point, no fresh allocation of the
    model per point. The row's theta + a d1 is kept while `a` stays (the points of a row come in
    order), so a 2-D point costs one pass over the weights: (theta + a d1) + b d2, added out of
    place into the point's buffers, the same arithmetic as computing both terms per point."""

    def __init__(self, base: dict[str, torch.Tensor], moves: _Moves) -> None:
        self.base, self.moves = [base[k] for k in moves.keys], moves
        self.row = [torch.empty_like(t) for t in self.base]
        self.point = [torch.empty_like(t) for t in self.base] if len(moves.vectors) == 2 else self.row
        self.a: float | None = None

    def at(self, coords: np.ndarray, ij: tuple[int, ...]) -> list[torch.Tensor]:
        a = float(coords[ij[0]])
        if a != self.a:
            for out, w, d in zip(self.row, self.base, self.moves.vectors[0]):
                torch.add(w, d, alpha=a, out=out)
            self.a = a
        if len(ij) == 2:
            b = float(coords[ij[1]])
            for out, w, d in zip(self.point, self.row, self.moves.vectors[1]):
                torch.add(w, d, alpha=b, out=out)
        return self.point


class _Batches(nn.Module):
    """``model`` over a list of batches in one call: one `functional_call` reparametrisation
    serves all the batches of a point. Holds a reference to the model; changes nothing in it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [logits_of(self.model(x)) for x in xs]


def _row_task(model: nn.Module, frozen: Sequence[tuple[torch.Tensor, torch.Tensor]], moves: _Moves,
              coords: np.ndarray, points: list[tuple[int, ...]], objective: Objective) -> tuple[list[tuple[float, float, float]], float]:
    """One task: the points of a row, each as `landscape` computes it in its own process."""
    start = time.perf_counter()
    base = dict(model.state_dict(keep_vars=False))
    params = [k for k, _ in model.named_parameters()]
    with analysis_mode(model), torch.no_grad():
        shifted = _Shifted(base, moves)
        values = [_point(model, base, params, shifted, coords, ij, frozen, objective) for ij in points]
    return values, time.perf_counter() - start


def _on_executor(ex: Executor, model: nn.Module, frozen: Sequence[tuple[torch.Tensor, torch.Tensor]], moves: _Moves,
                 sweep: _Sweep, todo: list[tuple[int, ...]], objective: Objective,
                 finished: Callable[[int], None]) -> tuple[float, list[float]]:
    """The points `todo` in balanced groups (`_balanced`) on `ex` (model, batches and directions
    put once); results are written into the sweep as groups finish (`finished` after each); the
    points of failed groups named in ``sweep.failed``."""
    with ex:
        groups = _balanced(todo, ex.workers, len(sweep.coords))
        spent, evals = 0.0, []
        shared = (model, list(frozen), moves, sweep.coords)
        for i, out in fan_out(ex, _row_task, shared, [(points, objective) for points in groups]):
            if not out.ok:
                sweep.failed.update({str(ij): out.failed for ij in groups[i]})
                continue
            values, task_seconds = out.value
            for ij, (m, e, seconds) in zip(groups[i], values):
                sweep.loss[ij], sweep.err[ij] = m, e
                evals.append(seconds)
            spent += task_seconds
            finished(len(values))
    return spent, evals


def _balanced(todo: list[tuple[int, ...]], workers: int, row: int, rows_per_task: int = 4) -> list[list[tuple[int, ...]]]:
    """`todo` in contiguous groups whose sizes differ by at most one point, as many groups as a
    multiple of `workers` (so that the last round keeps every worker busy: 5 rows on 2 workers
    would leave one idle for a whole row) and of at most about `rows_per_task` rows each (each
    task receives the model and the directions once: fewer, larger tasks pay that less often;
    every finished group is saved)."""
    tasks = min(len(todo), workers * max(1, math.ceil(len(todo) / (workers * rows_per_task * row))))
    bounds = np.linspace(0, len(todo), tasks + 1).round().astype(int)
    return [todo[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _write(path: Path, res: LandscapeResult) -> None:
    write_text(path, dumps(res.to_dict()))
