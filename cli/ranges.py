"""Every option of every command is checked before the command does any work (before a model loads).

- Numbers: the ranges are the library's (`surgeon.core.checks.ARGS`, by parameter name; ``"command.name"``
  where one command gives a name another meaning), so ``surgeon replace --heads 0`` and
  ``surgeon.replace(..., heads=0)`` are refused by the same rule; the CLI names the flag
  (``--heads=0 is out of range; give an integer in [1, 1024]``).
- Lists (`LISTS`): a comma-separated option is parsed here, once, into a list without repeats
  (``--eps 0.01,0.01`` would compute one budget twice), each number in its range; the command
  receives the list.
- Choices (`CHOICES`): an option with a fixed set of values is checked against the library's set
  (``--attack cw``), with the closest name suggested.
- Data (`DATA`): a data spec that names nothing (no such file, folder or dataset) is refused.
- Together: the engine options (``--retries`` where the tasks run in this process, Ray options with
  ``--backend local``) and one model given twice to a command that compares MODELS.

An option without its rule is a bug that tests/test_bad_input.py reports.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import typer

import surgeon
from surgeon.core import checks
from surgeon.core.errors import SurgeonError

__all__ = ["CHOICES", "DATA", "LISTS", "checked", "check_commands", "choices_of", "flag_of", "help_range", "parse_list",
           "range_of", "set_ranges"]

#: Comma-separated options: (item type, an example), by "command.name".
LISTS: dict[str, tuple[type, str]] = {
    "attack.eps": (float, "0.002,0.004,0.008"),
    "stability.perturbations": (str, "translate,gaussian_noise"),
    "robustness.corruptions": (str, "gaussian_noise,fog"),
    "robustness.severities": (int, "1,3,5"),
    "frequency-noise.frequencies": (float, "0.1,0.5,0.9"),
    "compare.measures": (str, "fourier,variance,lesions"),
    "compare.labels": (str, "resnet,vit,alternet"),
}


def _metrics() -> Sequence[str]:
    return tuple(surgeon.evaluation.metrics.Metrics(2).compute())


#: Options with a fixed set of values: the library's set (read when a command runs: --help needs no
#: torch), by "command.name" or by name for every command.
CHOICES: dict[str, Callable[[], Sequence[str]]] = {
    "attack.method": lambda: surgeon.evaluation.adversarial.ATTACKS,
    "probe.kind": lambda: surgeon.analysis.reductions.PROBES.names(),
    "hessian.which": lambda: surgeon.analysis.eigensolvers.WHICH,
    "hessian.method": lambda: surgeon.analysis.curvature.SOLVERS,
    "l2": lambda: surgeon.analysis.hessian.L2_TERMS,
    "landscape.norm": lambda: surgeon.analysis.landscapes.NORMS,
    "eval.nll": lambda: surgeon.evaluation.metrics.NLL_MODES,
    "robustness.preset": lambda: tuple(surgeon.data.corruptions.CONSTANTS),
    "robustness.metric": _metrics,
    "backend": lambda: surgeon.parallel.executors.BACKENDS,
    "insert.block": lambda: surgeon.layers.registered(),
    "replace.with_": lambda: surgeon.layers.registered(),
    "alternate.preset": lambda: surgeon.surgery.alternet.ALTERNETS.names(),
}

#: Options that name data: checked to name something (a dataset, a file, a folder) before a model loads.
DATA = ("data", "val")


def range_of(command: str, name: str) -> checks.Range | None:
    """The range of option `name` of `command`, or None."""
    return checks.ARGS.get(f"{command}.{name}", checks.ARGS.get(name))


def help_range(rule: checks.Range) -> tuple[float | None, float | None] | None:
    """(min, max) of `rule` as typer's ``Option(min=, max=)`` takes them (ints without a max: up to
    `checks.INT_MAX`), or None where typer cannot say the rule: an open bound (``--subset`` in (0, 1])
    or odd integers only (``--kernel``)."""
    if rule.min_open or rule.max_open or rule.odd:
        return None
    return rule.min, checks.INT_MAX if rule.kind is int and rule.max is None else rule.max


def set_ranges(group: Any) -> None:
    """Give every numeric option of every command of the click `group` its `checks.ARGS` range as
    typer's ``min`` / ``max``, which ``--help`` shows ("[1<=x<=1024]"). Only shown: the check stays
    `_check_option`'s (`checks.check`), since typer's own (given ``typer.Option(min=, max=)``) has
    no open bounds nor odd-only integers and its message names neither the value nor the range."""
    for name, cmd in group.commands.items():
        for param in cmd.params:
            rule = range_of(name, param.name)
            shown = help_range(rule) if rule is not None and param.param_type_name == "option" else None
            if shown is not None:
                param.min, param.max = shown


def choices_of(command: str, name: str) -> Callable[[], Sequence[str]] | None:
    """The choices of option `name` of `command` (a function giving them), or None."""
    return CHOICES.get(f"{command}.{name}", CHOICES.get(name))


def parse_list(text: str, flag: str, kind: type, example: str, rule: checks.Range | None = None) -> list:
    """'a, b,c' -> [a, b, c] of `kind`, each value once and in `rule`'s range; an empty list, a
    value of the wrong type or a repeat is refused in one line naming `flag`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SurgeonError(f"{flag} {text!r} names nothing; give a comma-separated list, e.g. {flag} {example}")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise SurgeonError(f"{flag} {text!r} is not a comma-separated list of {kind.__name__}s; "
                           f"e.g. {flag} {example}") from None
    for v in values if rule is not None else ():
        checks.check(flag, v, rule)
    return checks.distinct(flag, values)


