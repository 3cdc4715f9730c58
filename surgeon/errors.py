"""One error type for every user mistake surgeon can name.

A `SurgeonError` carries a single line that says what is wrong and how to fix it. The CLI prints
it and exits with code 2; library callers can catch it like any `ValueError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SurgeonError(ValueError):
    """Bad input: the message is one line naming the problem and the fix."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The `n` names in `choices` closest to `name` (difflib ratio), best first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened, for embedding in a one-line error."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
