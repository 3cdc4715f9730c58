"""`surgeon eval` and `surgeon lesion-study`: the paper's metrics of a model, and of the model with
each block removed in turn."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import surgeon
from surgeon.core.errors import SurgeonError

from surgeon.cli.common import BlocksOpt, CsvOpt, DeviceOpt, FigureOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JsonOpt, ModelArg, ModelsArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsListOpt, WeightsOpt, check_outputs, check_weights, input_size_used, label, load, out, parse_input_size, plural, printed_warnings, select_blocks, tidy_rows, write_csv, write_json, write_outputs

DataOpt = Annotated[str, typer.Option("--data", "-d", help="labelled test data: digits | cifar10:ROOT | cifar100:ROOT | IMAGEFOLDER")]
BatchesOpt = Annotated[int | None, typer.Option("--batches", help="stop after N batches (default: all the data)")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="images per batch")]
SubsetOpt = Annotated[float | None, typer.Option("--subset", help="keep a class-balanced fraction of the data, e.g. 0.1")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="data loading processes")]

#: (key in `EvaluationResult.metrics`, column name, shown as a percentage as in the paper's tables)
METRICS = (("acc", "Acc", True), ("top5", "Top-5", True), ("nll", "NLL", False), ("brier", "Brier", False),
           ("ece", "ECE", True), ("signed_ece", "signed ECE", True), ("acc90", "Acc-90", True),
           ("unc90", "Unc-90", True), ("freq90", "Freq-90", True), ("iou", "IoU", True), ("iou90", "IoU-90", True))


def _value(key: str, value: float, delta: bool = False) -> str:
    """A metric as the paper prints it: a percentage or a plain number (signed for a change); NaN as '-'."""
    if math.isnan(value):
        return "-"
    percent = next(p for k, _, p in METRICS if k == key)
    sign = "+" if delta or key == "signed_ece" else ""
    return f"{100 * value:{sign}.2f}%" if percent else f"{value:{sign}.4f}"


def evaluate(
    model: ModelArg,
    data: DataOpt = "digits",
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    batches: BatchesOpt = None,
    subset: SubsetOpt = None,
    mc_dropout: Annotated[int, typer.Option("--mc-dropout", help="average the softmax over N stochastic passes (0: off)")] = 0,
    nll: Annotated[str, typer.Option("--nll", help="sample: mean over samples | batch: the paper's mean of batch means")] = "sample",
    workers: WorkersOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    reliability: Annotated[Path | None, typer.Option("--reliability", help="reliability diagram file (.png, .svg, .pdf)")] = None,
    force: ForceOpt = False,
) -> None:
    """Accuracy, NLL, calibration and uncertainty metrics on the test split (PAPER.md, "Metrics").

    Example: surgeon eval resnet18 --num-classes 10 --weights r18.safetensors --data digits --input-size 3,32,32 --reliability rel.png
    """
    check_outputs(reliability, json_out, csv_out, force=force)
    size = parse_input_size(input_size)
    m = load(model, weights, pretrained, num_classes, img_size, seed=seed, device=device)
    size = input_size_used(m, size, model)
    with printed_warnings():
        loader = surgeon.data.loader(data, m, batch_size=batch_size, train=False, input_size=size,
                                     run=surgeon.parallel.Run(workers=workers), sampling=surgeon.data.Sampling(subset=subset))
        ev = surgeon.evaluate(m, loader, batches=batches, mc_dropout=mc_dropout, nll=nll, progress=True)
    name = label(model)
    table = Table(title=f"{name} on {data} (test split): {plural(ev.samples, 'image')} in {plural(ev.batches, 'batch')}"
                  + (f", MC dropout x{mc_dropout}" if mc_dropout else ""), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, col, _ in METRICS:
        table.add_row(col, _value(k, ev.metrics[k]))
    out.print(table)
    if reliability is not None:
        out.print(f"wrote {surgeon.viz.save_figure(surgeon.viz.plot_reliability(ev, [name]), reliability, overwrite=True)}",
                  highlight=False)
    write_json(json_out, {"model": name, "data": data, "split": "test", "mc_dropout": mc_dropout, "nll_mode": nll,
                           **ev.to_dict()})
    write_csv(csv_out, tidy_rows([ev], model=name, data=data))
    if ev.interrupted:
        sys.exit(130)


def _lesion_table(res: surgeon.results.LesionResult) -> Table:
    """The intact model, then one row per removed block: Acc, NLL, ECE and their changes."""
    table = Table(title=f"{res.model}: lesion study over {res.intact.samples} images", title_justify="left")
    for col in ("block", "path", "kind", "depth", "Acc", "\u0394Acc", "NLL", "\u0394NLL", "ECE"):
        table.add_column(col, justify="left" if col in ("block", "path", "kind") else "right")
    m = res.intact.metrics
    table.add_row("intact", "-", "-", "-", _value("acc", m["acc"]), "", _value("nll", m["nll"]), "",
                  _value("ece", m["ece"]), style="bold")
    for r in res.rows:
        table.add_row(r.address, r.path, r.kind, f"{r.depth:.2f}", _value("acc", r.metrics["acc"]),
                      _value("acc", r.delta["acc"], delta=True), _value("nll", r.metrics["nll"]),
                      _value("nll", r.delta["nll"], delta=True), _value("ece", r.metrics["ece"]))
    return table


def lesion_study(
    models: ModelsArg,
    data: DataOpt = "digits",
    blocks: BlocksOpt = "*",
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    batches: BatchesOpt = None,
    subset: SubsetOpt = None,
    workers: WorkersOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    out_fig: FigureOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
) -> None:
    """Remove each block in turn (it becomes the identity) and measure the loss of accuracy and NLL.

    Example: surgeon lesion-study resnet18 vit_tiny_patch16_224 --num-classes 10 --img-size 32 --input-size 3,32,32 --data digits --out lesions.png
    """
    check_weights(models, weights)
    check_outputs(out_fig, json_out, csv_out, force=force)
    size = parse_input_size(input_size)
    graphs = []  # every model loaded and its selection checked before the first evaluation
    for i, name in enumerate(models):
        m = load(name, weights[i] if weights else None, pretrained, num_classes, img_size, seed=seed, device=device)
        g = surgeon.graph(m, input_size=input_size_used(m, size, name))
        try:
            g.select(blocks)
        except SurgeonError as exc:
            raise SurgeonError(f"{label(name)}: {exc}") from None
        select_blocks(g, blocks, name)
        graphs.append(g)
    results = []
    for name, g in zip(models, graphs, strict=True):
        with printed_warnings():
            loader = surgeon.data.loader(data, g.model, batch_size=batch_size, train=False, input_size=g.input_size,
                                         run=surgeon.parallel.Run(workers=workers),
                                         sampling=surgeon.data.Sampling(subset=subset))
            res = surgeon.lesion_study(g, loader, blocks, batches=batches, progress=True)
        res.model = label(name)
        out.print(_lesion_table(res))
        for reason in res.skipped.values():
            out.print(f"[dim]skipped: {reason}[/]", highlight=False)
        results.append(res)
        if res.interrupted:
            break
    write_outputs(results, json_out, csv_out, out_fig, surgeon.viz.plot_lesions)