def check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    """`value` among `choices`, else one line with the closest choice."""
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SurgeonError(f"unknown {flag} {value!r}; {hint}choose from {', '.join(choices)}")


def _check_option(command: str, name: str, flag: str, value: Any) -> Any:
    """`value` checked by its rule (`LISTS`, `CHOICES`, `DATA`, a numeric range); a list option parsed."""
    if f"{command}.{name}" in LISTS and isinstance(value, str):
        kind, example = LISTS[f"{command}.{name}"]
        return parse_list(value, flag, kind, example, range_of(command, name) if kind is not str else None)
    choices = choices_of(command, name)
    if choices is not None and isinstance(value, str):
        check_choice(flag, value, choices())
    if name in DATA and isinstance(value, str) and not (name == "val" and value.strip().lower() == "none"):
        surgeon.data.check_spec(value, name)  # says name=...: main() writes the flag ("--val none": no validation)
    rule = range_of(command, name)
    if rule is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        checks.check(flag, value, rule)
    return value


def flag_of(fn: Callable, name: str) -> str:
    """The long flag of parameter `name` of a typer command function (``span`` -> ``--range``; an
    argument as usage lines write it: ``kind`` -> ``KIND``)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    for meta in getattr(hints.get(name), "__metadata__", ()):
        if isinstance(meta, typer.models.ArgumentInfo):  # a positional argument: as usage lines write it
            return name.rstrip("_").upper()
        decls = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]  # Annotated: the
        longs = [d for d in decls if isinstance(d, str) and d.startswith("--")]  # first decl sits in `default`
        if longs:
            return longs[0]
    return "--" + name.replace("_", "-")


_ENGINE = ("workers", "address", "job_cpus", "job_gpus", "retries")


def _check_engine(arguments: dict[str, Any]) -> None:
    """With --backend local, the engine options checked together now (`surgeon.parallel.executors.executor` refuses Ray
    options, and --retries where the tasks run in this process), not after a model has loaded."""
    if arguments.get("backend") == "local":
        surgeon.parallel.executors.executor("local", **{k: arguments[k] for k in _ENGINE if k in arguments})


def _check_models(command: str, arguments: dict[str, Any]) -> None:
    """A command comparing MODELS computes each once: the same model (name or file, with the same
    --weights) given twice is refused. An ensemble may repeat a name: its random-init members differ."""
    models, weights = arguments.get("models") or [], arguments.get("weights") or []
    if command != "ensemble" and isinstance(weights, list):
        given = [m + (f" --weights {weights[i]}" if i < len(weights) else "") for i, m in enumerate(models)]
        for i, m in enumerate(given):
            if m in given[:i]:
                raise SurgeonError(f"MODELS gives {m} twice: the same model would be computed twice; give each once")


def checked(command: str, fn: Callable) -> Callable:
    """`fn` with its arguments checked first (`_check_option`), list options given as lists."""
    if getattr(fn, "_surgeon_checked", False):
        return fn
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        for name, value in bound.arguments.items():
            bound.arguments[name] = _check_option(command, name, flag_of(fn, name), value)
        _check_engine(bound.arguments)
        _check_models(command, bound.arguments)
        return fn(*bound.args, **bound.kwargs)

    run._surgeon_checked = True
    return run


def check_commands(app: typer.Typer) -> None:
    """Wrap every registered command of `app` with `checked` (idempotent)."""
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.callback = checked(name, info.callback)
