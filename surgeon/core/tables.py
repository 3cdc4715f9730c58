"""Tidy tables of results: ``tidy()`` -> CSV, and ``to_pandas()`` behind the ``surgeon[tables]`` extra.

Every result object (`EvaluationResult`, `LesionResult`, `ProbeResult`, `SpectrumResult`, ...) mixes in
`Tabular` and defines ``tidy()``: a list of flat dicts, one per observation, long ("tidy") format:
identifying columns (model, block, batch, corruption, severity, epoch, ...) then ``quantity`` and
``value``. `to_pandas` and `write_csv` both read those records, so the CSV and the DataFrame agree.
pandas is imported only inside `to_pandas`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError
from surgeon.core.files import atomic_path
from surgeon.core.jsonio import plain

__all__ = ["Tabular", "columns", "csv_text", "quantity_rows", "to_pandas", "write_csv"]


def quantity_rows(ids: Mapping[str, Any], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per quantity: ``{**ids, "quantity": name, "value": value}`` for each item of `values`."""
    return [{**ids, "quantity": name, "value": plain(value)} for name, value in values.items()]


def columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys, in order of first appearance."""
    return list(dict.fromkeys(k for row in rows for k in row))


def to_pandas(rows: list[dict[str, Any]]):
    """A `pandas.DataFrame` of `rows` (None and NaN both read as missing values)."""
    try:
        import pandas
    except ImportError:
        raise SurgeonError("to_pandas needs pandas: pip install 'surgeon[tables]'") from None
    return pandas.DataFrame.from_records(rows, columns=columns(rows))


def _cell(value: Any) -> Any:
    value = plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, dict)):
        return "x".join(map(str, value)) if isinstance(value, list) else str(value)
    return repr(value) if isinstance(value, float) else value


def csv_text(rows: list[dict[str, Any]]) -> str:
    """`rows` as CSV text: a header of `columns(rows)`, floats written in full (repr), missing values empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` as CSV through a temp file and a rename."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(csv_text(rows))
    return target


class Tabular:
    """Mixin for result objects: ``tidy()`` (defined by each result), ``to_pandas()`` and ``to_csv(path)``."""

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: identifying columns, then ``quantity`` and ``value``."""
        raise NotImplementedError

    def to_pandas(self):
        """The result as a tidy `pandas.DataFrame` (needs ``pip install 'surgeon[tables]'``)."""
        return to_pandas(self.tidy())

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write ``tidy()`` as CSV through a temp file and a rename."""
        return write_csv(path, self.tidy())
