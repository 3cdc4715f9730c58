"""The rest of the paper's toolbox: `surgeon attack` (FGSM / PGD), `surgeon stability`
(CIFAR-10-P style), `surgeon ensemble`, `surgeon latency`, `surgeon localize` and
`surgeon trajectory` (Fig. 1b)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import surgeon
from surgeon.core.errors import SurgeonError

from surgeon.cli.common import BlocksOpt, CsvOpt, DeviceOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JsonOpt, ModelsArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsListOpt, WeightsOpt, check_outputs, check_weights, input_size_used, label, load, out, parse_input_size, printed_warnings, resolve_device, seed_everything, select_blocks, tidy_rows, write_csv, write_json, write_outputs
from surgeon.cli.curvature import BatchSizeOpt, DataOpt, OutOpt
from surgeon.cli.robustness import BatchesOpt
from surgeon.cli.surgery import _diff_and_save, latency_table

McDropoutOpt = Annotated[int, typer.Option("--mc-dropout", help="average the softmax over N stochastic passes (0: off)")]


def _models(models: list[str], weights: list[Path] | None, pretrained: bool, num_classes: int | None,
            img_size: int | None, seed: int | None = None, device: str | None = "cpu"):
    """Load each model in turn (one at a time: a list of big models need not fit in memory), each
    initialised with `seed` (as in every command: one name, one random-init model) and moved to `device`."""
    check_weights(models, weights)
    for i, name in enumerate(models):
        yield name, load(name, weights[i] if weights else None, pretrained, num_classes, img_size, seed=seed,
                         device=device)


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
    device: DeviceOpt = None,
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
) -> None:
    """Accuracy under FGSM / PGD attacks per eps, one curve per model.

    Example: surgeon attack resnet18 --num-classes 10 --input-size 3,32,32 --eps 0.002,0.004,0.008 --batches 2 --out a.png
    """
    budgets = eps  # a list without repeats (cli.ranges.LISTS)
    check_outputs(out_fig, json_out, csv_out, force=force)
    size, _ = parse_input_size(input_size), resolve_device(device)  # refused in one line before any work
    check_weights(models, weights)
    settings = surgeon.evaluation.Attack(method, alpha, steps, random_start)
    results = []
    for name, m in _models(models, weights, pretrained, num_classes, img_size, seed, device):
        used = input_size_used(m, size, name)
        surgeon.evaluation.metrics.check_mc_dropout(m, mc_dropout)
        with printed_warnings():
            loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=used)
            res = surgeon.adversarial_robustness(m, loader, settings, budgets, n_ff=max(1, mc_dropout),
                                                 batches=batches, seed=seed, progress=True)
        res.model = label(name)
        results.append(res)
        if res.interrupted:
            break
    _print_attack(results)
    write_outputs(results, json_out, csv_out, out_fig, surgeon.viz.plot_attack)


def _print_attack(results: list[Any]) -> None:
    """The accuracy (%) of every model, clean and per eps, titled with the attack's settings."""
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


def ensemble(
    models: ModelsArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="the ensemble's surgeon file (.safetensors)", show_default=False)],
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Save the ensemble of MODELS (log of their mean softmax) as one surgeon file listing its members.

    --seed seeds the random initialisation once, before the first member: random-init members of one
    architecture differ, and the same command gives the same ensemble.

    Example: surgeon ensemble a.safetensors b.safetensors --out ens.safetensors
    """
    surgeon.core.files.check_output(out_path, overwrite=force)  # refuse a bad path before any work
    size = parse_input_size(input_size)
    check_weights(models, weights)
    seed_everything(seed)
    members = [m for _, m in _models(models, weights, pretrained, num_classes, img_size)]
    ens = surgeon.ensemble(members, input_size=size, sources=[n if n.endswith(".safetensors") else None for n in models])
    surgeon.save(ens, out_path, overwrite=force)
    params = sum(p.numel() for p in ens.parameters())
    out.print(f"wrote {out_path}: {len(members)} members ({', '.join(label(n) for n in models)}), "
              f"{params / 1e6:.2f}M parameters, input {'x'.join(map(str, ens.input_size))}, "
              f"{ens.num_classes} classes", highlight=False)


def latency(
    models: ModelsArg,
    batch_size: Annotated[int, typer.Option("--batch-size", help="the second batch size timed (batch 1 is always timed)")] = 64,
    repeats: Annotated[int, typer.Option("--repeats", help="timed batches per batch size")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed batches first")] = 3,
    mc_dropout: McDropoutOpt = 0,
    device: DeviceOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
) -> None:
    """Prediction latency (ms per batch, mean +- std) and throughput at batch 1 and --batch-size.

    Example: surgeon latency resnet18 vit_tiny_patch16_224 --batch-size 8 --repeats 5 --input-size 3,64,64 --img-size 64
    """
    check_outputs(None, json_out, csv_out, force=force)
    size, _ = parse_input_size(input_size), resolve_device(device)  # refused in one line before any work
    check_weights(models, weights)
    results = []
    for name, m in _models(models, weights, pretrained, num_classes, img_size, device=device):
        res = surgeon.latency(m, batch_size=batch_size, input_size=size, repeats=repeats, warmup=warmup,
                              mc_dropout=mc_dropout)
        res.model = label(name)
        results.append(res)
        del m
    out.print(latency_table(results))
    write_json(json_out, [r.to_dict() for r in results])
    write_csv(csv_out, tidy_rows(results))


def localize(
    model: Annotated[str, typer.Argument(help="a timm ViT (name or surgeon file)", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="output .safetensors file (weights + recipe)", show_default=False)],
    kernel: Annotated[int, typer.Option("--kernel", "-k", help="odd side of the neighbourhood, in tokens")] = 3,
    blocks: BlocksOpt = "kind:msa",
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Restrict ViT self-attention to k x k token neighbourhoods (the paper's locality experiment) and save;
    --blocks selects the MSA blocks made local.

    Example: surgeon localize vit_tiny_patch16_224 --kernel 3 --out local.safetensors
    """
    surgeon.core.files.check_output(out_path, overwrite=force)  # refuse a bad path before any work
    size = parse_input_size(input_size)
    m = load(model, weights, pretrained, num_classes, img_size, seed=seed)
    g = surgeon.graph(m, input_size=size)
    select_blocks(g, blocks, model)
    _diff_and_save(g, surgeon.localize(g, blocks, kernel=kernel), model, out_path, force)


