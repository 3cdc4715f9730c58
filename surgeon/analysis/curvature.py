"""Curvature of the training objective: Hessian eigenvalues (paper Fig. 1c, Fig. 4), trace,
spectral density, and spectra pooled over a dataset.

    eig = surgeon.hessian_eigs(model, (x, y), k=5, which="LM", blocks="*")
    eig.eigenvalues, eig.residuals        # ||Hv - lambda v|| / |lambda| for every pair
    tr = surgeon.hessian_trace(model, (x, y))          # Hutch++ with a standard error
    spec = surgeon.hessian_spectrum(model, loader, k=5, batches=20)   # the paper's max-eigenvalue spectrum

The objective, the analysed parameters and Hessian-vector products are `surgeon.analysis.hessian`;
the eigen-solvers (Lanczos, the paper's power iteration) `surgeon.analysis.eigensolvers`. Here: the
trace and density estimators and the public ``hessian_*`` functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from surgeon.core import checks
from surgeon.core.numerics import density_on_grid
from surgeon.core.errors import SurgeonError
from surgeon.parallel.executors import Executor, fan_out
from surgeon.parallel.run import Run
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import BatchLoop, analysis_mode, check_classifier, display_name
from surgeon.core.tables import Tabular, quantity_rows
from surgeon.analysis.hessian import HessianOperator, NonFiniteLoss, selected_parameters
from surgeon.analysis.eigensolvers import WHICH, EigResult, lanczos, power_iteration, _lanczos_basis, _tridiagonal_eigh
from surgeon.analysis.objective import Objective
from surgeon.analysis.options import SOLVERS, Solver  # noqa: F401  (SOLVERS: 0.1's name here)
from surgeon._compat import options_from


__all__ = ["TraceResult", "DensityResult", "SpectrumResult", "analysis_mode", "hutchinson", "hutchpp", "slq",
           "hessian_eigs", "hessian_trace", "hessian_density", "hessian_spectrum"]


@dataclass
class TraceResult(Tabular):
    """A stochastic trace estimate with its standard error and cost."""

    value: float
    stderr: float
    hvps: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def tidy(self) -> list[dict[str, Any]]:
        return quantity_rows({"method": self.method}, {"trace": self.value, "stderr": self.stderr})

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), title=f"Hessian trace ({self.method})")


def _rademacher(n: int, m: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (m, n), generator=g) * 2 - 1).to(device=device, dtype=dtype)


def hutchinson(op: HessianOperator, samples: int = 100, *, seed: int = 0) -> TraceResult:
    """tr(H) ~ mean of z^T H z over Rademacher z; standard error std / sqrt(samples)."""
    checks.args(samples=samples, seed=seed)
    z = _rademacher(op.n, samples, op.device, op.dtype, seed)
    est = np.array([float(torch.dot(zi, op(zi))) for zi in z])
    return TraceResult(float(est.mean()), float(est.std(ddof=1) / math.sqrt(samples)), op.calls, "hutchinson")


def hutchpp(op: HessianOperator, matvecs: int = 60, *, seed: int = 0) -> TraceResult:
    """Hutch++ (Meyer et al., 2021): with s = matvecs // 3, Q = orth(H S) for Rademacher S (n, s);
    tr(H) = tr(Q^T H Q) + mean_i g_i^T P H P g_i with P = I - Q Q^T and Rademacher g_i. The
    standard error is the second term's. Exact when rank(H) <= s."""
    checks.args(matvecs=matvecs, seed=seed)
    s = max(1, matvecs // 3)
    rand = _rademacher(op.n, 2 * s, op.device, op.dtype, seed)
    q, _ = torch.linalg.qr(torch.stack([op(v) for v in rand[:s]]).T)
    low = sum(float(torch.dot(qi, op(qi))) for qi in q.T)
    g = rand[s:]
    pg = g - (g @ q) @ q.T
    est = np.array([float(torch.dot(v, op(v))) for v in pg])  # g^T P H P g = (P g)^T H (P g)
    return TraceResult(low + float(est.mean()), float(est.std(ddof=1) / math.sqrt(s)) if s > 1 else float("nan"),
                       op.calls, "hutch++")


@dataclass
class DensityResult(Tabular):
    """Spectral density by stochastic Lanczos quadrature: `grid` and `density` (integrates to 1),
    and the quadrature `nodes` and `weights` per start vector."""

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    hvps: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per grid point: the eigenvalue and its density."""
        return [{"eigenvalue": float(x), "quantity": "density", "value": float(d)} for x, d in zip(self.grid, self.density)]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.figure_of(plots.plot_density(self))


def slq(op: HessianOperator, vectors: int = 3, steps: int = 30, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: for each Rademacher start vector, `steps` Lanczos steps;
    nodes = Ritz values, weights = squared first components of the Ritz vectors."""
    checks.args(vectors=vectors, steps=steps, seed=seed)
    steps = min(steps, op.n)
    nodes, weights = [], []
    for z in _rademacher(op.n, vectors, op.device, op.dtype, seed):
        _, alpha, beta, _ = _lanczos_basis(op, z / torch.linalg.vector_norm(z), steps)
        theta, s = _tridiagonal_eigh(alpha, beta)
        pad = steps - len(theta)  # an early invariant subspace: pad with zero weight
        nodes.append(np.pad(theta, (0, pad), constant_values=theta[-1]))
        weights.append(np.pad(s[0] ** 2, (0, pad)))
    return np.array(nodes), np.array(weights)


@contextmanager
def _operator(model: nn.Module, batch: Any, blocks: str | Sequence[str], objective: Objective,
              mode: str) -> Iterator[HessianOperator]:
    """The Hessian operator of `objective` on `batch` over the parameters of `blocks`, inside
    `analysis_mode` (the model restored on exit)."""
    params = selected_parameters(model, blocks)
    with analysis_mode(model):
        yield HessianOperator(model, batch, params, mode=mode, **objective.keywords())


def hessian_eigs(model: nn.Module, batch: Any, k: int = 5, which: str = "LM", blocks: str | Sequence[str] = "*", *,
                 solver: Solver | None = None, objective: Objective | None = None, seed: int = 0,
                 **old: Any) -> EigResult:
    """The k eigenvalues of the Hessian of `objective` (an `Objective`; default NLL alone) on
    `batch` = (images, labels) w.r.t. the parameters of `blocks`: ``which`` = ``LM`` (largest
    magnitude, the paper's top-5), ``LA`` (largest), ``SA`` (smallest: negative curvature), by
    `solver` (a `Solver`: Lanczos, or ``method="power"``, the paper's power iteration with
    deflation, ``LM`` only; its tolerance, iterations, eigenvectors, HVP mode). ``wd=``, ``l2=``,
    ``label_smoothing=``; ``method=``, ``tol=``, ``max_iter=``, ``vectors=``, ``mode=``:
    deprecated, build the `Objective`, the `Solver`."""
    objective = options_from(Objective, objective, old, function="hessian_eigs", keyword="objective", strict=False)
    solver = options_from(Solver, solver, old, function="hessian_eigs", keyword="solver")
    method, tol, max_iter, vectors, mode = astuple(solver)
    checks.args(k=k, seed=seed)
    if which not in WHICH:
        raise SurgeonError(f"unknown which={which!r}; use LM (largest magnitude), LA (largest) or SA (smallest)")
    if method == "power" and which != "LM":
        raise SurgeonError("power iteration finds the largest-magnitude eigenvalues only; use which='LM' or lanczos")
    if k < 1:
        raise SurgeonError(f"k={k} must be at least 1")
    with _operator(model, batch, blocks, objective, mode) as op:
        if k > op.n:
            raise SurgeonError(f"k={k} eigenvalues asked of a selection with only {op.n} parameters; lower k=")
        if method == "power":
            return power_iteration(op, k, tol=tol or 1e-3, max_iter=max_iter or 100, seed=seed, vectors=vectors)
        return lanczos(op, k, which, tol=tol or 1e-4, max_iter=max_iter, seed=seed, vectors=vectors)


def hessian_trace(model: nn.Module, batch: Any, blocks: str | Sequence[str] = "*", *, method: str = "hutch++",
                  matvecs: int = 60, objective: Objective | None = None, mode: str = "double-backward",
                  seed: int = 0, **old: Any) -> TraceResult:
    """tr(H) of `objective` (an `Objective`) by Hutch++ (default) or Hutchinson with `matvecs`
    Hessian-vector products. ``wd=``, ``l2=``, ``label_smoothing=``: deprecated, build the `Objective`."""
    objective = options_from(Objective, objective, old, function="hessian_trace", keyword="objective")
    checks.args(matvecs=matvecs, seed=seed)
    if method not in ("hutch++", "hutchinson"):
        raise SurgeonError(f"unknown trace method {method!r}; use hutch++ or hutchinson")
    if matvecs < (6 if method == "hutch++" else 2):
        raise SurgeonError(f"matvecs={matvecs} is too few for a standard error; use at least 6")
    with _operator(model, batch, blocks, objective, mode) as op:
        return hutchpp(op, matvecs, seed=seed) if method == "hutch++" else hutchinson(op, matvecs, seed=seed)


def hessian_density(model: nn.Module, batch: Any, blocks: str | Sequence[str] = "*", *, vectors: int = 3,
                    sigma: float | None = None, solver: Solver | None = None, objective: Objective | None = None,
                    seed: int = 0, **old: Any) -> DensityResult:
    """The eigenvalue density of the Hessian of `objective` (an `Objective`) by stochastic Lanczos
    quadrature (`vectors` start vectors, ``solver.max_iter`` Lanczos steps each, default 30, with
    ``solver.mode`` Hessian-vector products), smoothed with a Gaussian of width `sigma` (default 1%
    of the spectrum's span). ``wd=``, ``l2=``, ``label_smoothing=``; ``steps=``, ``mode=``:
    deprecated, build the `Objective`, the `Solver` (``steps`` is its ``max_iter``)."""
    objective = options_from(Objective, objective, old, function="hessian_density", keyword="objective", strict=False)
    solver = options_from(Solver, solver, old, function="hessian_density", keyword="solver",
                          renamed={"steps": "max_iter"})
    if solver.method != "lanczos" or solver.tol is not None or solver.vectors:
        raise SurgeonError("hessian_density runs a fixed number of Lanczos steps: give Solver(max_iter=, mode=) "
                           "only (no method, tol or vectors)")
    steps, mode = solver.max_iter or 30, solver.mode
    checks.args(vectors=vectors, steps=steps, seed=seed)
    checks.check_float("sigma", sigma, min=0.0, min_open=True)
    with _operator(model, batch, blocks, objective, mode) as op:
        nodes, weights = slq(op, vectors, steps, seed=seed)
        grid, dens, sigma = density_on_grid(nodes, weights, sigma=sigma)
        return DensityResult(grid, dens, nodes, weights, sigma, op.calls)


@dataclass
class SpectrumResult(Tabular):
    """Top-k eigenvalues per mini-batch (rows), pooled for the paper's max-eigenvalue spectrum."""

    model: str
    eigenvalues: np.ndarray
    residuals: np.ndarray
    losses: np.ndarray
    which: str
    hvps: int
    interrupted: bool = False

    @property
    def pooled(self) -> np.ndarray:
        return self.eigenvalues.reshape(-1)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
                "losses": self.losses.tolist(), "which": self.which, "hvps": self.hvps,
                "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x batch x quantity (each eigenvalue with its rank and residual, the loss)."""
        rows = []
        for b, (vals, res, loss) in enumerate(zip(self.eigenvalues, self.residuals, self.losses)):
            rows.append({"model": self.model, "batch": b, "rank": None, "quantity": "loss", "value": float(loss),
                         "residual": None})
            rows += [{"model": self.model, "batch": b, "rank": i, "quantity": "eigenvalue", "value": float(v),
                      "residual": float(r)} for i, (v, r) in enumerate(zip(vals, res))]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.figure_of(plots.plot_spectrum([self]))


def hessian_spectrum(model: nn.Module, data: Iterable[Any], k: int = 5, *, batches: int = 10, which: str = "LM",
                     blocks: str | Sequence[str] = "*", run: Run | None = None, **kwargs: Any) -> SpectrumResult:
    """Top-k eigenvalues of the Hessian on each of `batches` mini-batches of `data` (each batch
    frozen for its solve), as in the paper's Fig. 1c / Fig. 4; keyword arguments go to
    `hessian_eigs` (``objective=`` an `Objective`, ``solver=`` a `Solver`, ``seed=``). A
    non-finite loss stops the run with the batch's index; Ctrl-C returns the batches done
    (``interrupted=True``).

    `run` (a `surgeon.parallel.Run`): a progress bar; ``run.executor`` (`surgeon.executor`, e.g.
    ``surgeon.executor("ray")``): every batch is one task (the model shared once), the rows pooled
    here in batch order; a batch whose worker died on every attempt is left out with a warning
    naming it. ``progress=``, ``executor=``: deprecated, build the `Run`."""
    checks.args(k=k, batches=batches)
    if which not in WHICH:
        raise SurgeonError(f"unknown which={which!r}; use LM (largest magnitude), LA (largest) or SA (smallest)")
    check_classifier(model, data)
    for cls, keyword in ((Objective, "objective"), (Solver, "solver")):
        kwargs[keyword] = options_from(cls, kwargs.pop(keyword, None), kwargs, function="hessian_spectrum",
                                       keyword=keyword, strict=False)
    run = options_from(Run, run, kwargs, function="hessian_spectrum", keyword="run", strict=False).only(
        "hessian_spectrum", "progress", "executor")
    progress, executor = run.progress, run.executor
    rows, res, losses, hvps = [], [], [], 0

    def step(batch: Any) -> None:
        nonlocal hvps
        try:
            r = hessian_eigs(model, batch, k, which, blocks, **kwargs)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"batch {len(rows)}: {exc}") from None
        rows.append(r.eigenvalues)
        res.append(r.residuals)
        losses.append(r.loss)
        hvps += r.hvps

    loop = BatchLoop("the spectrum covers", limit=batches)
    with progress_bar(progress, batches, "hessian") as advance:
        if executor is not None and not executor.in_process:  # Ctrl-C: nothing pooled yet, so it propagates
            rows, res, losses, hvps = _spectrum_tasks(executor, model, data, batches, (k, which, blocks, kwargs),
                                                      advance)
        else:
            loop.run(data, step, advance=advance)
    if not rows:
        raise SurgeonError("the data yielded no batches; check data=")
    interrupted, name = loop.interrupted, display_name(model)
    return SpectrumResult(name, np.array(rows), np.array(res), np.array(losses), which, hvps, interrupted)


