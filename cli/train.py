"""`surgeon train MODEL_OR_FILE --data D --out FILE`: the paper's training recipes, resumable, DDP-ready."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

import surgeon

from surgeon.cli.common import DeviceOpt, ForceOpt, ImgSizeOpt, NumClassesOpt, PretrainedOpt, SeedOpt, WeightsOpt, out, parse_input_size, printed_warnings

#: the preset training recipes, surgeon.training.recipe.RECIPES (written out so that help needs no torch; a test checks
#: they agree)
RECIPE_NAMES = ("strong", "strong-imagenet", "weak", "digits")

_SHOWN = (("lr", "{:.3e}"), ("train_loss", "{:.4f}"), ("train_acc", "{:.2%}"), ("val_acc", "{:.2%}"),
          ("val_nll", "{:.4f}"), ("val_ece", "{:.2%}"), ("images_per_s", "{:.0f}"))


def epoch_line(row: dict, total: int | None = None) -> str:
    """One finished epoch as one line: 'epoch 3/10: lr 1.250e-04, train loss 0.4321, ...' (NaN as '-')."""
    parts = [f"{k.replace('_', ' ')} " + ("-" if row[k] is None or row[k] != row[k] else f.format(row[k]))
             for k, f in _SHOWN if k in row]
    return f"epoch {row['epoch']}{f'/{total}' if total else ''}: " + ", ".join(parts)


def train(
    model: Annotated[str, typer.Argument(help="timm name, tv:NAME or a surgeon .safetensors file", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="trained model: .safetensors with its recipes; "
                                                                 "checkpoint and logs go to NAME.run/")],
    data: Annotated[str, typer.Option("--data", "-d", help="digits | cifar10:ROOT | cifar100:ROOT | IMAGEFOLDER")] = "digits",
    recipe: Annotated[str, typer.Option("--recipe", "-r", help=f"{' | '.join(RECIPE_NAMES)} | a TOML file")] = "strong",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="epochs after the warmup epochs (the recipe's by default)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="global batch; the lr scales with it")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate")] = None,
    val: Annotated[Optional[str], typer.Option("--val", help="validation data (default: the test split of digits/CIFAR; none: off)")] = None,
    subset: Annotated[Optional[float], typer.Option("--subset", help="class-balanced fraction of the training data, e.g. 0.06")] = None,
    download: Annotated[bool, typer.Option("--download", help="fetch CIFAR into its root when missing (online)")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue from NAME.run/checkpoint.pt")] = False,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    workers: Annotated[Optional[int], typer.Option("--workers", help="data loading processes")] = None,
    device: DeviceOpt = None,
    input_size: Annotated[Optional[str], typer.Option("--input-size", help="C,H,W of one input (default: the recipe's, else the model's)")] = None,
    weights: WeightsOpt = None,
    pretrained: PretrainedOpt = False,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    snapshots: Annotated[int, typer.Option("--snapshots", help="keep the weights every N epochs (and the first and last) "
                                                               "in NAME.run/snapshots/ for surgeon trajectory; 0: off")] = 0,
) -> None:
    """Train a model (or an edited one) with the paper's recipe; checkpoint every epoch.

    Example: surgeon train resnet18 --data digits --recipe digits --out r18.safetensors
    Multi-process: torchrun --nproc-per-node 2 -m surgeon.cli train resnet18 --data digits --out r18.safetensors
    """
    kwargs = {k: v for k, v in (("weights", weights), ("pretrained", pretrained or None), ("img_size", img_size))
              if v is not None}
    with printed_warnings():
        r = surgeon.training.recipe_with(recipe, epochs=epochs, batch_size=batch_size, lr=lr,
                                         input_size=parse_input_size(input_size))
        control = surgeon.parallel.Run(resume=resume, overwrite=force, workers=workers, download=download, device=device,
                                       progress=True, snapshots=snapshots,
                                       callback=lambda row: out.print(epoch_line(row), highlight=False))
        run = surgeon.train(model, data, recipe=r, out=out_path, val=val, subset=subset, seed=seed,
                            num_classes=num_classes, run=control, **kwargs)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if run.interrupted:
        out.print(f"interrupted: checkpoint in {run.run_dir}; continue with the same command and --resume",
                  highlight=False)
        sys.exit(130)
    out.print(f"wrote {run.out} (logs and checkpoint in {run.run_dir}/); load it with surgeon.load({str(run.out)!r})",
              highlight=False)
