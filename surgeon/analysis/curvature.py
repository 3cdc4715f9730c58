"""Curvature of the training objective: Hessian eigenvalues (paper Fig. 1c, Fig. 4), trace,
spectral density, and spectra pooled over a dataset.

    eig = surgeon.hessian_eigs(model, (x, y), k=5, which="LM", blocks="*")
    eig.eigenvalues, eig.residuals        # ||Hv - lambda v|| / |lambda| for every pair
    tr = surgeon.hessian_trace(model, (x, y))          # Hutch++ with a standard error
    spec = surgeon.hessian_spectrum(model, loader, k=5, batches=20)   # the paper's max-eigenvalue spectrum

The objective on one mini-batch is NLL (hard labels, label smoothing, or the soft targets of
Mixup / CutMix) plus an L2 term over the analysed parameters: ``wd / 2 * ||theta||^2`` (standard,
``l2="standard"``) or the paper's ``wd * sum_p ||theta_p||`` (``l2="paper"``). The batch is fixed
for one eigen-solve. The model is analysed in eval mode (BatchNorm statistics, no dropout or
stochastic depth) with fused attention kernels off (math SDPA, timm's ``fused_attn`` False), and
everything is restored afterwards, also on error: parameters are never written, only read through
``torch.func.functional_call``.

Hessian-vector products: double backward through a gradient graph built once per batch
(``mode="double-backward"``, the default: each product is one backward pass) or torch.func
forward-over-reverse (``mode="forward-over-reverse"``: ``jvp(grad(f))``, no retained graph; it
falls back to double backward, with a warning, where an op lacks a forward-mode derivative).
Eigenvalues: Lanczos with full reorthogonalisation and Ritz-residual convergence; the paper's power
iteration with deflation for comparison (``method="power"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import eigh_tridiagonal
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from surgeon.core import checks
from surgeon.parallel import distributed
from surgeon.core.numerics import density_on_grid
from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.outputs import logits_of
from surgeon.parallel.executors import Executor
from surgeon.blockgraph import graph
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import BatchLoop, analysis_mode, check_batch_labels, check_classifier, display_name
from surgeon.core.tables import Tabular, quantity_rows

__all__ = ["NonFiniteLoss", "HessianOperator", "EigResult", "TraceResult", "DensityResult", "SpectrumResult", "analysis_mode",
           "selected_parameters", "objective", "lanczos", "power_iteration", "hutchinson", "hutchpp", "slq",
           "hessian_eigs", "hessian_trace", "hessian_density", "hessian_spectrum"]

WHICH = ("LM", "LA", "SA")
SOLVERS = ("lanczos", "power")  # the eigen-solvers of `hessian_eigs`
L2_TERMS = ("standard", "paper")  # the L2 terms of `objective`
MODES = ("double-backward", "forward-over-reverse")


# ----------------------------------------------------------------------------------------------
# The objective and the analysed parameters


def objective(logits: torch.Tensor, target: torch.Tensor, params: dict[str, torch.Tensor], *, wd: float = 0.0,
              l2: str = "standard", label_smoothing: float = 0.0) -> torch.Tensor:
    """NLL + L2 on one batch. `target`: class indices (B,) or soft targets (B, K) (Mixup /
    CutMix); L2 over `params`: ``wd / 2 * sum ||p||^2`` (``standard``) or ``wd * sum ||p||``
    (``paper``)."""
    if target.dim() == 2:
        nll = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    else:
        nll = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if not wd:
        return nll
    if l2 == "standard":
        return nll + wd / 2 * sum(p.square().sum() for p in params.values())
    if l2 == "paper":
        return nll + wd * sum(torch.linalg.vector_norm(p) for p in params.values())
    raise SurgeonError(f"unknown l2 {l2!r}; use 'standard' (wd/2 ||theta||^2) or 'paper' (wd sum ||theta_p||)")


def selected_parameters(model: nn.Module, blocks: str | Sequence[str] = "*") -> dict[str, torch.Tensor]:
    """The trainable parameters of the blocks `blocks` selects (all of them for ``*``)."""
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if blocks not in ("*", "all"):
        chosen = graph(model).select(blocks)
        prefixes = tuple(m + "." for b in chosen for m in b.members)
        named = {k: p for k, p in named.items() if k.startswith(prefixes)}
        what = f"blocks {blocks!r}"
    else:
        what = "the model"
    if not named:
        raise SurgeonError(f"{what} has no trainable parameters; select blocks with weights, e.g. blocks=c4.b-1")
    return named


class NonFiniteLoss(SurgeonError):
    """The objective is NaN or infinite on a batch."""



def _shard(batch: Any) -> tuple[Any, float]:
    """This rank's rows of a (images, labels) batch and its weight n_r / N (the batch and 1.0
    outside torchrun); labels are checked on the whole batch first, so every rank agrees."""
    if not distributed.active() or not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        return batch, 1.0
    x, y = batch[0], batch[1]
    if y.dim() == 1 and bool((y < 0).any()):
        _batch(batch, y.device)  # the same refusal on every rank
    rows = distributed.shard_rows(x.shape[0])
    return (x[rows], y[rows]), (rows.stop - rows.start) / x.shape[0]


def _batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise SurgeonError("curvature needs labelled batches (images, labels); e.g. data=digits or an ImageFolder")
    x, y = batch[0], batch[1]
    if y.dim() == 1 and bool((y < 0).any()):
        raise SurgeonError("these images have no labels (label -1), and the loss needs them; use labelled data "
                           "such as data=digits, cifar10:ROOT or an ImageFolder tree")
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------
# Hessian-vector products


class HessianOperator:
    """``v -> H v`` for the objective on one fixed batch, over flat vectors of the selected
    parameters (in their order and dtype). Use inside `analysis_mode`.

    Attributes: ``n`` (number of parameters), ``loss`` (the objective's value, a float),
    ``calls`` (products so far), ``mode``.
    """

    def __init__(self, model: nn.Module, batch: Any, params: dict[str, torch.Tensor], *, wd: float = 0.0,
                 l2: str = "standard", label_smoothing: float = 0.0, mode: str = "double-backward"):
        if mode not in MODES:
            raise SurgeonError(f"unknown HVP mode {mode!r}; use {' or '.join(MODES)}")
        self.model, self.mode, self.calls = model, mode, 0
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.n = sum(self.sizes)
        first = next(iter(params.values()))
        self.device, self.dtype = first.device, first.dtype
        batch, self.share = _shard(batch)  # under torchrun: this rank's rows, weight n_r / N
        self.x, self.y = _batch(batch, self.device)
        self.p0 = {k: p.detach() for k, p in params.items()}
        self.rest = {k: t.detach() for k, t in (*model.named_parameters(), *model.named_buffers()) if k not in params}
        self._loss_kwargs = {"wd": wd, "l2": l2, "label_smoothing": label_smoothing}
        check_classifier(model)
        with torch.no_grad():
            check_batch_labels(logits_of(functional_call(model, {**self.rest, **self.p0}, (self.x[:1],))), self.y)
        if mode == "double-backward":
            value = self._gradient_graph()
        else:
            with torch.no_grad():
                value = self._f(self.p0)
            self._check(value)
        self.loss = self._value

    def _gradient_graph(self) -> torch.Tensor:
        """Build the gradient with its graph once; every product is then one backward through it."""
        leaves = {k: p.clone().requires_grad_() for k, p in self.p0.items()}
        with torch.enable_grad():
            value = self._f(leaves)
            self._check(value)
            self._grads = torch.autograd.grad(value, list(leaves.values()), create_graph=True)
        self._leaves = list(leaves.values())
        return value

    def _f(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = logits_of(functional_call(self.model, {**self.rest, **p}, (self.x,)))
        return objective(logits, self.y, p, **self._loss_kwargs)

    def _check(self, value: torch.Tensor) -> None:
        """Refuse a non-finite objective (of the whole batch: every rank decides alike)."""
        self._value = float(distributed.reduce_(value.detach().clone().double(), self.share))
        if not math.isfinite(self._value):
            raise NonFiniteLoss(f"the loss is {self._value} on this batch; check the weights and the data")

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(s) for k, t, s in zip(self.names, v.split(self.sizes), self.shapes)}

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """H v; under torchrun ``sum_r (n_r / N) H_r v`` over the ranks' shards (the whole batch's)."""
        return distributed.reduce_(self._product(v), self.share)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.mode == "double-backward":
            hv = torch.autograd.grad(self._grads, self._leaves, grad_outputs=list(self.unflatten(v).values()),
                                     retain_graph=True)
            return torch.cat([t.reshape(-1) for t in hv])
        try:
            _, hv = jvp(grad(self._f), (self.p0,), (self.unflatten(v),))
        except (NotImplementedError, RuntimeError) as exc:  # an op without a forward-mode derivative
            warnings.warn(f"forward-over-reverse failed ({first_line(exc)}); using double backward", stacklevel=2)
            self.mode = "double-backward"
            self._gradient_graph()
            self.calls -= 1
            return self._product(v)
        return torch.cat([hv[k].reshape(-1) for k in self.names])


# ----------------------------------------------------------------------------------------------
# Eigenvalues


@dataclass
class EigResult(Tabular):
    """Eigenpairs of a Hessian: `eigenvalues` in the order asked for (``LM``: by decreasing
    magnitude; ``LA``: decreasing; ``SA``: increasing), relative `residuals`
    ||Hv - lambda v|| / |lambda|, the number of Hessian-vector products `hvps` (the residual
    checks included), `iterations`, and the eigenvectors (flat, on the device) unless dropped."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    hvps: int
    iterations: int
    method: str
    which: str
    converged: bool
    loss: float = float("nan")
    eigenvectors: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(), "hvps": self.hvps,
                "loss": self.loss,
                "iterations": self.iterations, "method": self.method, "which": self.which,
                "converged": self.converged}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: eigenvalue index x (eigenvalue, residual)."""
        return [row for i, (lam, res) in enumerate(zip(self.eigenvalues, self.residuals))
                for row in quantity_rows({"index": i, "which": self.which}, {"eigenvalue": lam, "residual": res})]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), title=f"Hessian eigenvalues ({self.which})")


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted Ritz values, in the order they are reported."""
    if which == "LM":
        return np.argsort(-np.abs(theta), kind="stable")[:k]
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    return np.argsort(theta, kind="stable")[:k]


