"""Options objects of the curvature and landscape measurements, beside `Objective` (the measured
loss, `surgeon.analysis.objective`):

    surgeon.hessian_eigs(model, (x, y), k=5, solver=Solver(tol=1e-6, vectors=True))
    surgeon.hessian_density(model, (x, y), solver=Solver(max_iter=50))       # 50 Lanczos steps
    surgeon.landscape(model, loader, lattice=Lattice(grid=11, span=0.5))

`Solver`: how the eigen-solver runs (method, tolerance, iterations, eigenvectors, the
Hessian-vector product mode). `Lattice`: where the landscape is evaluated (directions, points,
span, normalisation). Each is frozen and checks its ranges on construction with
`surgeon.core.checks.ARGS`, the table the CLI's options use. The keywords of 0.1 (``tol=``,
``max_iter=``, ``method=``, ``vectors=``, ``mode=``, ``steps=``; ``dims=``, ``grid=``,
``span=``, ``norm=``) still work for one release, with a `SurgeonDeprecationWarning`
(`surgeon._compat.options_from`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from surgeon.analysis.hessian import MODES
from surgeon.core import checks
from surgeon.core.errors import SurgeonError

__all__ = ["SOLVERS", "NORMS", "Solver", "Lattice"]

SOLVERS = ("lanczos", "power")  # the eigen-solvers of `hessian_eigs`
NORMS = ("filter", "dim0")  # direction normalisations of `surgeon.analysis.landscapes.directions`


@dataclass(frozen=True)
class Solver:
    """How the Hessian's eigen-solver runs:

    - ``method``: ``lanczos`` (the default) or ``power`` (the paper's power iteration with
      deflation; largest magnitude only).
    - ``tol``: relative residual ||Hv - lambda v|| / |lambda| to stop at, in (0, 1); None: 1e-4
      (Lanczos) or 1e-3 (power).
    - ``max_iter``: iterations (Lanczos steps, power iterations), in [1, 100000]; None: the
      solver's default (`hessian_density`: 30 Lanczos steps per start vector).
    - ``vectors``: also return the eigenvectors (bool).
    - ``mode``: how a Hessian-vector product is computed: ``double-backward`` (the default) or
      ``forward-over-reverse`` (`surgeon.analysis.hessian`).

    Checked on construction (ranges of `surgeon.core.checks.ARGS`)."""

    method: str = "lanczos"
    tol: float | None = None
    max_iter: int | None = None
    vectors: bool = False
    mode: str = "double-backward"

    def __post_init__(self) -> None:
        if self.method not in SOLVERS:
            raise SurgeonError(f"unknown method {self.method!r}; use lanczos or power")
        checks.args(tol=self.tol, max_iter=self.max_iter)
        checks.flag("vectors", self.vectors, "return the eigenvectors")
        if self.mode not in MODES:
            raise SurgeonError(f"unknown HVP mode {self.mode!r}; use {' or '.join(MODES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Lattice:
    """Where a loss landscape is evaluated: a `grid` x ... x `grid` lattice (`dims` axes) over
    [-span, span] along random directions.

    - ``dims``: 1 (a profile) or 2 (a surface, the default).
    - ``grid``: points per axis, in [2, 1001]; default 21 (the paper's 21 x 21).
    - ``span``: the lattice covers [-span, span] along each direction, > 0; default 1.
    - ``norm``: how each direction is scaled to the weights: ``filter`` (the default, Li et al.
      2018: per output filter) or ``dim0`` (the paper's code: norms along dim 0)
      (`surgeon.analysis.landscapes.directions`).

    Checked on construction (ranges of `surgeon.core.checks.ARGS`)."""

    dims: int = 2
    grid: int = 21
    span: float = 1.0
    norm: str = "filter"

    def __post_init__(self) -> None:
        checks.args(dims=self.dims, grid=self.grid, span=self.span)
        if self.norm not in NORMS:
            raise SurgeonError(f"unknown direction norm {self.norm!r}; use filter (Li et al.) or dim0 (the paper's code)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