def trajectory(
    runs: Annotated[list[Path], typer.Argument(help="run folders (NAME.run) or their model files, trained with --snapshots", show_default=False)],
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
) -> None:
    """Optimisation trajectories in weight space (Fig. 1b): distance from the initial weights and
    angle to the final direction per snapshot, one polar curve per run.

    Example: surgeon trajectory r18.run vit.run --out traj.png
    """
    from surgeon.analysis.trajectory import EXCLUDED, run_folder

    check_outputs(out_fig, json_out, csv_out, force=force)
    folders: dict = {}
    for r in runs:  # r18.run and r18.safetensors name one run: it would be drawn twice
        first = folders.setdefault(run_folder(r).resolve(), r)
        if first is not r:
            raise SurgeonError(f"RUNS {first} and {r} are the same run ({run_folder(r)}); give each run once")
    results = [surgeon.trajectory(r) for r in runs]
    table = Table(title="trajectory: r = ||\u03b8\u209c \u2212 \u03b8\u2080||, \u03c6 = angle to \u03b8_T \u2212 \u03b8\u2080 "
                        f"(trainable parameters; excluded: {EXCLUDED})", title_justify="left")
    for col in ("run", "parameters", "epochs", "r", "\u03c6 (deg)"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in results:
        r.run = _run_label(r.run)
        table.add_row(r.run, f"{r.parameters:,}", " ".join(map(str, r.epochs)), " ".join(f"{v:.3g}" for v in r.radii),
                      " ".join(f"{v:.1f}" for v in r.angles))
    out.print(table)
    write_outputs(results, json_out, csv_out, out_fig, surgeon.viz.plot_trajectories)


def _run_label(run: str) -> str:
    """A run in tables and CSV rows: ``runs/r18.run`` and ``runs/r18.safetensors`` are both ``r18``."""
    path = Path(run)
    return path.stem if path.suffix in (".run", ".safetensors") else path.name


def stability(
    models: ModelsArg,
    data: DataOpt = "digits",
    perturbations: Annotated[str | None, typer.Option("--perturbations", "-p", help="comma-separated types (default: translate and the noises made on the fly, or every CIFAR-10-P file)")] = None,
    cifar_p: Annotated[Path | None, typer.Option("--cifar-p", help="CIFAR-10-P folder (<type>.npy, read memory-mapped) instead of sequences made on the fly")] = None,
    mc_dropout: McDropoutOpt = 0,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    out_fig: OutOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    force: ForceOpt = False,
    weights: WeightsListOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
) -> None:
    """Prediction stability along perturbation sequences (CIFAR-10-P style): consistency, CEC, flip probability.

    Example: surgeon stability resnet18 --num-classes 10 --input-size 3,32,32 -p translate,gaussian_noise --batches 2
    """
    names = perturbations  # a list without repeats (cli.ranges.LISTS), or None
    check_outputs(out_fig, json_out, csv_out, force=force)
    size, _ = parse_input_size(input_size), resolve_device(device)  # refused in one line before any work
    check_weights(models, weights)
    surgeon.evaluation.stability.check_perturbations(names, cifar_p)
    results = []
    for name, m in _models(models, weights, pretrained, num_classes, img_size, seed, device):
        used = input_size_used(m, size, name)
        with printed_warnings():
            loader = surgeon.data.loader(data, m, batch_size=batch_size, input_size=used) if cifar_p is None else None
            source = surgeon.evaluation.PerturbationSource(cifar_p, batch_size, used)
            res = surgeon.perturbation_stability(m, loader, names, source=source, mc_dropout=mc_dropout,
                                                 batches=batches, seed=seed, progress=True)
        res.model = label(name)
        results.append(res)
        if res.interrupted:
            break
    table = Table(title=f"stability on {results[0].source}, {results[0].samples} images: consistency / CEC / "
                        "flip probability (%)", title_justify="left")
    table.add_column("model", no_wrap=True)
    for n in results[0].perturbations:
        table.add_column(n, justify="right")
    table.add_column("mean FP", justify="right", style="bold")
    for r in results:
        table.add_row(r.model, *(f"{100 * r.metrics[n]['consistency']:.1f} / {r.metrics[n]['cec']:.3f} / "
                                 f"{100 * r.metrics[n]['flip_probability']:.1f}" for n in r.perturbations),
                      f"{100 * r.mean_flip_probability:.1f}")
    out.print(table)
    write_outputs(results, json_out, csv_out, out_fig, surgeon.viz.plot_stability)