def _start_vector(n: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=dtype).to(device)
    return v / torch.linalg.vector_norm(v)


def _lanczos_basis(op: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor, steps: int,
                   stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None
                   ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, float]:
    """Lanczos with full reorthogonalisation from unit `q`: returns the basis Q (j, n), the
    tridiagonal's alpha (j,) and beta (j - 1,), and the last beta.

    Each step takes w = H q_j, applies the three-term recurrence (alpha_j = q_j . w), then removes
    what is left along the whole basis by classical Gram-Schmidt, w -= Q^T (Q w), a second time
    only when that removed most of w (the DGKS criterion, ||w'|| < ||w|| / sqrt(2)).
    `stop(alpha, beta, beta_next)` is asked after every step."""
    basis = torch.empty(steps, q.numel(), device=q.device, dtype=q.dtype)
    basis[0] = q
    alpha, beta = [], []
    for j in range(steps):
        w = op(basis[j])
        a = float(torch.dot(basis[j], w))
        w.sub_(basis[j], alpha=a)
        if j:
            w.sub_(basis[j - 1], alpha=beta[-1])
        before = float(torch.linalg.vector_norm(w))
        for _ in range(2):
            w = torch.addmv(w, basis[: j + 1].T, basis[: j + 1] @ w, alpha=-1)
            b = float(torch.linalg.vector_norm(w))
            if b > before / math.sqrt(2):
                break
            before = b
        alpha.append(a)
        done = stop is not None and stop(np.array(alpha), np.array(beta), b)
        if done or b <= 1e-10 * max(max(map(abs, alpha)), 1e-30):  # or the Krylov space stopped growing
            return basis[: j + 1], np.array(alpha), np.array(beta), b
        if j + 1 < steps:
            beta.append(b)
            torch.div(w, b, out=basis[j + 1])
    return basis, np.array(alpha), np.array(beta[: steps - 1]), b


