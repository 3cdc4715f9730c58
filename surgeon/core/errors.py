"""One error type for every user mistake surgeon can name.

A `SurgeonError` carries a single line that says what is wrong and how to fix it. The CLI prints
it and exits with code 2; library callers can catch it like any `ValueError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SurgeonDeprecationWarning(DeprecationWarning):
    """An old surgeon name still works for one release (`surgeon._compat`); the message names the new
    one. The test suite turns it into an error, so no test and no example uses an old name by accident."""


class SurgeonError(ValueError):
    """Bad input: the message is one line naming the problem and the fix."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The `n` names in `choices` closest to `name`, best first: names that start with it or that
    it starts with (``warmup`` -> ``warmup_epochs``; 3+ characters), then names that contain it,
    then the rest with a difflib ratio >= 0.5; by difflib ratio within each group."""
    low = name.lower()

    def rank(choice: str) -> tuple[int, float]:
        other = choice.lower()
        ratio = difflib.SequenceMatcher(None, low, other).ratio()
        if min(len(low), len(other)) >= 3 and (other.startswith(low) or low.startswith(other)):
            return 3, ratio
        if len(low) >= 3 and low in other:
            return 2, ratio
        return (1, ratio) if ratio >= 0.5 else (0, 0.0)

    ranked = sorted(((rank(c), c) for c in dict.fromkeys(choices)), reverse=True)  # ties: as difflib orders them
    return [c for r, c in ranked if r[0] > 0][:n]


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened, for embedding in a one-line error."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
