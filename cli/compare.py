"""`surgeon compare MODEL MODEL [MODEL...] --data DATA --out report/`: every measure of the paper on
every model, the claims table and a self-contained HTML report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import surgeon
from surgeon.core.errors import SurgeonError

from surgeon.cli.common import AddressOpt, BackendOpt, ForceOpt, InputSizeOpt, JobCpusOpt, JobGpusOpt, ModelsArg, NumClassesOpt, RetriesOpt, SeedOpt, executor_from, out, parse_input_size, printed_warnings, seed_everything


def _claims_table(cmp) -> Table:
    table = Table(title="claims", title_justify="left")
    for col in ("claim", "figure", *cmp.labels, "verdict"):
        table.add_column(col, justify="right" if col in cmp.labels else "left")
    for c in cmp.claims():
        vals = [("-" if c.values.get(lab) is None else f"{c.values[lab]:.3g}") for lab in cmp.labels]
        table.add_row(c.id, c.figure, *vals, c.verdict + (f" ({c.reason})" if c.reason else ""))
    return table


def compare(
    models: ModelsArg,
    data: Annotated[str, typer.Option("--data", "-d", help="labelled data: digits | cifar10:ROOT | cifar100:ROOT | IMAGEFOLDER")] = "digits",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="report folder: index.html, figures, CSV, results.json")] = Path("report"),
    measures: Annotated[Optional[str], typer.Option("--measures", "-m", help="comma-separated subset of: fourier, variance, hessian, landscape, frequency_noise, lesions")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="small sizes: a few minutes on a laptop CPU (default: the paper's sizes)")] = False,
    labels: Annotated[Optional[str], typer.Option("--labels", help="comma-separated model names for tables and figures")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue OUT/results.json, skipping finished (model, measure) pairs")] = False,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    job_cpus: JobCpusOpt = None,
    job_gpus: JobGpusOpt = 0,
    retries: RetriesOpt = 0,
) -> None:
    """Compare models with all of the paper's measures and check its claims; writes an HTML report.

    Example: surgeon compare resnet18 vit_tiny_patch16_224 --num-classes 10 --data digits --quick --out report/
    """
    from surgeon.comparison.compare import check_measures, model_labels

    chosen = check_measures((measures.split(",") if isinstance(measures, str) else list(measures)) if measures else None)
    names = (labels.split(",") if isinstance(labels, str) else list(labels)) if labels else None
    if backend == "local" and any(o is not None for o in (address, job_cpus)) or (backend == "local" and (job_gpus or retries)):
        raise SurgeonError("--address, --job-cpus, --job-gpus and --retries are Ray options; add --backend ray")
    ex = executor_from(backend, address, job_cpus, job_gpus, retries) if backend != "local" else None
    seed_everything(seed)

    def done(label: str, measure: str, seconds: float) -> None:
        out.print(f"{label}: {measure} done in {seconds:.1f} s", highlight=False)

    settings = (surgeon.comparison.QUICK if quick else surgeon.comparison.PAPER).replace(
        input_size=parse_input_size(input_size))
    run = surgeon.parallel.Run(resume=resume, overwrite=force, executor=ex, progress=True, callback=done)
    labelled = dict(zip(model_labels(models, names), models))  # one label per model (refused otherwise)
    with printed_warnings():
        cmp = surgeon.compare(labelled, data, out_dir, measures=chosen, settings=settings, num_classes=num_classes,
                              seed=seed, run=run)
    index = cmp.report(out_dir)
    out.print(_claims_table(cmp))
    out.print(f"wrote {index} (open it in a browser), figures, claims.csv, measures.csv, results.json",
              highlight=False)
    if cmp.interrupted:
        out.print(f"interrupted: rerun with --resume to finish {out_dir}", highlight=False)
        sys.exit(130)