def _tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal (alpha, beta), by LAPACK's
    tridiagonal solver (scipy), without forming the dense matrix."""
    return eigh_tridiagonal(alpha, beta)


def lanczos(op: HessianOperator, k: int = 5, which: str = "LM", *, tol: float = 1e-4, max_iter: int | None = None,
            seed: int = 0, vectors: bool = True) -> EigResult:
    """The k wanted eigenpairs by Lanczos with full reorthogonalisation, stopped when every
    wanted Ritz pair's residual estimate ``beta_j |s_i[-1]|`` is at most ``tol * |theta_i|``;
    the reported residuals are then computed explicitly (k more products). The basis is kept on
    the parameters' device: `max_iter` (default max(2k + 40, 8k)) vectors of the selection's size."""
    checks.args(k=k, tol=tol, max_iter=max_iter, seed=seed)
    steps = min(op.n, max_iter or max(2 * k + 40, 8 * k))
    state: dict[str, Any] = {"converged": False}

    def converged(alpha: np.ndarray, beta: np.ndarray, b_next: float) -> bool:
        if len(alpha) < k:
            return False
        theta, s = _tridiagonal_eigh(alpha, beta)
        idx = _wanted(theta, k, which)
        est = np.abs(b_next * s[-1, idx])
        state["converged"] = bool(np.all(est <= tol * np.maximum(np.abs(theta[idx]), 1e-30)))
        return state["converged"]

    basis, alpha, beta, _ = _lanczos_basis(op, _start_vector(op.n, op.device, op.dtype, seed), steps, converged)
    theta, s = _tridiagonal_eigh(alpha, beta)
    idx = _wanted(theta, k, which)
    vecs = torch.as_tensor(s[:, idx].T.copy(), device=basis.device, dtype=basis.dtype) @ basis
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=1, keepdim=True)
    values = theta[idx]
    res = _residuals(op, vecs, values)
    exhausted = len(alpha) == op.n  # the Krylov space is the whole space: exact
    if not (state["converged"] or exhausted):
        warnings.warn(f"Lanczos stopped after {len(alpha)} steps before every wanted pair reached tol={tol:g}; "
                      f"largest residual {res.max():.2e} (raise max_iter)", stacklevel=3)
    return EigResult(values, res, op.calls, len(alpha), "lanczos", which, state["converged"] or exhausted, op.loss,
                     vecs if vectors else None)


def _residuals(op: HessianOperator, vecs: torch.Tensor, values: np.ndarray) -> np.ndarray:
    out = []
    for v, lam in zip(vecs, values):
        r = op(v) - float(lam) * v
        out.append(float(torch.linalg.vector_norm(r)) / max(abs(float(lam)), 1e-30))
    return np.array(out)


def power_iteration(op: HessianOperator, k: int = 5, *, tol: float = 1e-3, max_iter: int = 100, seed: int = 0,
                    vectors: bool = True) -> EigResult:
    """The paper's (and PyHessian's) method: for each of k eigenvalues, power iteration on the
    Hessian with the eigenvectors found so far projected out, until the Rayleigh quotient's
    relative change is below `tol`. Finds eigenvalues of largest magnitude."""
    checks.args(k=k, tol=tol, max_iter=max_iter, seed=seed)
    found: list[torch.Tensor] = []
    values: list[float] = []
    iters = 0
    converged = True
    for i in range(k):
        v = _start_vector(op.n, op.device, op.dtype, seed + i)
        lam = None
        for _ in range(max_iter):
            iters += 1
            for u in found:
                v = v - torch.dot(u, v) * u
            v = v / torch.linalg.vector_norm(v)
            hv = op(v)
            new = float(torch.dot(v, hv))
            v = hv
            if lam is not None and abs(new - lam) <= tol * (abs(lam) + 1e-6):
                lam = new
                break
            lam = new
        else:
            converged = False
        for u in found:
            v = v - torch.dot(u, v) * u
        found.append(v / torch.linalg.vector_norm(v))
        values.append(lam)
    vecs = torch.stack(found)
    vals = np.array(values)
    return EigResult(vals, _residuals(op, vecs, vals), op.calls, iters, "power", "LM", converged, op.loss,
                     vecs if vectors else None)


# ----------------------------------------------------------------------------------------------
# Trace and density


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


# ----------------------------------------------------------------------------------------------
# Public entry points


@contextmanager
def _operator(model: nn.Module, batch: Any, blocks: str | Sequence[str], **kwargs: Any) -> Iterator[HessianOperator]:
    params = selected_parameters(model, blocks)
    with analysis_mode(model):
        yield HessianOperator(model, batch, params, **kwargs)


def hessian_eigs(model: nn.Module, batch: Any, k: int = 5, which: str = "LM", blocks: str | Sequence[str] = "*", *,
                 method: str = "lanczos", tol: float | None = None, max_iter: int | None = None, wd: float = 0.0,
                 l2: str = "standard", label_smoothing: float = 0.0, mode: str = "double-backward", seed: int = 0,
                 vectors: bool = False) -> EigResult:
    """The k eigenvalues of the Hessian of NLL + L2 on `batch` = (images, labels) w.r.t. the
    parameters of `blocks`: ``which`` = ``LM`` (largest magnitude, the paper's top-5), ``LA``
    (largest), ``SA`` (smallest: negative curvature). ``method="power"`` is the paper's power
    iteration with deflation (``LM`` only)."""
    checks.args(k=k, tol=tol, max_iter=max_iter, wd=wd, label_smoothing=label_smoothing, seed=seed)
    if which not in WHICH:
        raise SurgeonError(f"unknown which={which!r}; use LM (largest magnitude), LA (largest) or SA (smallest)")
    if method not in SOLVERS:
        raise SurgeonError(f"unknown method {method!r}; use lanczos or power")
    if method == "power" and which != "LM":
        raise SurgeonError("power iteration finds the largest-magnitude eigenvalues only; use which='LM' or lanczos")
    if k < 1:
        raise SurgeonError(f"k={k} must be at least 1")
    with _operator(model, batch, blocks, wd=wd, l2=l2, label_smoothing=label_smoothing, mode=mode) as op:
        if k > op.n:
            raise SurgeonError(f"k={k} eigenvalues asked of a selection with only {op.n} parameters; lower k=")
        if method == "power":
            return power_iteration(op, k, tol=tol or 1e-3, max_iter=max_iter or 100, seed=seed, vectors=vectors)
        return lanczos(op, k, which, tol=tol or 1e-4, max_iter=max_iter, seed=seed, vectors=vectors)


def hessian_trace(model: nn.Module, batch: Any, blocks: str | Sequence[str] = "*", *, method: str = "hutch++",
                  matvecs: int = 60, wd: float = 0.0, l2: str = "standard", label_smoothing: float = 0.0,
                  mode: str = "double-backward", seed: int = 0) -> TraceResult:
    """tr(H) by Hutch++ (default) or Hutchinson with `matvecs` Hessian-vector products."""
    checks.args(matvecs=matvecs, wd=wd, label_smoothing=label_smoothing, seed=seed)
    if method not in ("hutch++", "hutchinson"):
        raise SurgeonError(f"unknown trace method {method!r}; use hutch++ or hutchinson")
    if matvecs < (6 if method == "hutch++" else 2):
        raise SurgeonError(f"matvecs={matvecs} is too few for a standard error; use at least 6")
    with _operator(model, batch, blocks, wd=wd, l2=l2, label_smoothing=label_smoothing, mode=mode) as op:
        return hutchpp(op, matvecs, seed=seed) if method == "hutch++" else hutchinson(op, matvecs, seed=seed)


def hessian_density(model: nn.Module, batch: Any, blocks: str | Sequence[str] = "*", *, vectors: int = 3,
                    steps: int = 30, sigma: float | None = None, wd: float = 0.0, l2: str = "standard",
                    label_smoothing: float = 0.0, mode: str = "double-backward", seed: int = 0) -> DensityResult:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (`vectors` start
    vectors, `steps` Lanczos steps each), smoothed with a Gaussian of width `sigma` (default 1%
    of the spectrum's span)."""
    checks.args(vectors=vectors, steps=steps, wd=wd, label_smoothing=label_smoothing, seed=seed)
    checks.check_float("sigma", sigma, min=0.0, min_open=True)
    with _operator(model, batch, blocks, wd=wd, l2=l2, label_smoothing=label_smoothing, mode=mode) as op:
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
                     blocks: str | Sequence[str] = "*", progress: bool = False, executor: Executor | None = None,
                     **kwargs: Any) -> SpectrumResult:
    """Top-k eigenvalues of the Hessian on each of `batches` mini-batches of `data` (each batch
    frozen for its solve), as in the paper's Fig. 1c / Fig. 4; keyword arguments go to
    `hessian_eigs`. A non-finite loss stops the run with the batch's index; Ctrl-C returns the
    batches done (``interrupted=True``).

    `executor` (`surgeon.executor`, e.g. ``surgeon.executor("ray")``): every batch is one task
    (the model shared once), the rows pooled here in batch order; a batch whose worker died on
    every attempt is left out with a warning naming it."""
    checks.args(k=k, batches=batches)
    if which not in WHICH:
        raise SurgeonError(f"unknown which={which!r}; use LM (largest magnitude), LA (largest) or SA (smallest)")
    check_classifier(model, data)
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
            rows, res, losses, hvps = _spectrum_tasks(executor, model, data, k, batches, which, blocks, kwargs,
                                                      advance)
        else:
            loop.run(data, step, advance=advance)
    if not rows:
        raise SurgeonError("the data yielded no batches; check data=")
    interrupted, name = loop.interrupted, display_name(model)
    return SpectrumResult(name, np.array(rows), np.array(res), np.array(losses), which, hvps, interrupted)


