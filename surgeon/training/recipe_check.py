"""One validator for every settings file surgeon reads.

A training recipe (a TOML file of `surgeon.training.Recipe` keys, or a dict) and a search spec
(a TOML file with the sections ``[model]``, ``[data]``, ``[train]``, ``[search]``, or a Python
file's ``SETTINGS``) are checked by the same code:

- a section is a table of `Check` s, one per key; `field_checks` makes that table from a
  dataclass's fields and type annotations (``bool``, ``int``, ``float``, ``str``, ``Literal``
  choices, ``X | None``, ``tuple[int, ...]``), so the `Recipe` dataclass is the training schema;
- unknown keys get the closest known key (`surgeon.errors.closest`), missing required keys are
  named, every value is converted or refused;
- every problem is collected with its file, TOML line (`toml_line`) and section, and
  `RecipeErrors.raise_if_any` reports all of them in one `SurgeonError`: one line for one problem,
  else a summary line and one line per problem.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from surgeon.core.errors import SurgeonError, closest

__all__ = ["Check", "RecipeErrors", "check_section", "check_sections", "field_checks", "toml_line"]


def toml_line(text: str, section: str = "", key: str | None = None) -> int | None:
    """The 1-based line of ``key = ...`` inside ``[section]`` ('' : the top level, before any
    header), or of the ``[section]`` header itself when `key` is None; None when absent."""
    rows = text.splitlines()
    start = 0
    if section:
        header = re.compile(rf"\s*\[\s*{re.escape(section)}\s*\]\s*(#.*)?")
        start = next((i + 1 for i, row in enumerate(rows) if header.fullmatch(row)), None)
        if start is None or key is None:
            return start
    elif key is None:
        return None
    end = next((i for i in range(start, len(rows)) if re.match(r"\s*\[", rows[i])), len(rows))
    assign = re.compile(rf"\s*([\"']?){re.escape(key)}\1\s*=")
    return next((i + 1 for i in range(start, end) if assign.match(rows[i])), None)


@dataclass
class RecipeErrors:
    """The problems found in one training recipe or search spec, each with its place; `raise_if_any` reports them all.

    Args:
        source: the file (or a name such as ``recipe`` for a dict).
        text: its TOML text, for line numbers ('' : none, e.g. a Python search spec or a dict).
    """

    source: str
    text: str = ""
    problems: list[tuple[int | None, str]] = field(default_factory=list)

    def where(self, section: str = "", key: str | None = None) -> str:
        """``FILE (line N) [section]``: the key's line, else its section header's line."""
        line = toml_line(self.text, section, key) if self.text else None
        if line is None and self.text and section:
            line = toml_line(self.text, section)
        return self.source + (f" (line {line})" if line else "") + (f" [{section}]" if section else "")

    def add(self, section: str, key: str | None, message: str) -> None:
        """Record `message` about `key` of `section` ('' : the top level; key None: the section)."""
        line = toml_line(self.text, section, key) if self.text and (section or key) else None
        self.problems.append((line, f"{self.where(section, key)}: {message}"))

    def raise_if_any(self) -> None:
        """One `SurgeonError` with every problem, in file order (one line when there is one)."""
        if not self.problems:
            return
        ordered = [msg for _, msg in sorted(self.problems, key=lambda p: math.inf if p[0] is None else p[0])]
        if len(ordered) == 1:
            raise SurgeonError(ordered[0])
        raise SurgeonError(f"{self.source}: {len(ordered)} problems:\n" +
                           "\n".join(f"  {msg}" for msg in ordered))


@dataclass(frozen=True)
class Check:
    """One key of a section: ``convert(value)`` returns the value to use or raises ValueError with
    the message (without the place); ``required`` keys must be given."""

    convert: Callable[[Any], Any]
    required: bool = False


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


def _describe(tp: Any) -> str:
    """What a value of annotation `tp` looks like, for messages."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if typing.get_origin(tp) is tuple:
        n = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {n}integers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _field_value(name: str, tp: Any, value: Any) -> Any:
    """`value` as annotation `tp` allows it (ints as floats, lists as tuples, "none" for optional
    fields); ValueError naming the key, the value and what to give otherwise."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if _is_none(value):
            return None
        return _field_value(name, inner[0], value) if len(inner) == 1 else value
    if value is None:
        raise ValueError(f"{name} cannot be empty; give {_describe(tp)}")
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ValueError(f"{name} = {value!r}; choose from {', '.join(map(str, args))}")
        return value
    if typing.get_origin(tp) is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok or (args[-1] is not Ellipsis and len(value) != len(args)):
            example = "[3, 32, 32]" if args[-1] is not Ellipsis else "[60, 120, 160]"
            raise ValueError(f"{name} = {value!r} has the wrong type; give {_describe(tp)}, e.g. {name} = {example}")
        return tuple(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}; give a finite number")
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{name} = {value!r} has the wrong type; give {_describe(tp)}")


def field_checks(cls: type, required: tuple[str, ...] = ()) -> dict[str, Check]:
    """A `Check` per field of dataclass `cls`, from its type annotations (`required`: those that
    must be given)."""
    hints = typing.get_type_hints(cls)
    return {f.name: Check(lambda v, n=f.name, t=hints[f.name]: _field_value(n, t, v), f.name in required)
            for f in dataclasses.fields(cls)}


def _unknown(errors: RecipeErrors, section: str, key: str | None, name: str, known: Mapping[str, Any]) -> str | None:
    """Add an unknown key (`key` given) or section (`key` None) called `name`, with the closest
    known one, which is returned (a missing one it stands for is not reported twice)."""
    hints = closest(name, known, 1)
    what, shown = ("key", hints[0] if hints else "") if key is not None else ("section", f"[{hints[0]}]" if hints else "")
    hint = f"did you mean {shown}?" if hints else f"known {what}s: {', '.join(known)}"
    errors.add(section, key, f"unknown {what} {name!r}; {hint}")
    return hints[0] if hints else None


def check_section(errors: RecipeErrors, section: str, given: Mapping[str, Any],
                  checks: Mapping[str, Check]) -> dict[str, Any]:
    """The valid values of `given` (a section's keys) by `checks`; unknown keys (with the closest
    known one), missing required keys and refused values are added to `errors`."""
    values: dict[str, Any] = {}
    meant = set()
    for key, value in given.items():
        if key not in checks:
            meant.add(_unknown(errors, section, str(key), str(key), checks))
            continue
        try:
            values[key] = checks[key].convert(value)
        except ValueError as exc:
            errors.add(section, key, str(exc))
    missing = [k for k, c in checks.items() if c.required and k not in given and k not in meant]
    if missing:
        label = f" in [{section}]" if section else ""
        errors.add(section, None, f"missing key(s) {', '.join(map(repr, missing))}{label}")
    return values


def check_sections(errors: RecipeErrors, raw: Any, schema: Mapping[str, Mapping[str, Check]]) -> dict[str, dict]:
    """The valid values of every section of `raw` (a search spec's tables) by `schema`; unknown and
    missing sections, top-level keys and every key problem are added to `errors`."""
    if not isinstance(raw, dict):
        errors.add("", None, f"a search spec is a dict of the sections {', '.join(schema)}, not {type(raw).__name__}")
        return {}
    values: dict[str, dict] = {}
    meant = set()
    for name, table in raw.items():
        if name not in schema and isinstance(table, dict):
            meant.add(_unknown(errors, str(name), None, str(name), schema))
        elif name not in schema:
            errors.add("", name, f"unknown top-level key {name!r}; a search spec has the sections "
                                 f"{', '.join(f'[{s}]' for s in schema)}")
        elif not isinstance(table, dict):
            errors.add("", name, f"{name} must be the section [{name}], not a value")
        else:
            values[name] = check_section(errors, name, table, schema[name])
    missing = [s for s in schema if s not in raw and s not in meant]
    for name in missing:
        keys = ", ".join(k for k, c in schema[name].items() if c.required) or "none required"
        errors.add("", None, f"missing section [{name}] (keys: {keys})")
    return values
