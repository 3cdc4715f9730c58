"""`surgeon hessian` and `surgeon landscape`: curvature of the training objective."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

import surgeon

from surgeon.cli.common import L2_DEFAULT, AddressOpt, BackendOpt, BlocksOpt, CsvOpt, DeviceOpt, FigureOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JobCpusOpt, JobGpusOpt, JsonOpt, RetriesOpt, executor_from, L2Opt, ModelArg, ModelsArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsListOpt, WeightsOpt, check_blocks, check_outputs, check_weights, input_size_used, label, load, out, parse_input_size, plural, printed_warnings, write_csv, write_json

DataOpt = Annotated[str, typer.Option("--data", "-d", help="labelled data: digits | cifar10:ROOT | cifar100:ROOT | IMAGEFOLDER")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="images per mini-batch")]
AugmentOpt = Annotated[bool, typer.Option("--augment", help="training augmentation: RandAugment, crop, flip, Mixup/CutMix, label smoothing")]
WdOpt = Annotated[float, typer.Option("--wd", help="weight of the L2 term")]
OutOpt = FigureOpt  # the shared definitions, under the names other command modules import


def _batches(model, data: str, batch_size: int, input_size, augment: bool, seed: int):
    """Labelled training batches for `model`: clean, or augmented as in training (frozen per solve)."""
    import torch

    torch.manual_seed(seed)
    if not augment:
        return surgeon.data.loader(data, model, batch_size=batch_size, train=True,
                                   sampling=surgeon.data.Sampling(shuffle=True, seed=seed), input_size=input_size)
    g = surgeon.graph(model, input_size=input_size)
    loader = surgeon.data.loader(data, model, batch_size=batch_size, train=True,
                                 sampling=surgeon.data.Sampling(shuffle=True, seed=seed),
                                 transform=surgeon.data.train_transform(model, input_size=g.input_size))
    return surgeon.data.mixed(loader, g.blocks[-1].out_shape[-1])


def hessian(
    models: ModelsArg,
    weights: WeightsListOpt = None,
    data: DataOpt = "digits",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="eigenvalues per mini-batch")] = 5,
    which: Annotated[str, typer.Option("--which", help="LM (largest magnitude) | LA (largest) | SA (smallest)")] = "LM",
    batches: Annotated[int, typer.Option("--batches", help="mini-batches, one eigen-solve each")] = 4,
    batch_size: BatchSizeOpt = 64,
    blocks: BlocksOpt = "*",
    method: Annotated[str, typer.Option("--method", help="lanczos | power (the paper's power iteration)")] = "lanczos",
    tol: Annotated[Optional[float], typer.Option("--tol", help="relative residual to stop at (lanczos 1e-4, power 1e-3)")] = None,
    trace: Annotated[bool, typer.Option("--trace", help="also tr(H) by Hutch++ on the first batch")] = False,
    matvecs: Annotated[int, typer.Option("--matvecs", help="Hessian-vector products for --trace")] = 60,
    density: Annotated[bool, typer.Option("--density", help="also the SLQ eigenvalue density on the first batch")] = False,
    augment: AugmentOpt = False,
    wd: WdOpt = 0.0,
    l2: L2Opt = L2_DEFAULT,
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
    """Top-k Hessian eigenvalues per mini-batch, pooled into the paper's spectrum (Fig. 1c, 4).

    Example: surgeon hessian resnet18 --num-classes 10 --input-size 3,32,32 --out spectrum.png
    """
    check_weights(models, weights)
    check_outputs(out_fig, json_out, csv_out, force=force)
    size, objective = parse_input_size(input_size), surgeon.analysis.Objective(wd=wd, l2=l2)  # before any model loads
    spectra, extras, solver = [], [], surgeon.analysis.Solver(method=method, tol=tol)
    for i, name in enumerate(models):
        m = load(name, weights[i] if weights else None, pretrained, num_classes, img_size, seed=seed, device=device)
        used = input_size_used(m, size, name)
        check_blocks(m, blocks, name, size)
        with printed_warnings():
            run = surgeon.parallel.Run(progress=True, executor=executor_from(backend, address, job_cpus, job_gpus, retries))
            spec = surgeon.hessian_spectrum(m, _batches(m, data, batch_size, used, augment, seed), top_k,
                                            batches=batches, which=which, blocks=blocks, solver=solver,
                                            objective=objective, seed=seed, run=run)
        spec.model = label(name)
        _print_spectrum(spec, top_k, which)
        extras.append(_first_batch_extras(m, lambda: next(iter(_batches(m, data, batch_size, used, augment, seed))), blocks,
                                          trace=trace, density=density, matvecs=matvecs, seed=seed, objective=objective))
        spectra.append(spec)
        if spec.interrupted:
            break
    _write_spectra(spectra, extras, out_fig, json_out, csv_out)
    if spectra[-1].interrupted:
        sys.exit(130)


def _print_spectrum(spec: Any, top_k: int, which: str) -> None:
    """The spectrum as a table: per batch its loss, eigenvalues and largest residual; then the cost."""
    table = Table(title=f"{spec.model}: top-{top_k} ({which}) Hessian eigenvalues", title_justify="left")
    for col in ("batch", "loss", "eigenvalues", "max residual"):
        table.add_column(col, justify="left" if col == "eigenvalues" else "right")
    for b, (vals, res, loss) in enumerate(zip(spec.eigenvalues, spec.residuals, spec.losses)):
        table.add_row(str(b), f"{loss:.4f}", "  ".join(f"{v:+.4g}" for v in vals), f"{res.max():.1e}")
    out.print(table)
    out.print(f"{spec.hvps} Hessian-vector products", highlight=False)


def _write_spectra(spectra: list[Any], extras: list[dict[str, Any]], out_fig: Path | None, json_out: Path | None,
                   csv_out: Path | None) -> None:
    """The figure (spectra, with the densities where computed), the JSON (each spectrum's dict with
    its extras by name) and the tidy CSV rows (each extra's rows tagged with the model)."""
    if out_fig is not None:
        fig = surgeon.viz.spectrum_figure(spectra, [e.get("density") for e in extras])
        out.print(f"wrote {surgeon.viz.save_figure(fig, out_fig, overwrite=True)}", highlight=False)
    write_json(json_out, [{**s.to_dict(), **{k: v.to_dict() for k, v in e.items()}} for s, e in zip(spectra, extras)])
    write_csv(csv_out, [row for s, e in zip(spectra, extras)
                        for row in (*s.tidy(), *({"model": s.model, **r} for v in e.values() for r in v.tidy()))])


def _first_batch_extras(m: Any, first_batch: Callable[[], Any], blocks: str, *, trace: bool, density: bool,
                        matvecs: int, seed: int, objective: Any) -> dict[str, Any]:
    """``--trace`` (Hutch++, printed) and ``--density`` (SLQ) on the first batch, by name; the
    batch is drawn (`first_batch`) only when one of them is asked."""
    extra: dict[str, Any] = {}
    first = first_batch() if trace or density else None
    if trace:
        t = surgeon.hessian_trace(m, first, blocks, matvecs=matvecs, seed=seed, objective=objective)
        out.print(f"trace (Hutch++, {t.hvps} products): {t.value:.6g} +- {t.stderr:.2g}", highlight=False)
        extra["trace"] = t
    if density:
        extra["density"] = surgeon.hessian_density(m, first, blocks, seed=seed, objective=objective)
    return extra


def landscape(
    model: ModelArg,
    weights: WeightsOpt = None,
    data: DataOpt = "digits",
    grid: Annotated[int, typer.Option("--grid", help="points per axis")] = 21,
    span: Annotated[float, typer.Option("--range", help="coordinates run over [-range, range]")] = 1.0,
    dims: Annotated[int, typer.Option("--dims", help="1 (profile) or 2 (surface)")] = 2,
    norm: Annotated[str, typer.Option("--norm", help="filter (Li et al.) | dim0 (the paper's code)")] = "filter",
    batches: Annotated[int, typer.Option("--batches", help="mini-batches per point (more: smaller standard error)")] = 1,
    batch_size: BatchSizeOpt = 64,
    augment: AugmentOpt = False,
    wd: WdOpt = 0.0,
    l2: L2Opt = L2_DEFAULT,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="keep finished points here and resume from it (default: landscape.json)")] = None,
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
    """The loss landscape on random filter-normalised directions (Fig. 1a), resumable.

    Example: surgeon landscape resnet18 --num-classes 10 --input-size 3,32,32 --grid 11 --out landscape.png
    """
    check_outputs(out_fig, json_out, csv_out, force=force)
    objective = surgeon.analysis.Objective(wd=wd, l2=l2)  # --wd and --l2 checked before any model is loaded
    lattice = surgeon.analysis.Lattice(dims=dims, grid=grid, span=span, norm=norm)
    save = save or Path("landscape.json")
    surgeon.core.files.check_output(save, overwrite=True, suffixes=(".json",))  # an existing one is resumed
    m = load(model, weights, pretrained, num_classes, img_size, seed=seed, device=device)
    size = input_size_used(m, parse_input_size(input_size), model)
    with printed_warnings():
        run = surgeon.parallel.Run(progress=True, executor=executor_from(backend, address, job_cpus, job_gpus, retries))
        res = surgeon.landscape(m, _batches(m, data, batch_size, size, augment, seed), lattice=lattice, batches=batches,
                                objective=objective, seed=seed, save=save, run=run)
    res.model = label(model)
    centre = res.loss[(grid // 2,) * dims]
    cost = (f"{res.seconds_per_point:.3g} s per point = {res.seconds_per_point / res.eval_seconds:.2f}x an eval pass "
            f"over the same {plural(batches, 'batch', 'batches')}"
            if res.seconds_per_point > 0 and res.eval_seconds > 0 else f"every point read from {save}")
    done = [float(v) for v in res.loss.flat if v == v]  # NaN: a point not computed yet
    out.print(f"{res.model}: {res.done}/{res.loss.size} points, loss at the centre {centre:.4f}, "
              f"min {min(done):.4f}, max {max(done):.4f}; {cost}", highlight=False)
    out.print(f"points kept in {save}", highlight=False)
    if out_fig is not None:
        out.print(f"wrote {surgeon.viz.save_figure(surgeon.viz.plot_landscape(res), out_fig, overwrite=True)}", highlight=False)
    write_json(json_out, res.to_dict())
    write_csv(csv_out, res.tidy())
    if res.interrupted:
        sys.exit(130)