def _spectrum_task(model: nn.Module, batch: Any, k: int, which: str, blocks: Any, kwargs: dict[str, Any],
                   threads: int) -> tuple[Any, ...]:
    """One batch's solve as a task: (eigenvalues, residuals, loss, hvps), or ("nonfinite", why)."""
    torch.set_num_threads(threads)
    try:
        r = hessian_eigs(model, batch, k, which, blocks, **kwargs)
    except NonFiniteLoss as exc:
        return ("nonfinite", str(exc))
    return r.eigenvalues, r.residuals, r.loss, r.hvps


def _spectrum_tasks(ex: Executor, model: nn.Module, data: Iterable[Any], k: int, batches: int, which: str,
                    blocks: Any, kwargs: dict[str, Any], advance: Callable[[], None]) -> tuple[list, list, list, int]:
    """The first `batches` batches as tasks on `ex`; rows in batch order, failed batches named."""
    frozen = [b for b, _ in zip(data, range(batches))]
    done: dict[int, tuple[Any, ...]] = {}
    failed: dict[int, str] = {}
    threads = max(1, int(getattr(ex, "job_cpus", 1) or 1))
    with ex:
        shared = ex.put(model)
        for i, out in ex.map(_spectrum_task, [(shared, b, k, which, blocks, kwargs, threads) for b in frozen]):
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
