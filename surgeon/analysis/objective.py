"""`Objective`: the loss whose curvature (`surgeon.analysis.curvature`) or landscape
(`surgeon.analysis.landscapes`) is measured, as one options object instead of the same three
keywords on every function:

    obj = surgeon.analysis.Objective(wd=5e-4, l2="paper", label_smoothing=0.1)
    surgeon.hessian_eigs(model, (x, y), k=5, objective=obj)
    surgeon.landscape(model, loader, objective=obj)

The loss itself is `surgeon.analysis.hessian.objective`: NLL (hard labels, label smoothing, or the
soft targets of Mixup / CutMix) plus an L2 term over the analysed parameters,
``wd / 2 * sum ||theta||^2`` (``l2="standard"``) or the paper's ``wd * sum_p ||theta_p||``
(``l2="paper"``). The old keywords (``wd=``, ``l2=``, ``label_smoothing=``) still work for one
release, with a `SurgeonDeprecationWarning` (`surgeon._compat.options_from`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from surgeon.analysis.hessian import L2_TERMS
from surgeon.core import checks
from surgeon.core.errors import SurgeonError

__all__ = ["Objective"]


@dataclass(frozen=True)
class Objective:
    """The measured loss: cross-entropy with `label_smoothing` in [0, 1), plus `wd` (>= 0) times
    the L2 term `l2` (``standard``: ``wd / 2 * sum ||theta||^2``; ``paper``: ``wd * sum_p
    ||theta_p||``) over the analysed parameters. Checked on construction (ranges of
    `surgeon.core.checks.ARGS`)."""

    wd: float = 0.0
    l2: str = "standard"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks.args(wd=self.wd, label_smoothing=self.label_smoothing)
        if self.l2 not in L2_TERMS:
            raise SurgeonError(f"unknown l2 {self.l2!r}; use 'standard' (wd/2 ||theta||^2) or 'paper' (wd sum ||theta_p||)")

    def keywords(self) -> dict[str, Any]:
        """The keywords of `surgeon.analysis.hessian.objective` and `HessianOperator`."""
        return asdict(self)
