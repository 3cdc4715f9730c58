"""A search's results: `SearchResult` (the records of results.jsonl, tidy rows), reading the
records, and the build-up chart (`surgeon.plots.plot_buildup`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError
from surgeon.core.files import check_folder
from surgeon.core.tables import Tabular


@dataclass
class SearchResult(Tabular):
    """A search's folder, its records (the lines of results.jsonl) and its chart."""

    out: Path
    records: list[dict[str, Any]]
    chart: Path | None = None
    input_size: tuple[int, int, int] | None = None  # (C, H, W) every candidate was trained and evaluated at

    @property
    def best(self) -> dict[str, Any] | None:
        """The record of the last accepted candidate, the search's answer."""
        return next((r for r in reversed(self.records) if r["accepted"]), None)

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: candidate x seed x validation metric (failed runs: value None)."""
        rows = []
        for r in self.records:
            ids = {"step": r["step"], "candidate": r["id"], "msa": " ".join(f"{s}:{n}" for s, n in r["msa"].items()),
                   "accepted": r["accepted"]}
            for run in r["runs"]:
                rows += [{**ids, "seed": run["seed"], "quantity": k, "value": v}
                         for k, v in run.get("metrics", {r["metric"]: None}).items()]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.figure_of(viz.plot_buildup(self.records))


def read_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records in ``OUT/results.jsonl`` ([] when it does not exist yet)."""
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SurgeonError(f"{path} is damaged ({exc}); restore it or start the search in another folder") from None


def _chart(records: list[dict[str, Any]], path: Path, overwrite: bool = True) -> Path:
    """The build-up chart at `path`; the search folder's own ``buildup.png`` is redrawn as the
    search goes (`overwrite`), a chart elsewhere follows the caller's policy."""
    from surgeon.viz import plot_buildup, save_figure  # matplotlib: only when a chart is drawn

    return save_figure(plot_buildup(records).figure, path, overwrite=overwrite)


def search_report(out: str | os.PathLike, *, chart: str | os.PathLike | None = None, overwrite: bool = False) -> SearchResult:
    """The records of the search in `out`, with its build-up chart redrawn (to `chart`, default
    ``OUT/buildup.png``, the folder's own chart, always redrawn; the suffix picks the format). An
    existing `chart` elsewhere is refused unless `overwrite`."""
    folder = check_folder(out, "search folder", "give the out= folder of surgeon search")
    if not (folder / "search.json").is_file():
        raise SurgeonError(f"{folder} holds no search (no search.json); give the out= folder of surgeon search")
    records = read_records(folder)
    if not records:
        raise SurgeonError(f"{folder} has no finished candidate yet; continue the search with resume=True")
    target = Path(chart) if chart is not None else folder / "buildup.png"
    return SearchResult(folder, records, _chart(records, target, overwrite=overwrite or chart is None))
