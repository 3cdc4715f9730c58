"""Range checks for numeric arguments, run at the top of every public function before any work.

Each check raises `SurgeonError` with one line naming the argument, its value and the valid
range, e.g. ``heads=0 is out of range; give an integer in [1, 1024]``. ``None`` passes where the argument
has a default (None means "use the default"); 0 never stands for "default".

`ARGS` holds the range of every argument name shared across the API (and by the CLI options of
the same name: ``surgeon replace --heads 0`` is refused by the same rule as ``replace(heads=0)``):

    checks.args(heads=heads, window=window, dim_head=dim_head)   # ranges from ARGS
    checks.check_int("k", k, min=1)                              # a one-off range
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

from surgeon.core.errors import SurgeonError

__all__ = ["Range", "ARGS", "args", "check", "check_int", "check_float", "check_prob", "distinct", "INT_MAX"]

INT_MAX = 2**31 - 1  # default upper bound of integer arguments: a larger count is a typo, not a request


@dataclass(frozen=True)
class Range:
    """A numeric range: `kind` int or float, bounds inclusive unless `*_open`; `odd`: odd integers only."""

    kind: type
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    odd: bool = False

    def describe(self) -> str:
        what = ("an odd integer" if self.odd else "an integer") if self.kind is int else "a number"
        hi = INT_MAX if self.kind is int and self.max is None else self.max
        if self.min is not None and hi is not None:
            return f"{what} in {'(' if self.min_open else '['}{_fmt(self.min)}, {_fmt(hi)}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{what} {'>' if self.min_open else '>='} {_fmt(self.min)}"
        if hi is not None:
            return f"{what} {'<' if self.max_open else '<='} {_fmt(hi)}"
        return f"a finite {what[2:].strip()}" if self.kind is float else what

    def contains(self, value: float) -> bool:
        hi = INT_MAX if self.kind is int and self.max is None else self.max
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        if self.odd and value % 2 == 0:
            return False
        return not (hi is not None and (value >= hi if self.max_open else value > hi))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


_PROB = Range(float, 0.0, 1.0, max_open=True)
_POS = Range(int, 1)  # only for counts the data bounds (batches: a loop stops at the end of the data)

#: Every other count has an upper bound, each with its reason (tests/test_bad_input.py checks that
#: none is missing): a larger value is a typo that would run for days, not a request.
_STEPS = Range(int, 1, 1000)  # PGD steps (the original's 40; 25x that) and SLQ's Lanczos steps (a basis of
#                                1000 parameter-sized vectors is already tens of GB for a ResNet-50)
_ITERATIONS = Range(int, 1, 100_000)  # eigen-solver iterations, Hutchinson samples: one Hessian-vector product each
_EPOCHS = Range(int, 1, 100_000)  # the paper's longest recipe trains 300 + 5 epochs

#: Ranges of the numeric arguments shared across the API and the CLI (by parameter name).
ARGS: dict[str, Range] = {
    # model building and surgery
    "num_classes": Range(int, 1, 1_000_000), "img_size": Range(int, 1, 16384), "heads": Range(int, 1, 1024),
    "window": Range(int, 1, 1024), "dim_head": Range(int, 1, 4096), "drop_path": _PROB,
    "kernel": Range(int, 1, 15, odd=True),  # a neighbourhood / 'same' padding centred on its pixel or token
    # data and evaluation
    "batch_size": Range(int, 1, 1_000_000), "batches": _POS, "workers": Range(int, 0, 1024),
    "subset": Range(float, 0.0, 1.0, min_open=True), "mc_dropout": Range(int, 0, 100_000), "bins": Range(int, 1, 10_000),
    "seed": Range(int, 0, 2**32 - 1),
    # curvature and landscapes
    "k": Range(int, 1, 100_000), "top_k": Range(int, 1, 100_000), "tol": Range(float, 0.0, 1.0, min_open=True, max_open=True),
    "max_iter": _ITERATIONS, "matvecs": Range(int, 1, 1_000_000), "samples": _ITERATIONS,
    "vectors": Range(int, 1, 10_000), "steps": _STEPS,
    "wd": Range(float, 0.0), "label_smoothing": _PROB, "grid": Range(int, 2, 1001), "dims": Range(int, 1, 2),
    "span": Range(float, 0.0, min_open=True),
    # robustness and attacks
    "eps": Range(float, 0.0, 1.0), "width": Range(float, 0.0, 1.0, min_open=True), "alpha": Range(float, 0.0, 1.0, min_open=True),
    "severity": Range(int, 0, 5), "severities": Range(int, 1, 5),
    # training
    "epochs": _EPOCHS,  # None: as the recipe says; 0 would train the warmup epochs alone (no schedule left)
    "lr": Range(float, 0.0, min_open=True), "threads": Range(int, 1, 1024),
    "snapshots": Range(int, 0, 100_000),  # 0: off
    # execution and timing
    "job_cpus": Range(float, 0.0, 1024.0, min_open=True), "job_gpus": Range(float, 0.0, 64.0),
    "retries": Range(int, 0, 100), "repeats": Range(int, 2, 100_000), "warmup": Range(int, 0, 100_000),
}

#: Where one command gives a name another meaning (CLI: "command.option").
ARGS["search.workers"] = Range(int, 1, 1024)  # trainings at once, not data loading processes


def check(name: str, value: Any, rule: Range) -> Any:
    """`value` if it is None or of `rule`'s kind inside its range, else a one-line `SurgeonError`."""
    if value is None:
        return value
    bad = SurgeonError(f"{name}={value!r} is not {'an integer' if rule.kind is int else 'a number'}; give {rule.describe()}")
    if isinstance(value, (bool, str, bytes)):
        raise bad
    shown = value
    try:
        value = operator.index(value) if rule.kind is int else float(value)
    except (TypeError, ValueError):
        raise bad from None
    bad = SurgeonError(f"{name}={shown!r} is out of range; give {rule.describe()}")
    if rule.kind is float and not math.isfinite(value):
        raise bad
    if not rule.contains(value):
        raise bad
    return value


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int | None:
    """An integer in [min, max] (max defaults to 2^31 - 1), or None."""
    return check(name, value, Range(int, min, max))


def check_float(name: str, value: Any, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False) -> float | None:
    """A finite number in the range (closed unless `*_open`), or None."""
    return check(name, value, Range(float, min, max, min_open, max_open))


def check_prob(name: str, value: Any, *, one: bool = False) -> float | None:
    """A probability in [0, 1) ([0, 1] with `one`), or None."""
    return check(name, value, Range(float, 0.0, 1.0, max_open=not one))


def flag(name: str, value: Any, meaning: str = "") -> bool:
    """`value` when it is True or False; else one line naming it (and, with `meaning`, what it does)."""
    if not isinstance(value, bool):
        raise SurgeonError(f"{name}={value!r} must be True or False" + (f" ({meaning})" if meaning else ""))
    return value


def args(**values: Any) -> None:
    """Check each keyword against its range in `ARGS` (a name missing from `ARGS` is a bug)."""
    for name, value in values.items():
        check(name, value, ARGS[name])


def distinct(name: str, values: Any) -> list:
    """`values` as a list when no value repeats; else one line naming the repeat (a list option
    computes each of its values once: ``eps=0.01,0.01`` would compute one budget twice)."""
    values, seen = list(values), set()
    for v in values:
        if v in seen:
            raise SurgeonError(f"{name}={','.join(map(_item, values))} gives {_item(v)} twice; give each value once")
        seen.add(v)
    return values


def _item(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
