"""Eigen-solvers for a `HessianOperator`: `lanczos` and `power_iteration`, returning `EigResult`
(eigenvalues with their Ritz residuals ||Hv - lambda v|| / |lambda|).

Eigenvalues: Lanczos with full reorthogonalisation and Ritz-residual convergence; the paper's power
iteration with deflation for comparison (``method="power"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import eigh_tridiagonal
import torch

from surgeon.core import checks
from surgeon.core.tables import Tabular, quantity_rows
from surgeon.analysis.hessian import HessianOperator

__all__ = ["EigResult", "lanczos", "power_iteration"]


WHICH = ("LM", "LA", "SA")
KEEP_PRODUCTS_BYTES = 2 * 2**30  # Lanczos keeps its products H q_j (for the residuals) when they fit in this
DOT_CHUNK = 2**16  # entries summed in float32 before the float64 sum (`_dot`)


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


def _dot(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``a @ w`` over the last dim (rows of `a`, or one vector), in float64: float32 products
    summed in float32 over chunks of `DOT_CHUNK` entries, the chunks' sums added in float64. A
    float32 sum over millions of entries (BLAS keeps a few running sums) loses digits the Lanczos
    recurrence needs; a chunk of 2^16 loses about what a float32 product already has, and the
    vectors stay float32 (half the memory traffic of a float64 basis). Float64 input: one matmul."""
    if a.dtype == torch.float64:
        return a @ w.double()
    n = w.numel()
    out = torch.zeros(a.shape[:-1], device=w.device, dtype=torch.float64)
    for s in range(0, n, DOT_CHUNK):
        out += (a[..., s:s + DOT_CHUNK] @ w[s:s + DOT_CHUNK]).double()
    return out


def _lanczos_basis(op: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor, steps: int,
                   stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
                   products: torch.Tensor | None = None, share: dict[str, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, float]:
    """Lanczos with full reorthogonalisation from unit `q`: returns the basis Q (j, n), the
    tridiagonal's alpha (j,) and beta (j - 1,), and the last beta. With `products` (steps, n),
    row j keeps H q_j as computed, so that H (Q^T s) = W^T s needs no further product.

    Each step takes w = H q_j, applies the three-term recurrence (alpha_j = q_j . w), then removes
    what is left along the whole basis by classical Gram-Schmidt, w -= Q^T (Q w), a second time
    only when that removed most of w (the DGKS criterion, ||w'|| < ||w|| / sqrt(2)).
    `stop(alpha, beta, beta_next)` is asked after every step. Vectors are in `q`'s dtype (the
    operator's); every sum over the n entries (alpha, the Gram-Schmidt coefficients, the norms)
    is accumulated in float64 (`_dot`)."""
    basis = torch.empty(steps, q.numel(), device=q.device, dtype=q.dtype)
    basis[0] = q
    if share is not None:
        share["Q"] = basis  # `stop` may read the rows filled so far
    alpha, beta = [], []
    for j in range(steps):
        w = op(basis[j]).to(q.dtype)
        if products is not None:
            products[j] = w
        a = float(_dot(basis[j], w))
        w = torch.sub(w, basis[j], alpha=a)  # a new tensor: the operator's output (kept in `products`) stays
        if j:
            w.sub_(basis[j - 1], alpha=beta[-1])
        before = math.sqrt(max(float(_dot(w, w)), 0.0))
        for _ in range(2):
            coef = _dot(basis[: j + 1], w).to(q.dtype)
            w = torch.addmv(w, basis[: j + 1].T, coef, alpha=-1)
            b = math.sqrt(max(float(_dot(w, w)), 0.0))
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
    wanted Ritz pair's residual estimate ``beta_j |s_i[-1]|`` is at most ``tol * |theta_i|``
    and, where the products are kept (the rows of W = H q_j beside the basis, while both fit in
    `KEEP_PRODUCTS_BYTES`), its explicit residual ``||H v - theta v|| / |theta|`` (H Q^T s =
    W^T s: no further product) is too. The basis and products are in the parameters' dtype; the
    recurrence's sums over millions of entries (alpha_j = q_j . H q_j, the Gram-Schmidt
    coefficients, the norms) accumulate in float64 (`_dot`: plain float32 sums left a ViT-Ti's
    top pair at a 3.8e-4 residual whatever the steps; ARPACK, in float64, reached 6e-6 on the
    same products). Without kept products the reported residuals take k more products. The basis
    is kept on the parameters' device: `max_iter` (default max(2k + 40, 8k)) vectors of the
    selection's size."""
    checks.args(k=k, tol=tol, max_iter=max_iter, seed=seed)
    steps = min(op.n, max_iter or max(2 * k + 40, 8 * k))
    state: dict[str, Any] = {"converged": False}

    keep = steps * op.n * torch.finfo(op.dtype).bits // 8 <= KEEP_PRODUCTS_BYTES
    products = torch.empty(steps, op.n, device=op.device, dtype=op.dtype) if keep else None
    basis_of: dict[str, torch.Tensor] = {}

    def converged(alpha: np.ndarray, beta: np.ndarray, b_next: float) -> bool:
        if len(alpha) < k:
            return False
        theta, s = _tridiagonal_eigh(alpha, beta)
        idx = _wanted(theta, k, which)
        est = np.abs(b_next * s[-1, idx])
        state["converged"] = bool(np.all(est <= tol * np.maximum(np.abs(theta[idx]), 1e-30)))
        if state["converged"] and products is not None:  # the estimate holds in exact arithmetic: check the truth
            state["steps"], state["ritz"] = len(alpha), _ritz(basis_of["Q"][: len(alpha)], products[: len(alpha)], theta, s, idx)
            state["converged"] = bool(np.all(state["ritz"][2] <= tol))
        return state["converged"]

    start = _start_vector(op.n, op.device, op.dtype, seed)
    basis, alpha, beta, _ = _lanczos_basis(op, start, steps, converged, products, basis_of)
    if state.get("steps") == len(alpha):  # the check after the last step computed them
        values, vecs, res = state["ritz"]
    else:
        theta, s = _tridiagonal_eigh(alpha, beta)
        idx = _wanted(theta, k, which)
        values, vecs, res = _ritz(basis, None if products is None else products[: len(alpha)], theta, s, idx)
    vecs = vecs.to(op.dtype)
    if res is None:
        res = _residuals(op, vecs, values)
    exhausted = len(alpha) == op.n  # the Krylov space is the whole space: exact
    if not (state["converged"] or exhausted):
        warnings.warn(f"Lanczos stopped after {len(alpha)} steps before every wanted pair reached tol={tol:g}; "
                      f"largest residual {res.max():.2e} (raise Solver(max_iter=...))", stacklevel=3)
    return EigResult(values, res, op.calls, len(alpha), "lanczos", which, state["converged"] or exhausted, op.loss,
                     vecs if vectors else None)


