"""`surgeon search RECIPE --out runs/NAME` and `surgeon report runs/NAME`: build-up searches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import surgeon

from surgeon.cli.common import AddressOpt, BackendOpt, CsvOpt, ForceOpt, JobCpusOpt, JobGpusOpt, JsonOpt, RetriesOpt, check_outputs, executor_from, err, out, printed_warnings, write_csv, write_json


def _msa(record: dict[str, Any]) -> str:
    return " ".join(f"{s}:{m}" for s, m in record["msa"].items()) or "-"


def _value(record: dict[str, Any]) -> str:
    if record["failed"]:
        return "-"
    metric = record["metric"]
    metric_text = surgeon.viz.metric_text
    spread = f" \u00b1 {metric_text(metric, record['std'])}" if len(record["runs"]) > 1 else ""
    return metric_text(metric, record["mean"]) + spread


def _decision(record: dict[str, Any]) -> str:
    if record["failed"]:
        return f"[red]failed[/]: {record['reason']}"
    return "[green]accepted[/]" if record["accepted"] else "rejected"


def _table(records: list[dict[str, Any]]) -> Table:
    metric = records[0]["metric"] if records else "metric"
    table = Table(title="build-up search", title_justify="left")
    for name, justify in (("step", "right"), ("candidate", "left"), ("MSAs", "left"), (metric, "right"),
                          ("seeds", "right"), ("decision", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in records:
        table.add_row(str(r["step"]), r["id"], _msa(r), _value(r), str(len(r["runs"])), _decision(r))
    return table


def _finished(record: dict[str, Any]) -> None:
    out.print(f"step {record['step']}: {record['id']} ({_msa(record)}) {record['metric']} {_value(record)} "
              f"-> {_decision(record)}", highlight=False)


def search(
    spec: Annotated[Path, typer.Argument(help="search spec: .toml (build-up rules) or .py (own generator)",
                                         show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="the search's folder: results.jsonl, models, chart")],
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted search in --out")] = False,
    workers: Annotated[int, typer.Option("--workers", help="trainings of a step run at once in local processes")] = 1,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    job_cpus: JobCpusOpt = None,
    job_gpus: JobGpusOpt = 0,
    retries: RetriesOpt = 0,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run a build-up search (AlterNet's rules) from a search spec; resumable, parallel over local processes or a Ray cluster.

    Example: surgeon search recipes/digits_buildup.toml --out runs/digits --workers 2
    """
    check_outputs(json_out=json_out, csv_out=csv_out, force=force)
    try:
        with printed_warnings():
            ex = executor_from(backend, address, job_cpus, job_gpus, retries, workers=workers)
            run = surgeon.parallel.Run(executor=ex, resume=resume, progress=workers == 1 and backend == "local",
                                       callback=_finished)
            result = surgeon.run_search(spec, out_dir, run=run)
    except KeyboardInterrupt:
        err.print(f"interrupted: finished candidates and checkpoints are kept in {out_dir}; continue with the same "
                  "command and --resume", highlight=False)
        sys.exit(130)
    out.print(_table(result.records))
    best = result.best
    answer = f"best: {best['id']} ({_msa(best)})" if best else "no candidate was accepted"
    saved = f", model {result.out / 'best.safetensors'}" if best and best["model"] else ""
    out.print(f"{answer}{saved}; results {result.out / 'results.jsonl'}, chart {result.chart}", highlight=False)
    if result.input_size:
        out.print(f"input {'x'.join(map(str, result.input_size))} (every candidate trained and evaluated at it, "
                  "recorded in its file)", highlight=False)
    write_json(json_out, result.records)
    write_csv(csv_out, result.tidy())


def report(
    folder: Annotated[Path, typer.Argument(help="the --out folder of surgeon search", show_default=False)],
    chart: Annotated[Path | None, typer.Option("--out", "-o", help="where to draw the chart (default: FOLDER/buildup.png, redrawn)")] = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
) -> None:
    """Print a search's candidates and redraw its build-up chart.

    Example: surgeon report runs/digits --out buildup.png
    """
    check_outputs(chart, json_out, csv_out, force=force)
    result = surgeon.search.search_report(folder, chart=chart, overwrite=force)
    out.print(_table(result.records))
    out.print(f"chart: {result.chart}", highlight=False)
    write_json(json_out, result.records)
    write_csv(csv_out, result.tidy())
