"""`surgeon robustness` (CIFAR-10-C / ImageNet-C tables) and `surgeon frequency-noise` (Fig. 2b)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import surgeon

from surgeon.cli.common import AddressOpt, BackendOpt, CsvOpt, JobCpusOpt, JobGpusOpt, RetriesOpt, executor_from, DeviceOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, ModelArg, ModelsArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsListOpt, WeightsOpt, check_outputs, check_weights, input_size_used, label, load, out, parse_input_size, printed_warnings, write_csv, write_json, write_outputs
from surgeon.cli.curvature import BatchSizeOpt, DataOpt, JsonOpt, OutOpt

#: the default band centres: surgeon.evaluation.frequency_noise.FREQUENCIES, written out so that help needs no torch (a test
#: checks they agree)
FREQUENCIES_TEXT = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
BatchesOpt = Annotated[int | None, typer.Option("--batches", help="stop after N batches per cell (default: all the data)")]


def _corruption_table(res: surgeon.results.CorruptionResult, metric: str) -> Table:
    """Rows: corruptions, then the mean per severity; columns: severities, then the mean."""
    metric_text = surgeon.viz.metric_text
    unit = " (%)" if metric in surgeon.viz.PERCENT_METRICS else ""
    table = Table(title=f"{res.model}: {metric}{unit} under corruption, {res.source}; clean "
                        f"{metric_text(metric, res.clean[metric])} on {res.samples} images", title_justify="left")
    table.add_column("corruption")
    for s in res.severities:
        table.add_column(f"severity {s}", justify="right")
    table.add_column("mean", justify="right", style="bold")
    means = res.per_corruption(metric)
    for name, row in zip(res.corruptions, res.grid(metric)):
        table.add_row(name, *(metric_text(metric, v) for v in row), metric_text(metric, means[name]))
    table.add_section()
    table.add_row("mean", *(metric_text(metric, v) for v in res.per_severity(metric).values()),
                  metric_text(metric, res.mean(metric)), style="bold")
    return table


def robustness(
    model: ModelArg,
    data: DataOpt = "digits",
    corruptions: Annotated[str | None, typer.Option("--corruptions", "-c", help="comma-separated names (default: all made on the fly, or the 15 of the release)")] = None,
    severities: Annotated[str, typer.Option("--severities", "-s", help="comma-separated severities among 1..5")] = "1,2,3,4,5",
    preset: Annotated[str, typer.Option("--preset", help="constants of the corruptions made on the fly: auto | cifar | imagenet")] = "auto",
    cifar_c: Annotated[Path | None, typer.Option("--cifar-c", help="CIFAR-10-C / CIFAR-100-C folder (<corruption>.npy + labels.npy)")] = None,
    imagenet_c: Annotated[Path | None, typer.Option("--imagenet-c", help="ImageNet-C folder (<corruption>/<severity>/<class>/)")] = None,
    metric: Annotated[str, typer.Option("--metric", "-m", help="metric of the table and heat map: acc, nll, ece, brier, ...")] = "acc",
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    job_cpus: JobCpusOpt = None,
    job_gpus: JobGpusOpt = 0,
    retries: RetriesOpt = 0,
) -> None:
    """Metrics under every corruption and severity, made on the fly or read from CIFAR-10-C / ImageNet-C.

    Example: surgeon robustness resnet18 --num-classes 10 --input-size 3,32,32 -c gaussian_noise,fog --out c.png
    """
    names, levels = corruptions, severities  # lists without repeats (cli.ranges.LISTS)
    check_outputs(out_fig, json_out, csv_out, force=force)
    size = parse_input_size(input_size)
    source = surgeon.evaluation.CorruptionSource(preset, cifar_c, imagenet_c)
    surgeon.evaluation.robustness.check_corruption_args(names, levels, preset=preset, cifar_c=cifar_c, imagenet_c=imagenet_c)
    m = load(model, weights, pretrained, num_classes, img_size, seed=seed, device=device)
    size = input_size_used(m, size, model)
    with printed_warnings():
        loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=size)
        run = surgeon.parallel.Run(progress=True, executor=executor_from(backend, address, job_cpus, job_gpus, retries))
        res = surgeon.corruption_robustness(m, loader, names, levels, source=source, batches=batches, seed=seed, run=run)
    res.model = label(model)
    out.print(_corruption_table(res, metric))
    if out_fig is not None:
        fig = surgeon.viz.plot_corruptions(res, metric).figure
        out.print(f"wrote {surgeon.viz.save_figure(fig, out_fig, overwrite=True)}", highlight=False)
    write_json(json_out, res.to_dict())
    write_csv(csv_out, res.tidy())
    if res.interrupted:
        sys.exit(130)


def frequency_noise(
    models: ModelsArg,
    weights: WeightsListOpt = None,
    data: DataOpt = "digits",
    frequencies: Annotated[str, typer.Option("--frequencies", "-f", help="band centres, fractions of pi")] = FREQUENCIES_TEXT,
    eps: Annotated[float, typer.Option("--eps", help="noise amplitude before band filtering (pixels in [0, 1])")] = 0.1,
    width: Annotated[float, typer.Option("--width", help="half-width of the square frequency ring, fraction of pi")] = 0.2,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    job_cpus: JobCpusOpt = None,
    job_gpus: JobGpusOpt = 0,
    retries: RetriesOpt = 0,
) -> None:
    """Accuracy change under noise of one frequency band, per band (Fig. 2b), one curve per model.

    Example: surgeon frequency-noise resnet18 vit_tiny_patch16_224 --num-classes 10 --img-size 32 --input-size 3,32,32 --out f.png
    """
    check_weights(models, weights)
    freqs = surgeon.evaluation.frequency_noise.check_frequency_args(frequencies, eps=eps, width=width)  # a list (cli.ranges.LISTS)
    check_outputs(out_fig, json_out, csv_out, force=force)
    size = parse_input_size(input_size)
    table = Table(title=f"accuracy change (percentage points) under frequency-band noise, eps {eps:g}",
                  title_justify="left")
    table.add_column("model", no_wrap=True)
    for col in ("clean acc (%)", *(f"{f:.2g}\u03c0" for f in freqs)):
        table.add_column(col, justify="right")
    results = []
    for i, name in enumerate(models):
        m = load(name, weights[i] if weights else None, pretrained, num_classes, img_size, seed=seed, device=device)
        used = input_size_used(m, size, name)
        with printed_warnings():
            loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=used)
            run = surgeon.parallel.Run(progress=True,
                                       executor=executor_from(backend, address, job_cpus, job_gpus, retries))
            res = surgeon.frequency_noise_robustness(m, loader, freqs, eps=eps, width=width, batches=batches, seed=seed,
                                                     run=run)
        res.model = label(name)
        table.add_row(res.model, f"{100 * res.clean:.1f}", *(f"{100 * c:+.1f}" for c in res.change))
        results.append(res)
        if res.interrupted:
            break
    out.print(table)
    write_outputs(results, json_out, csv_out, out_fig, surgeon.viz.plot_frequency_noise)