def _ritz(basis: torch.Tensor, products: torch.Tensor | None, theta: np.ndarray, s: np.ndarray, idx: np.ndarray
          ) -> tuple[np.ndarray, torch.Tensor, np.ndarray | None]:
    """The wanted Ritz pairs (values theta_i, unit vectors v_i = Q^T s_i / ||Q^T s_i||) and, given
    the products W (rows H q_j), their explicit residuals ||H v_i - theta_i v_i|| / |theta_i| with
    H v_i = W^T s_i / ||Q^T s_i||: no further product."""
    coef = torch.as_tensor(s[:, idx].T.copy(), device=basis.device, dtype=basis.dtype)
    vecs = coef @ basis
    norms = torch.linalg.vector_norm(vecs, dim=1, keepdim=True)
    vecs = vecs / norms
    values = theta[idx]
    res = None if products is None else _residuals_of(vecs, (coef.to(products.dtype) @ products) / norms, values)
    return values, vecs, res


def _residuals(op: HessianOperator, vecs: torch.Tensor, values: np.ndarray) -> np.ndarray:
    """||H v - lambda v|| / |lambda| for unit rows v of `vecs`, one product each."""
    return _residuals_of(vecs, torch.stack([op(v) for v in vecs]), values)


def _residuals_of(vecs: torch.Tensor, hvs: torch.Tensor, values: np.ndarray) -> np.ndarray:
    """||H v - lambda v|| / |lambda| per row, given the rows of H v."""
    lam = torch.as_tensor(values, device=vecs.device, dtype=torch.float64)
    r = torch.linalg.vector_norm(hvs.double() - lam[:, None] * vecs.double(), dim=1)
    return (r.double().cpu().numpy() / np.maximum(np.abs(values), 1e-30))


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
