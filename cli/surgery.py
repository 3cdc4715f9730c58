"""`surgeon alternate | lesion | insert | replace | info`: edit a model and save it with its provenance record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import surgeon
from surgeon.core.errors import SurgeonError

from surgeon.cli.common import CsvOpt, ForceOpt, ImgSizeOpt, InputSizeOpt, JsonOpt, ModelArg, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsOpt, check_outputs, human, load, out, parse_input_size, plural, select_blocks, write_csv, write_json
from surgeon.cli.inspect import _kind, print_graph

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output .safetensors file (weights + provenance record)")]
BlocksReqOpt = Annotated[str, typer.Option("--blocks", "-b", help="block selection: 'c3.b1', 'c3.b1,c4.b-1', 'c*.b-1', "
                                                                  "'kind:msa', module paths", show_default=False)]


def _module(model, path: str):
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _side(g: surgeon.blockgraph.BlockGraph, path: str, module) -> tuple[str, str, str, str]:
    """(address, kind, params, FLOPs) of the module at `path` in one graph: a removed block shows as
    identity with 0 parameters and FLOPs; a module that shares its graph block with others (an inserted
    smoothing layer) by its class name, FLOPs only where the block is that module alone."""
    if module is None:
        return "-", "-", "-", "-"
    block = next((b for b in g.blocks if path in b.members), None)
    address = block.address if block is not None else "-"
    if type(module).__name__ == "Identity":
        return address, "identity", "0", "0"
    if block is None or block.members != (path,):
        return address, type(module).__name__, human(_params(module)), "-"
    return address, _kind(block.kind), human(_params(module)), human(block.flops)


def changes(before: surgeon.blockgraph.BlockGraph, after: surgeon.blockgraph.BlockGraph) -> list[tuple[str, ...]]:
    """One row per block module that a pass removed, replaced, inserted or re-weighted, matched by module
    path (not by address, which shifts, nor by graph row, which may merge an identity into its neighbour):
    (address, path, kind before, kind after, params, FLOPs)."""
    rows = []
    paths = dict.fromkeys(m for g in (before, after) for b in g.blocks for m in b.members)
    for path in paths:
        a, z = _module(before.model, path), _module(after.model, path)
        if a is not None and z is not None and type(a) is type(z) and _params(a) == _params(z):
            continue
        (addr0, kind0, p0, f0), (addr1, kind1, p1, f1) = _side(before, path, a), _side(after, path, z)
        rows.append((addr0 if addr0 != "-" else addr1, path, kind0, kind1, f"{p0} -> {p1}", f"{f0} -> {f1}"))
    return rows


def latency_table(results) -> Table:
    """One row per (model, batch size): ms per batch, images/s, CUDA peak memory."""
    r0 = results[0]
    table = Table(title=f"prediction time on {r0.device}, input {'x'.join(map(str, r0.input_size))}, "
                        f"{r0.repeats} timed batches after {r0.warmup} warm-up"
                        + (f", MC dropout x{r0.mc_dropout}" if r0.mc_dropout else ""), title_justify="left")
    for col in ("model", "batch", "ms / batch", "images / s", "peak MiB"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for r in results:
        for row in r.rows:
            peak = f"{row.peak_memory_mib:.0f}" if row.peak_memory_mib is not None else "-"
            table.add_row(r.model, str(row.batch_size), f"{row.ms_mean:.2f} \u00b1 {row.ms_std:.2f}",
                          f"{row.images_per_s:.1f}", peak)
    return table


def _diff_and_save(before: surgeon.blockgraph.BlockGraph, model, name: str, out_path: Path, force: bool) -> None:
    """Print what changed (blocks, params, FLOPs), then write the file atomically."""
    after = surgeon.graph(model, input_size=before.input_size)
    rows = changes(before, after)
    table = Table(title=f"{name}: {plural(len(rows), 'changed block')}", title_justify="left")
    for col in ("address", "path", "before", "after", "params", "FLOPs"):
        table.add_column(col, justify="right" if col in ("params", "FLOPs") else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    p0, p1 = (_params(g.model) for g in (before, after))
    f0, f1 = (sum(b.flops for b in g.blocks) for g in (before, after))
    out.print(f"params {human(p0)} -> {human(p1)} ({100 * (p1 - p0) / p0:+.1f}%), "
              f"FLOPs {human(f0)} -> {human(f1)} ({100 * (f1 - f0) / max(f0, 1):+.1f}%) "
              f"at {'x'.join(map(str, before.input_size))}", highlight=False)
    path = surgeon.save(model, out_path, overwrite=force)
    out.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); rebuild with surgeon.load({str(path)!r})",
              highlight=False)


def alternate(
    model: ModelArg,
    out_path: OutOpt,
    stages: Annotated[Optional[str], typer.Option("--stages", help="c2,c3 (one MSA each) or c2=1,c3=1,c4=2")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="paper: MSAs (0,1,1,2), the paper's Alter-ResNet-50")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="heads in every MSA (default 3, 6, 12, 24 for c1..c4)")] = None,
    window: Annotated[Optional[int], typer.Option("--window", help="attention window (default: min(7, map size))")] = None,
    dim_head: Annotated[int, typer.Option("--dim-head", help="channels per head")] = 64,
    drop_path: Annotated[float, typer.Option("--drop-path", help="stochastic depth of the MSA branches")] = 0.0,
    cifar_stem: Annotated[bool, typer.Option("--cifar-stem", help="first a 3x3 stride-1 stem without max-pool "
                                                                  "(32 px inputs: stage maps 32/16/8/4)")] = False,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    show_latency: Annotated[bool, typer.Option("--latency", help="time both models (batch 1 and 16, 10 repeats: surgeon latency)")] = False,
) -> None:
    """Replace conv blocks with MSA blocks by the AlterNet build-up rules and save the result.

    Example: surgeon alternate resnet50 --stages c2,c3 --out alternet.safetensors
    The paper's CIFAR-100 Alter-ResNet-50: surgeon alternate resnetv2_50 --preset paper --cifar-stem
    --num-classes 100 --input-size 3,32,32 --window 4 --out alter50_c100.safetensors
    """
    surgeon.core.files.check_output(out_path, overwrite=force)  # refuse a bad path before any work
    model_kwargs: dict = {}
    if preset is not None:
        if preset not in surgeon.surgery.alternet.ALTERNETS:
            raise SurgeonError(f"unknown preset {preset!r}; presets: {', '.join(surgeon.surgery.alternet.ALTERNETS)}")
        if stages is not None:
            raise SurgeonError("give either --stages or --preset, not both")
        base, model_kwargs, preset_stages = surgeon.surgery.alternet.ALTERNETS[preset]
        if model != base:
            raise SurgeonError(f"preset {preset} is built on {base}; run: surgeon alternate {base} --preset {preset}")
        stages = ",".join(f"{k}={v}" for k, v in preset_stages.items())
    counts = surgeon.surgery.alternet.parse_stages(stages)
    size = parse_input_size(input_size)  # refused before the model is built
    m = load(model, weights, pretrained, num_classes, img_size, seed=seed, **model_kwargs)
    g = surgeon.graph(m, input_size=size)
    if cifar_stem:
        m = surgeon.surgery.alternet.cifar_stem(g)
        g = surgeon.graph(m, input_size=g.input_size)
    edited = surgeon.alternate(g, counts, heads=heads, window=window, dim_head=dim_head, drop_path=drop_path)
    _diff_and_save(g, edited, model, out_path, force)
    if show_latency:

        timed = [surgeon.latency(x, batch_size=16, input_size=g.input_size, repeats=10) for x in (g.model, edited)]
        timed[0].model, timed[1].model = f"{model} (before)", f"{out_path.stem} (after)"
        out.print(latency_table(timed))


def _edit_each(model: str, out_path: Path, force: bool, input_size: str | None, selection: str, edit,
               **load_args) -> None:
    """Load MODEL (`load_args`: weights, pretrained, num_classes, img_size, seed), apply
    `edit(model, module_path, input_size)` to each selected block (addressed by module path, so earlier
    edits cannot shift later addresses), print the change and save."""
    surgeon.core.files.check_output(out_path, overwrite=force)  # refuse a bad path before any work
    seed, size = load_args.pop("seed"), parse_input_size(input_size)  # a bad size refused before any work
    m = load(model, load_args.pop("weights"), load_args.pop("pretrained"), load_args.pop("num_classes"),
             load_args.pop("img_size"), seed=seed)
    g = surgeon.graph(m, input_size=size)
    edited = m
    for b in select_blocks(g, selection, model):
        edited = edit(edited, b.path, g.input_size)
    _diff_and_save(g, edited, model, out_path, force)


def lesion(
    model: ModelArg,
    out_path: OutOpt,
    blocks: BlocksReqOpt,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Remove blocks (each becomes the identity) and save the result.

    Example: surgeon lesion resnet50 --blocks c3.b2 --out lesioned.safetensors
    """
    _edit_each(model, out_path, force, input_size, blocks,
               lambda m, path, size: surgeon.remove(m, path, input_size=size),
               weights=weights, pretrained=pretrained, num_classes=num_classes, img_size=img_size, seed=seed)


