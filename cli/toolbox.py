"""The rest of the paper's toolbox: `surgeon attack` (FGSM / PGD), `surgeon stability`
(CIFAR-10-P style), `surgeon ensemble`, `surgeon latency`, `surgeon localize` and
`surgeon trajectory` (Fig. 1b)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import surgeon
from surgeon.errors import SurgeonError
from surgeon.plots import plot_attack, save_figure

from .common import (
    ImgSizeOpt,
    InputSizeOpt,
    NumClassesOpt,
    PretrainedOpt,
    check_outputs,
    label,
    load,
    out,
    parse_input_size,
    printed_warnings,
    write_json,
)
from .curvature import BatchSizeOpt, DataOpt, JsonOpt, OutOpt
from .robustness import BatchesOpt, SeedOpt, _numbers

ModelsArg = Annotated[list[str], typer.Argument(help="one or more models: timm names, tv:NAME, surgeon files",
                                                show_default=False)]
WeightsListOpt = Annotated[list[Path] | None, typer.Option("--weights", "-w", help="local weights, once per model in order")]
McDropoutOpt = Annotated[int, typer.Option("--mc-dropout", help="average the softmax over N stochastic passes (0: off)")]


def _models(models: list[str], weights: list[Path] | None, pretrained: bool, num_classes: int | None,
            img_size: int | None):
    """Load each model in turn (one at a time: a list of big models need not fit in memory)."""
    if weights and len(weights) != len(models):
        raise SurgeonError(f"{len(weights)} --weights for {len(models)} models; give one --weights per model, in order")
    for i, name in enumerate(models):
        yield name, load(name, weights[i] if weights else None, pretrained, num_classes, img_size)


def attack(
    models: ModelsArg,
    data: DataOpt = "digits",
    method: Annotated[str, typer.Option("--attack", "-a", help="fgsm | pgd")] = "fgsm",
    eps: Annotated[str | None, typer.Option("--eps", help="comma-separated budgets, pixels in [0, 1] (default: 0.007 for fgsm, 0.3 for pgd)")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="PGD step size (pixels)")] = 2 / 255,
    steps: Annotated[int, typer.Option("--steps", help="PGD steps")] = 40,
    random_start: Annotated[bool, typer.Option("--random-start/--no-random-start", help="PGD: start at x + U(-eps, eps)")] = True,
    mc_dropout: McDropoutOpt = 0,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
) -> None:
    """Accuracy under FGSM / PGD attacks per eps, one curve per model.

    Example: surgeon attack resnet18 --num-classes 10 --input-size 3,32,32 --eps 0.002,0.004,0.008 --batches 2 --out a.png
    """
    budgets = _numbers(eps, float, "--eps", "0.002,0.004,0.008") if eps is not None else None
    if mc_dropout < 0:
        raise SurgeonError(f"--mc-dropout {mc_dropout} must be 0 (off) or a number of passes")
    check_outputs(out_fig, json_out)
    size = parse_input_size(input_size)
    results = []
    for name, m in _models(models, weights, pretrained, num_classes, img_size):
        with printed_warnings():
            loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=size)
            res = surgeon.adversarial_robustness(m, loader, method, budgets, alpha=alpha, steps=steps,
                                                 random_start=random_start, n_ff=max(1, mc_dropout), batches=batches,
                                                 seed=seed, progress=True)
        res.model = label(name)
        results.append(res)
        if res.interrupted:
            break
    r0 = results[0]
    table = Table(title=f"accuracy (%) under {r0.attack.upper()}" + (f", {r0.steps} steps of {r0.alpha:.4g}"
                  + (", random start" if r0.random_start else "") if r0.attack == "pgd" else "")
                  + f", {r0.samples} images", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    for e in r0.eps:
        table.add_column(f"\u03b5 {e:g}", justify="right")
    for r in results:
        table.add_row(r.model, f"{100 * r.clean['acc']:.1f}", *(f"{100 * a:.1f}" for a in r.accuracy))
    out.print(table)
    if out_fig is not None:
        out.print(f"wrote {save_figure(plot_attack(results).figure, out_fig)}", highlight=False)
    write_json(json_out, [r.to_dict() for r in results])
    if results[-1].interrupted:
        sys.exit(130)
