"""Parallel execution: the one fan-out to local processes or Ray, and torch.distributed.

`executors` (`executor`, `fan_out`: jobs to a local pool or a Ray cluster, threads set and
restored per job) and `distributed` (the process group and device choice of torchrun runs).
Imports only `surgeon.core`.
"""

from surgeon.parallel import executors, distributed, run  # noqa: F401  (each module is an attribute of the package)
from surgeon.parallel.run import Run  # noqa: F401  (how a computation runs: progress, executor)