def insert(
    model: ModelArg,
    out_path: OutOpt,
    after: Annotated[str, typer.Option("--after", help="block(s) to insert after, e.g. c*.b-1")],
    block: Annotated[str, typer.Option("--block", help="registered block type, e.g. smoothing")] = "smoothing",
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Insert a block (default: spatial smoothing) after each selected block and save the result.

    Example: surgeon insert resnet50 --after "c*.b-1" --block smoothing --out smooth.safetensors
    """
    _edit_each(model, out_path, force, input_size, after,
               lambda m, path, size: surgeon.insert(m, after=path, module=block, input_size=size),
               weights=weights, pretrained=pretrained, num_classes=num_classes, img_size=img_size, seed=seed)


def replace(
    model: ModelArg,
    out_path: OutOpt,
    blocks: BlocksReqOpt,
    with_: Annotated[str, typer.Option("--with", help="registered block type: msa, smoothing, identity, zero")],
    heads: Annotated[Optional[int], typer.Option("--heads", help="MSA heads")] = None,
    window: Annotated[Optional[int], typer.Option("--window", help="MSA window")] = None,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    input_size: InputSizeOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Replace blocks with a registered block type (an MSA block is sized to fit) and save the result.

    Example: surgeon replace resnet50 --blocks c3.b1 --with msa --heads 8 --out r.safetensors
    """
    kwargs = {k: v for k, v in (("heads", heads), ("window", window)) if v is not None}
    if kwargs and with_ != "msa":
        raise SurgeonError("--heads and --window apply to --with msa only")
    _edit_each(model, out_path, force, input_size, blocks,
               lambda m, path, size: surgeon.replace(m, path, with_, input_size=size, **kwargs),
               weights=weights, pretrained=pretrained, num_classes=num_classes, img_size=img_size, seed=seed)


def info(path: Annotated[Path, typer.Argument(help="a .safetensors file written by surgeon")],
         input_size: InputSizeOpt = None, json_out: JsonOpt = None, csv_out: CsvOpt = None,
         force: ForceOpt = False) -> None:
    """Show the provenance record (base, passes, training), parameter count and block table of a saved model.

    Example: surgeon info alternet.safetensors
    """
    check_outputs(json_out=json_out, csv_out=csv_out, force=force)
    record = surgeon.read_cfg(path)
    model = surgeon.load(path)
    base = record.base
    out.print(f"[bold]{path}[/]: surgeon {record.version}, base {base['spec']}"
              + "".join(f", {k}={v}" for k, v in base.items() if k != "spec" and v is not None))
    for i, p in enumerate(record.passes, 1):
        args = ", ".join(f"{k}={v}" for k, v in p.items() if k != "pass" and v not in (None, {}, []))
        out.print(f"  {i}. {p['pass']}({args})", highlight=False)
    trained = record.training
    if trained:  # written by surgeon train
        final = trained.get("final", {})
        score = f", test acc {100 * final['val_acc']:.2f}%" if final.get("val_acc") is not None else ""
        out.print(f"  trained on {trained['data']} for {trained['epochs_done']} epochs (seed {trained['seed']}"
                  f"{score}); recipe: " + ", ".join(f"{k}={v}" for k, v in trained["recipe"].items()), highlight=False)
    g = surgeon.graph(model, input_size=parse_input_size(input_size))
    print_graph(g, str(path))
    write_json(json_out, {**g.to_dict(), "model": str(path), "record": record.stored()})
    write_csv(csv_out, [{"model": str(path), **row} for row in g.tidy()])
