"""`Run`: how a long computation runs, as one options object instead of the same keywords on every
sweep (corruption and frequency-noise grids, landscapes):

    run = surgeon.parallel.Run(progress=True, executor=surgeon.executor("ray"))
    surgeon.corruption_robustness(model, loader, run=run)
    surgeon.landscape(model, loader, run=run)

The rule that sorts a setting into `Run`: it never changes a number of the result (a progress bar,
where the independent tasks run). What is computed (sizes, seeds, budgets) stays a keyword of the
function or goes into that function's own options object. The old keywords (``progress=``,
``executor=``) still work for one release, with a `SurgeonDeprecationWarning`
(`surgeon._compat.options_from`).
"""

from __future__ import annotations

from dataclasses import dataclass
from surgeon.core.errors import SurgeonError
from surgeon.parallel.executors import Executor

__all__ = ["Run"]


@dataclass(frozen=True)
class Run:
    """How a computation runs (never what it computes):

    - ``progress``: show a progress bar (rich) over the computation's steps (bool).
    - ``executor``: a `surgeon.executor` (``surgeon.executor("ray")``) that runs the independent
      tasks (cells, rows, batches), or None: one after the other in this process.
    """

    progress: bool = False
    executor: Executor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.progress, bool):
            raise SurgeonError(f"progress={self.progress!r} must be True or False")
        if self.executor is not None and not isinstance(self.executor, Executor):
            raise SurgeonError(f"executor={self.executor!r} is not an Executor; build one with surgeon.executor(...)")
