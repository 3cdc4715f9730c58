"""`surgeon inspect MODEL`: the block graph as a table (or JSON)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

import surgeon

from .common import (ImgSizeOpt, InputSizeOpt, ModelArg, NumClassesOpt, PretrainedOpt, WeightsOpt, human, load, out,
                     parse_input_size)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape[1:])) if shape else "-"


def inspect(
    model: ModelArg,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the graph as JSON instead of tables")] = False,
) -> None:
    """Show MODEL as stem, stages of blocks and head: kinds, output shapes, params, FLOPs.

    Example: surgeon inspect resnet50 --input-size 3,160,160
    """
    size = parse_input_size(input_size)
    m = load(model, weights, pretrained, num_classes, img_size)
    g = surgeon.graph(m, input_size=size)
    data = g.to_dict()
    data["model"] = model
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title=f"{model}: blocks", title_justify="left")
    for col, justify in (("address", "left"), ("path", "left"), ("kind", "left"), ("output", "right"),
                         ("params", "right"), ("FLOPs", "right")):
        table.add_column(col, justify=justify)
    colour = {"msa": "magenta", "mlp": "cyan", "conv": "green", "downsample": "yellow"}
    for b in g.blocks:
        c = colour.get(b.kind)
        kind = f"[{c}]{b.kind}[/]" if c else b.kind
        table.add_row(b.address, b.path, kind, _shape(b.out_shape), human(b.params), human(b.flops))
    out.print(table)
    stages = Table(title="stages", title_justify="left")
    for col in ("stage", "blocks", "grid", "kinds", "params", "FLOPs"):
        stages.add_column(col, justify="left" if col in ("stage", "kinds") else "right")
    for name, s in data["stages"].items():
        grid = "x".join(map(str, s["grid"])) if s["grid"] else "-"
        kinds = ", ".join(f"{n} {k}" for k, n in s["kinds"].items())
        stages.add_row(name, str(s["blocks"]), grid, kinds, human(s["params"]), human(s["flops"]))
    out.print(stages)
    note = f" (fallback: {g.fallback_reason})" if g.fallback_reason else ""
    out.print(
        f"{model}: {human(data['params'])} params, {human(data['flops'])}FLOPs at "
        f"{'x'.join(map(str, g.input_size))}, {len(g.blocks)} blocks in {len(g.stages)} stages, "
        f"graph by {g.method}{note}",
        highlight=False,
    )
