"""`Sampling`: which samples a loader yields and in what order, as one options object:

    loader = surgeon.data.loader("digits", model, train=True, sampling=Sampling(shuffle=True, subset=0.1, seed=3))

The keywords of 0.1 (``shuffle=``, ``subset=``, ``seed=``) still work for one release, with a
`SurgeonDeprecationWarning`; how the data is loaded (worker processes, download) is
`surgeon.parallel.Run`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from surgeon.core import checks

__all__ = ["Sampling"]


@dataclass(frozen=True)
class Sampling:
    """Which samples a loader yields and in what order:

    - ``shuffle``: a new random order every epoch (else the dataset's order).
    - ``subset``: keep a class-balanced fraction of the data, in (0, 1] (None: all of it;
      `surgeon.data.datasets.balanced_subset`).
    - ``seed``: of the subset's draw and of the shuffled order, in [0, 2^32 - 1].

    Checked on construction (ranges of `surgeon.core.checks.ARGS`, the CLI's)."""

    shuffle: bool = False
    subset: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks.flag("shuffle", self.shuffle)
        checks.args(subset=self.subset, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
