"""Words for counts in messages and tables: ``plural(1, "stage")`` -> ``"1 stage"``, never "1 stages"."""

from __future__ import annotations

__all__ = ["plural"]

#: irregular plurals used in messages
_IRREGULAR = {"batch": "batches", "MSA": "MSAs", "matrix": "matrices", "index": "indices"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and `word`, in the plural unless n is 1: '1 stage', '2 stages', '1 batch', '3 batches'."""
    return f"{n} {word if n == 1 else many or _IRREGULAR.get(word, word + 's')}"


def format_omega(omega: float) -> str:
    """A frequency in units of pi as text: 0, pi/2, 3pi/4, pi, 0.667pi (denominators up to 16)."""
    from fractions import Fraction

    f = Fraction(omega).limit_denominator(16)
    if abs(float(f) - omega) > 1e-9:
        return f"{omega:.3g}\u03c0"
    if f == 0:
        return "0"
    num = "" if f.numerator == 1 else str(f.numerator)
    return f"{num}\u03c0" + ("" if f.denominator == 1 else f"/{f.denominator}")
