"""`surgeon inspect MODEL`: the block graph as a table (or JSON)."""

from __future__ import annotations

from rich.table import Table

import surgeon

from surgeon.cli.common import CsvOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JsonOpt, ModelArg, NumClassesOpt, PretrainedOpt, WeightsOpt, check_outputs, human, load, out, parse_input_size, plural, write_csv, write_json


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape[1:])) if shape else "-"


def print_graph(g: surgeon.blockgraph.BlockGraph, name: str) -> dict:
    """Print the block table, the stage table and a summary line; return the graph's data."""
    data = g.to_dict()
    table = Table(title=f"{name}: blocks", title_justify="left")
    for col, justify in (("address", "left"), ("path", "left"), ("kind", "left"), ("output", "right"),
                         ("params", "right"), ("FLOPs", "right")):
        table.add_column(col, justify=justify)
    for b in g.blocks:
        table.add_row(b.address, b.path, _kind(b.kind), _shape(b.out_shape), human(b.params), human(b.flops))
    out.print(table)
    stages = Table(title="stages", title_justify="left")
    for col in ("stage", "blocks", "grid", "kinds", "params", "FLOPs"):
        stages.add_column(col, justify="left" if col in ("stage", "kinds") else "right")
    for stage, s in data["stages"].items():
        grid = "x".join(map(str, s["grid"])) if s["grid"] else "-"
        kinds = ", ".join(f"{n} {k}" for k, n in s["kinds"].items())
        stages.add_row(stage, str(s["blocks"]), grid, kinds, human(s["params"]), human(s["flops"]))
    out.print(stages)
    note = f" (fallback: {g.fallback_reason})" if g.fallback_reason else ""
    out.print(
        f"{name}: {human(data['params'])} params, {human(data['flops'])}FLOPs at "
        f"{'x'.join(map(str, g.input_size))}, {plural(len(g.blocks), 'block')} in {plural(len(g.stages), 'stage')}, "
        f"graph by {g.method}{note}",
        highlight=False,
    )
    return data


def _kind(kind: str) -> str:
    colour = {"msa": "magenta", "mlp": "cyan", "conv": "green", "downsample": "yellow"}.get(kind)
    return f"[{colour}]{kind}[/]" if colour else kind


def inspect(
    model: ModelArg,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
) -> None:
    """Show MODEL as stem, stages of blocks and head: kinds, output shapes, params, FLOPs.

    MODEL may also be a .safetensors file written by surgeon. Example: surgeon inspect resnet50 --json -
    """
    check_outputs(json_out=json_out, csv_out=csv_out, force=force)
    size = parse_input_size(input_size)
    m = load(model, weights, pretrained, num_classes, img_size)
    g = surgeon.graph(m, input_size=size)
    print_graph(g, model)
    write_json(json_out, {**g.to_dict(), "model": model})
    write_csv(csv_out, [{"model": model, **row} for row in g.tidy()])
