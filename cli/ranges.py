"""Every numeric option of every command is range-checked before the command does any work.

The ranges are the library's (`surgeon.checks.ARGS`, by parameter name; ``"command.name"`` where
one command gives a name another meaning), so ``surgeon replace --heads 0`` and
``surgeon.replace(..., heads=0)`` are refused by the same rule; the CLI names the flag
(``--heads=0 is out of range; give an integer in [1, 1024]``). A numeric option without a range is a
bug that tests/test_bad_input.py reports.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from surgeon import checks

__all__ = ["checked", "check_commands", "flag_of", "range_of"]


def range_of(command: str, name: str) -> checks.Range | None:
    """The range of option `name` of `command`, or None."""
    return checks.ARGS.get(f"{command}.{name}", checks.ARGS.get(name))


def flag_of(fn: Callable, name: str) -> str:
    """The long flag of parameter `name` of a typer command function (``span`` -> ``--range``)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    for meta in getattr(hints.get(name), "__metadata__", ()):
        decls = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]  # Annotated: the
        longs = [d for d in decls if isinstance(d, str) and d.startswith("--")]  # first decl sits in `default`
        if longs:
            return longs[0]
    return "--" + name.replace("_", "-")


def checked(command: str, fn: Callable) -> Callable:
    """`fn` with its numeric arguments checked against `range_of(command, name)` first."""
    if getattr(fn, "_surgeon_checked", False):
        return fn
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        for name, value in signature.bind_partial(*args, **kwargs).arguments.items():
            rule = range_of(command, name)
            if rule is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                checks.check(flag_of(fn, name), value, rule)
        return fn(*args, **kwargs)

    run._surgeon_checked = True
    return run


def check_commands(app: typer.Typer) -> None:
    """Wrap every registered command of `app` with `checked` (idempotent)."""
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.callback = checked(name, info.callback)
