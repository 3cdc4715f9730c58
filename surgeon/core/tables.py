"""Tidy tables of results: ``tidy()`` -> CSV, and ``to_pandas()`` behind the ``surgeon[tables]`` extra.

Every result object (`EvaluationResult`, `LesionResult`, `ProbeResult`, `SpectrumResult`, ...) mixes in
`Tabular` and defines ``tidy()``: a list of flat dicts, one per observation, long ("tidy") format:
identifying columns (model, block, batch, corruption, severity, epoch, ...) then ``quantity`` and
``value``. `to_pandas` and `write_csv` both read those records, so the CSV and the DataFrame agree.
pandas is imported only inside `to_pandas`.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError
from surgeon.core.files import check_output, write_json, write_text
from surgeon.core.jsonio import plain

__all__ = ["Tabular", "columns", "csv_text", "html_table", "quantity_rows", "to_pandas", "write_csv"]


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
    return write_text(path, csv_text(rows))


class Tabular:
    """The one result interface, mixed into every result type (`surgeon.results`).

    Each result defines ``tidy()`` (rows: identifying columns, then ``quantity`` and ``value``) and
    ``plot()`` (a matplotlib Figure, drawn by `surgeon.viz`); the rest is shared: ``to_dict()``
    (its fields as plain JSON values; models and tensors left out), ``to_pandas()``,
    ``save(path)`` (``.json``: ``to_dict()``; ``.csv``: ``tidy()``; an existing file only with
    ``overwrite=True``, the convention of `surgeon.save`), ``to_csv(path)`` and ``_repr_html_``
    (a table in a notebook)."""

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: identifying columns, then ``quantity`` and ``value``."""
        raise NotImplementedError

    def plot(self):
        """The result's figure (a `matplotlib.figure.Figure`)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The result's fields as plain JSON values (nested results by their own ``to_dict``;
        models, tensors and other objects that are not data are left out)."""
        return {name: _plain_field(value) for name, value in _fields(self).items() if _is_data(value)}

    def to_pandas(self):
        """The result as a tidy `pandas.DataFrame` (needs ``pip install 'surgeon[tables]'``)."""
        return to_pandas(self.tidy())

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the result to `path`, by its suffix: ``.json`` (``to_dict()``, strict JSON) or
        ``.csv`` (``tidy()``); atomically, and over an existing file only with ``overwrite=True``."""
        target = check_output(path, overwrite=overwrite, suffixes=(".json", ".csv"))
        if target.suffix.lower() == ".json":
            return write_json(target, self.to_dict())
        return write_text(target, csv_text(self.tidy()))

    def to_csv(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``tidy()`` as CSV to `path` (``save`` of a ``.csv`` path; another suffix is refused,
        never renamed)."""
        return write_text(check_output(path, overwrite=overwrite, suffixes=(".csv",)), csv_text(self.tidy()))

    def _repr_html_(self) -> str:
        """A notebook's view: the result's name and its first tidy rows as an HTML table."""
        rows = self.tidy()
        return html_table(rows[:_HTML_ROWS], caption=f"{type(self).__name__}: {len(rows)} rows"
                          + (f" (first {_HTML_ROWS})" if len(rows) > _HTML_ROWS else ""))


_HTML_ROWS = 20


def _fields(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return dict(vars(result))


def _is_data(value: Any) -> bool:
    """Whether a field is data to write: not a model, a tensor of weights or a callable."""
    return not (hasattr(value, "state_dict") or hasattr(value, "requires_grad") or callable(value))


def _plain_field(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return plain(to_dict())
    if isinstance(value, (list, tuple)) and value and callable(getattr(value[0], "to_dict", None)):
        return [plain(v.to_dict()) for v in value]
    return plain(value)


def html_table(rows: list[dict[str, Any]], caption: str = "") -> str:
    """`rows` as an HTML table (escaped; missing values empty)."""
    cols = columns(rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(_cell(r.get(c))))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
