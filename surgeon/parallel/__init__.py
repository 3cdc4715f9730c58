"""Parallel execution: the one fan-out to local processes or Ray, and torch.distributed.

`executors` (`executor`, `fan_out`: jobs to a local pool or a Ray cluster, threads set and
restored per job), `distributed` (the process group and device choice of torchrun runs) and `run`
(`Run`: how a computation runs, the options object of every long function).
Imports only `surgeon.core`.
"""

from surgeon.parallel import executors, distributed, run  # noqa: F401  (each module is an attribute of the package)
from surgeon.parallel.executors import executor  # noqa: F401  (an engine: surgeon.parallel.executor("ray"))
from surgeon.parallel.run import Run  # noqa: F401  (how a computation runs: progress, executor, resume, ...)