def _spectrum_task(model: nn.Module, batch: Any, k: int, which: str, blocks: Any,
                   kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """One batch's solve as a task: (eigenvalues, residuals, loss, hvps), or ("nonfinite", why)."""
    try:
        r = hessian_eigs(model, batch, k, which, blocks, **kwargs)
    except NonFiniteLoss as exc:
        return ("nonfinite", str(exc))
    return r.eigenvalues, r.residuals, r.loss, r.hvps


def _spectrum_tasks(ex: Executor, model: nn.Module, data: Iterable[Any], batches: int, solve: tuple[Any, ...],
                    advance: Callable[[], None]) -> tuple[list, list, list, int]:
    """The first `batches` batches as tasks on `ex`, each solved with `solve` = (k, which, blocks,
    keywords of `hessian_eigs`); rows in batch order, failed batches named."""
    frozen = [b for b, _ in zip(data, range(batches))]
    done: dict[int, tuple[Any, ...]] = {}
    failed: dict[int, str] = {}
    with ex:
        for i, out in fan_out(ex, _spectrum_task, (model,), [(b, *solve) for b in frozen]):
            if not out.ok:
                failed[i] = out.failed
            elif isinstance(out.value[0], str):  # ("nonfinite", why)
                raise NonFiniteLoss(f"batch {i}: {out.value[1]}")
            else:
                done[i] = out.value
            advance()
    if failed:
        warnings.warn(f"{len(failed)} batch(es) left out, their tasks failed: "
                      + "; ".join(f"batch {i}: {why}" for i, why in sorted(failed.items())[:3]), stacklevel=3)
    order = sorted(done)
    return ([done[i][0] for i in order], [done[i][1] for i in order], [done[i][2] for i in order],
            sum(done[i][3] for i in order))
