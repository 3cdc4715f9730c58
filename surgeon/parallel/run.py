"""`Run`: how a long computation runs, as one options object instead of the same keywords on every
long function (sweeps, training, searches, comparisons, data loading):

    run = surgeon.parallel.Run(progress=True, executor=surgeon.parallel.executor("ray"))
    surgeon.corruption_robustness(model, loader, run=run)
    surgeon.landscape(model, loader, run=run)
    surgeon.train("resnet18", "digits", out="r18.safetensors", run=Run(resume=True, progress=True))

The rule that sorts a setting into `Run`: it decides how and where the computation runs, never
which numbers it computes (a progress bar, the executor of independent tasks, resuming a run that
stopped, the data-loading processes, the device, a callback). What is computed (sizes, seeds,
budgets) stays a keyword of the function or goes into that function's own options object. A
function refuses a setting it has no use for (`Run.only`), so nothing is silently ignored. The
keywords of 0.1 (``progress=``, ``executor=``, ``resume=``, ...) still work for one release, with
a `SurgeonDeprecationWarning` (`surgeon._compat.options_from`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.parallel.executors import Executor

__all__ = ["Run"]


@dataclass(frozen=True)
class Run:
    """How a computation runs (never what it computes); each function names the fields it uses:

    - ``progress``: show progress bars (rich) over the computation's steps (bool).
    - ``executor``: a `surgeon.executor` (``surgeon.parallel.executor("ray")``, ``surgeon.parallel.executor("local",
      workers=4)``) that runs the independent tasks (cells, rows, batches, trainings); None: one
      after the other in this process.
    - ``resume``: continue from the saved state of an earlier, stopped run of the same settings.
    - ``overwrite``: start afresh where the output of an earlier run exists (else refused).
    - ``workers``: data-loading processes, in [0, 1024] (None: 0 for data in memory, up to 8 for
      image folders).
    - ``download``: let torchvision fetch a dataset that is missing (online only).
    - ``device``: where a training runs (``cpu``, ``cuda``, ``cuda:1``; None: CUDA when available
      for a model built from its name, else the model's own device).
    - ``snapshots``: keep a training's trainable weights every N epochs in its run folder, for
      `surgeon.trajectory` (0: off), in [0, 100000].
    - ``callback``: called after each finished unit of work with its record: a training's
      history row per epoch, a comparison's (label, measure, seconds), a search's candidate record.

    Checked on construction (ranges of `surgeon.core.checks.ARGS`, the CLI's)."""

    progress: bool = False
    executor: Executor | None = None
    resume: bool = False
    overwrite: bool = False
    workers: int | None = None
    download: bool = False
    device: Any = None
    snapshots: int = 0
    callback: Callable[..., None] | None = None

    def __post_init__(self) -> None:
        for name in ("progress", "resume", "overwrite", "download"):
            checks.flag(name, getattr(self, name))
        if self.executor is not None and not isinstance(self.executor, Executor):
            raise SurgeonError(f"executor={self.executor!r} is not an Executor; build one with surgeon.parallel.executor(...)")
        checks.args(workers=self.workers, snapshots=self.snapshots)
        if self.callback is not None and not callable(self.callback):
            raise SurgeonError(f"callback={self.callback!r} is not callable")

    def only(self, function: str, *used: str) -> Run:
        """This run, refused in one line when it sets a field that `function` does not use."""
        for f in fields(self):
            if f.name not in used and getattr(self, f.name) != f.default:
                raise SurgeonError(f"{function} has no use for run.{f.name}; it uses run.{', run.'.join(used)}")
        return self
