"""`surgeon probe fourier | variance | stats | norm MODEL [MODEL ...]`: the paper's feature-map analyses."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

import surgeon
from surgeon.core.errors import SurgeonError

from surgeon.cli.common import BlocksOpt, CsvOpt, DeviceOpt, FigureOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JsonOpt, ModelsArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsListOpt, check_blocks, check_outputs, check_weights, input_size_used, label, load, out, parse_input_size, printed_warnings, write_outputs

_COLUMNS = {
    "fourier": (("\u0394logamp(last)", lambda v: f"{v['fourier'].high:+.3f}"),
                ("at \u03c9", lambda v: surgeon.analysis.probes.format_omega(v["fourier"].high_omega))),
    "variance": (("variance", lambda v: f"{v['variance']:.4g}"),),
    "norm": (("mean ‖x‖₂", lambda v: f"{v['norm']:.4g}"),),
    "stats": (("mean", lambda v: f"{v['stats'].mean:+.3g}"), ("std", lambda v: f"{v['stats'].std:.3g}"),
              ("max|x|", lambda v: f"{v['stats'].absmax:.3g}"), ("zeros", lambda v: f"{100 * v['stats'].zeros:.1f}%"),
              ("NaN/Inf", lambda v: str(v["stats"].nonfinite))),
}


def _table(res: surgeon.results.ProbeResult, kind: str) -> Table:
    table = Table(title=f"{res.model}: {kind} over {res.samples} images", title_justify="left")
    for col in ("block", "kind", "depth", "grid", *(c for c, _ in _COLUMNS[kind])):
        table.add_column(col, justify="left" if col in ("block", "kind") else "right")
    reasons = {u.block.address: u.reason for u in res.unmeasured if u.probe == kind}
    for b in res.graph.blocks:
        v = res.values.get(b.address, {})
        grid = "x".join(map(str, b.grid)) if b.grid else "-"
        if kind in v:
            table.add_row(b.address, b.kind, f"{b.depth:.2f}", grid, *(f(v) for _, f in _COLUMNS[kind]))
        elif b.address in reasons:  # listed with the reason, never dropped
            cells = [f"- ({reasons[b.address]})"] + ["-"] * (len(_COLUMNS[kind]) - 1)
            table.add_row(b.address, b.kind, f"{b.depth:.2f}", grid, *cells, style="dim")
    return table


def probe(
    kind: Annotated[str, typer.Argument(help="fourier | variance | stats | norm", show_default=False)],
    models: ModelsArg,
    weights: WeightsListOpt = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="samples (built-in photos) | digits | cifar10:ROOT | cifar100:ROOT | FOLDER")] = None,
    blocks: BlocksOpt = "*",
    batches: Annotated[Optional[int], typer.Option("--batches", help="stop after N batches (default: all the data)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per batch")] = 32,
    full: Annotated[bool, typer.Option("--full", help="fourier: also the 2-D mean log-amplitude map and radial spectrum (JSON)")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="fourier: the exact spectrum, entries 0..N/2 at their true frequencies 2\u03c0k/N (the Nyquist entry at \u03c0); default: the paper notebook's 0..N/2-1 spread over 0..\u03c0")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="run the model through torch.compile")] = False,
    out_fig: FigureOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="data loading processes")] = None,
) -> None:
    """Probe every selected block while images stream through: Fourier (Fig. 2a, 8), variance (Fig. 9), stats.

    Example: surgeon probe fourier resnet50 vit_tiny_patch16_224 --out fourier.png
    """
    check_weights(models, weights)
    check_outputs(out_fig, json_out, csv_out, force=force)
    if exact and kind != "fourier":
        raise SurgeonError(f"--exact applies to the fourier probe only, not {kind}; drop --exact")
    if full and kind != "fourier":
        raise SurgeonError(f"--full applies to the fourier probe only, not {kind}; drop --full")
    spec = surgeon.analysis.reductions.Fourier(full=full, exact=exact) if kind == "fourier" else kind
    results = []
    for i, name in enumerate(models):
        m = load(name, weights[i] if weights else None, pretrained, num_classes, img_size, seed=seed, device=device)
        size = input_size_used(m, parse_input_size(input_size), name)
        check_blocks(m, blocks, name, size)
        with printed_warnings():
            loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=size,
                                         run=surgeon.parallel.Run(workers=workers))
            res = surgeon.probe(m, loader, spec, blocks, batches=batches, compile=compile_, progress=True)
        res.model = label(name)
        out.print(_table(res, kind))
        if (note := res.unmeasured_note()) is not None:
            out.print(note, highlight=False)
        results.append(res)
        if res.interrupted:
            break
    write_outputs(results, json_out, csv_out, out_fig, lambda rs: surgeon.viz.probe_figure(rs, kind))
