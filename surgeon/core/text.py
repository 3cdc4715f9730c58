"""Words for counts in messages and tables: ``plural(1, "stage")`` -> ``"1 stage"``, never "1 stages"."""

from __future__ import annotations

__all__ = ["plural"]

#: irregular plurals used in messages
_IRREGULAR = {"batch": "batches", "MSA": "MSAs", "matrix": "matrices", "index": "indices"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and `word`, in the plural unless n is 1: '1 stage', '2 stages', '1 batch', '3 batches'."""
    return f"{n} {word if n == 1 else many or _IRREGULAR.get(word, word + 's')}"
