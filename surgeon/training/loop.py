"""Training: the loop that runs a recipe, resumable, single process or DDP.

    run = surgeon.train("resnet18", "digits", recipe=recipe_with("digits", epochs=5), out="r18.safetensors")
    run.model, run.history[-1]["val_acc"]

    torchrun --nproc-per-node 2 -m surgeon.cli.main train resnet18 --data digits --recipe digits --out r18.safetensors

The recipes and their presets are `surgeon.training.recipe`; the seeded, sharded data and fixed
numerics that make a resumed run equal an uninterrupted one `surgeon.training.sampling`; setting a
run up `surgeon.training.setup`; its checkpoint, logs and snapshots `surgeon.training.checkpoints`.
BatchNorm statistics, Mixup pairs and stochastic depth draws stay per process under DDP, as in timm.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from surgeon.core import checks
from surgeon.data import datasets as sdata
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.evaluation.evaluate import evaluate
from surgeon.model.runtime import StepBoundaries, model_device, restored_modes
from surgeon.model.weights import save
from surgeon.core.jsonio import plain
from surgeon.core.progress import progress as progress_bar
from surgeon.core.runfolder import run_dir_for, undo_on_failure
from surgeon.core.tables import Tabular
from surgeon.training.checkpoints import (_check_snapshots, _checkpoint, _close_writer, _open_folder, _resume,
                                          _run_started, _run_target, _snapshot, _write_logs)
from surgeon.training.recipe import Recipe, lr_at, recipe_with
from surgeon.training.sampling import _mix_seed
from surgeon.training.setup import _build, _data, _distributed, _optimisation, default_val_spec
from surgeon.parallel.run import Run
from surgeon._compat import moved_keywords, options_from
from surgeon.training.state import _Run, _fresh_sums


__all__ = ["Diverged", "TrainResult", "run_dir_for", "train"]


class Diverged(SurgeonError):
    """The training loss became NaN or infinite (the checkpoint of the last good epoch is kept)."""


@dataclass
class TrainResult(Tabular):
    """A finished (or interrupted) run: the trained ``model`` (eval mode, unwrapped), one
    ``history`` row per epoch, the output file and run folder."""

    model: nn.Module
    recipe: Recipe
    history: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    run_dir: Path | None = None
    interrupted: bool = False

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: epoch x logged quantity (lr, train_loss, val_acc, ...)."""
        return [{"epoch": row["epoch"], "quantity": k, "value": v} for row in self.history for k, v in row.items()
                if k != "epoch"]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), x="epoch", title="training")


def train(model: nn.Module | str, data: str = "digits", *, recipe: str | os.PathLike | Recipe = "strong",
          out: str | os.PathLike | None = None, val: str | None = None, subset: float | None = None, seed: int = 0,
          run: Run | None = None, **load_kwargs: Any) -> TrainResult:
    """Train `model` on `data` (a `surgeon.data` spec: digits, cifar100:ROOT, an ImageFolder tree).

    Args:
        model: a timm / ``tv:`` name or surgeon file (built with the recipe's stochastic depth and,
            unless given, as many classes as the data has), or a module (trained in place).
        recipe: a preset (``strong``, ``weak``, ``digits``), a TOML file or a `Recipe`;
            `recipe_with` overrides its epochs, batch size (scaling the lr linearly), lr, input size.
        out: the trained model's surgeon file (weights + build recipe + training recipe). Its run
            folder `run_dir_for(out)` keeps ``checkpoint.pt`` (every epoch), ``log.jsonl``,
            ``log.csv`` and TensorBoard events when tensorboard is installed.
        val: validation data evaluated after every epoch (default: the test split of digits /
            CIFAR; ``none``: off).
        subset: train on a class-balanced fraction of the data (``0.06``: the paper's small-data runs).
        seed: seeds data order, augmentation, Mixup, stochastic depth and initialisation.
        run: a `surgeon.parallel.Run`: ``resume`` (continue from the run folder's checkpoint,
            refused if it is another model's or another recipe's; without it an existing
            checkpoint is refused unless ``overwrite``), ``workers`` (data-loading processes),
            ``download`` (let torchvision fetch CIFAR), ``device``, ``progress``, ``snapshots``
            (keep the trainable weights every N epochs, the initial and the last ones too, in the
            run folder's ``snapshots/``, for `surgeon.trajectory`, Fig. 1b) and ``callback``
            (called with each finished epoch's history row, after its checkpoint and logs, on rank 0).
        load_kwargs: `surgeon.load_model` arguments when `model` is a name (num_classes, weights,
            pretrained, img_size). 0.1's ``epochs=``, ``batch_size=``, ``lr=``, ``input_size=``
            (give ``recipe=recipe_with(...)``) and ``resume=``, ``overwrite=``, ``workers=``,
            ``download=``, ``device=``, ``progress=``, ``on_epoch=``, ``snapshots=`` (give
            ``run=``) still work for one release, with a deprecation warning.

    Returns:
        `TrainResult`. Ctrl-C writes a checkpoint at the last finished step (single process) and
        returns with ``interrupted=True``; ``resume`` continues exactly there.
    """
    r, run = _train_options(recipe, run, load_kwargs)
    num_classes = load_kwargs.pop("num_classes", None)
    checks.args(subset=subset, num_classes=num_classes, seed=seed)
    sdata.check_spec(data)
    sdata.check_spec(default_val_spec(data, val), "val")  # a bad val= named as such, before any model is built
    rank, world, dist_device = _distributed()
    target = _run_target(out, run.resume, run.overwrite)
    run_dir = run_dir_for(target) if target is not None else None
    torch.manual_seed(seed)  # initialisation of models built here
    train_ds = sdata.dataset(data, train=True, subset=subset, seed=seed, download=run.download)
    net = _build(model, r, train_ds, num_classes, target, load_kwargs)
    device = torch.device(run.device) if run.device is not None else dist_device or (
        torch.device("cuda") if isinstance(model, str) and torch.cuda.is_available() else model_device(net))
    net.to(device)
    state = _Run(r, net, device, seed, rank, world, target, run_dir, run.snapshots)
    _data(state, train_ds, default_val_spec(data, val), run.workers, run.download)
    _optimisation(state)
    if run.resume:
        _resume(state)
    _check_snapshots(state)
    interrupted = _guarded_epochs(state, run.resume, run.progress, run.callback)
    return _finish(state, data, subset, interrupted)


def _train_options(recipe: str | os.PathLike | Recipe, run: Run | None, old: dict[str, Any]) -> tuple[Recipe, Run]:
    """The recipe and `Run` of a training, from ``recipe=`` / ``run=`` or 0.1's keywords
    (deprecated, popped out of `old`): the recipe overrides ``epochs=``, ``batch_size=``, ``lr=``,
    ``input_size=`` (`recipe_with`) and the run control (``on_epoch=``: the callback)."""
    overrides = moved_keywords(old, ("epochs", "batch_size", "lr", "input_size"), function="train",
                               new="recipe=surgeon.training.recipe_with(recipe, epochs=, ...)")
    run = options_from(Run, run, old, function="train", keyword="run", strict=False, renamed={"on_epoch": "callback"})
    run = run.only("train", "resume", "overwrite", "workers", "download", "device", "progress", "snapshots", "callback")
    return recipe_with(recipe, **overrides), run


def _guarded_epochs(run: _Run, resume: bool, progress: bool,
                    on_epoch: Callable[[dict[str, Any]], None] | None) -> bool:
    """Open the run folder and train the remaining epochs (`_epochs`; True when interrupted),
    every module's train/eval flag restored at the end and the log writer closed. A failed start
    (no checkpoint yet) leaves no run folder behind."""
    undo = undo_on_failure(run.run_dir, _run_started) if run.run_dir is not None and run.main else None
    _open_folder(run, resume)
    modes = ExitStack()
    modes.enter_context(restored_modes(run.net, None))
    try:
        return _epochs(run, progress, on_epoch)
    except BaseException:
        _close_writer(run)
        if undo is not None:
            undo()
        raise
    finally:
        modes.close()
        _close_writer(run)


def _epochs(run: _Run, progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None) -> bool:
    """The remaining epochs; True when interrupted (Ctrl-C: a checkpoint at the last finished step
    in a single process)."""
    with progress_bar(progress and run.main, run.r.total_epochs * run.steps, "training",
                      done=run.epoch * run.steps + run.step) as advance:
        while run.epoch < run.r.total_epochs:
            interrupted_at = _epoch(run, advance)
            if interrupted_at is not None:
                if run.world == 1:
                    _checkpoint(run, run.epoch, interrupted_at, run.partial)
                return True
            _end_epoch(run, _evaluate(run), on_epoch)
    return False


def _evaluate(run: _Run) -> dict[str, Any]:
    """The finished epoch's row: training sums (refused when not finite) and validation metrics."""
    row = _epoch_row(run.epoch, run.steps, run.partial, run.r, run.world, run.device)
    if not math.isfinite(row["train_loss"]):
        raise Diverged(f"training diverged in epoch {run.epoch + 1}: the mean training loss is "
                       f"{row['train_loss']}; lower the lr or clip gradients (clip_grad)")
    if run.val_loader is not None and run.main:
        ev = evaluate(run.net, run.val_loader)
        row.update({f"val_{k}": v for k, v in ev.metrics.items()})
    return row


def _end_epoch(run: _Run, row: dict[str, Any], on_epoch: Callable[[dict[str, Any]], None] | None) -> None:
    """Record a finished epoch: history, snapshot, checkpoint, logs, TensorBoard, `on_epoch`."""
    run.history.append(row)
    run.epoch, run.step, run.partial = run.epoch + 1, 0, _fresh_sums()
    _snapshot(run, run.epoch)
    _checkpoint(run, run.epoch, 0, run.partial)
    if run.run_dir is not None and run.main:
        _write_logs(run.run_dir, run.history)
        if run.writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    run.writer.add_scalar(k, v, row["epoch"])
    if on_epoch is not None and run.main:
        on_epoch(row)
    if run.world > 1:
        dist.barrier()


def _finish(run: _Run, data: str, subset: float | None, interrupted: bool) -> TrainResult:
    """The trained model in eval mode with its training recorded, saved (rank 0, unless interrupted)."""
    net, history = run.net, run.history
    net.eval()
    provenance.record_training(net, {"recipe": run.r.to_dict(), "input_size": list(run.size),  # the size it was trained at
                                     "data": data, "subset": subset, "seed": run.seed,
                                     "epochs_done": len(history), "final": plain(history[-1]) if history else {}})
    if run.target is not None and run.main and not interrupted:
        save(net, run.target, overwrite=True)
    if run.world > 1:
        dist.barrier()
    return TrainResult(net, run.r, history, run.target, run.run_dir, interrupted)


def _epoch(run: _Run, advance: Any) -> int | None:
    """One epoch from the run's step; sums go to ``run.partial`` (read back once, at the end).
    Returns the number of finished steps if interrupted (Ctrl-C), else None."""
    device, epoch = run.device, run.epoch
    start = run.step
    run.items.epoch, run.sampler.epoch, run.sampler.start = epoch, epoch, start
    steps = len(run.sampler) + start
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen, step, t0 = 0, start, time.perf_counter()
    run.wrapped.train()
    try:
        with StepBoundaries() as boundary:  # Ctrl-C / SIGTERM take effect between steps only
            for batch in run.loader:
                boundary.check()
                if batch is None:
                    continue
                step = _step(run, batch, epoch, step, steps, loss_sum, correct, advance)
                seen += batch[0].shape[0]
                boundary.check()
    except KeyboardInterrupt:
        _add(run.partial, loss_sum, correct, seen, time.perf_counter() - t0)
        return step
    _add(run.partial, loss_sum, correct, seen, time.perf_counter() - t0)
    return None


def _step(run: _Run, batch: Any, epoch: int, step: int, steps: int, loss_sum: torch.Tensor, correct: torch.Tensor,
          advance: Any) -> int:
    """One optimiser step on `batch` (sums accumulated in place); returns the next step's index."""
    r, opt, scaler, device = run.r, run.opt, run.scaler, run.device
    x = batch[0].to(device, non_blocking=True)
    y = batch[1].to(device, non_blocking=True)
    torch.manual_seed(_mix_seed(run.seed, epoch, step, run.rank))  # stochastic depth, dropout
    np.random.seed(_mix_seed(run.seed, epoch, step, run.rank, 1) % 2**32)  # timm's Mixup draws from numpy
    target = y
    if run.mix is not None:
        x, target = run.mix(x, y)
    lr = lr_at(r, epoch * steps + step, steps)
    for group in opt.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp):
        logits = logits_of(run.wrapped(x))
        loss = run.criterion(logits.float(), target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if r.clip_grad is not None:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(run.net.parameters(), r.clip_grad)
    scaler.step(opt)
    scaler.update()
    hard = target if target.dim() == 1 else target.argmax(1)
    loss_sum += loss.detach().double() * x.shape[0]
    correct += (logits.detach().argmax(1) == hard).sum()
    advance()
    return step + 1


def _add(partial: dict[str, float], loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float) -> None:
    partial["loss"] += float(loss_sum)
    partial["correct"] += float(correct)
    partial["n"] += seen
    partial["seconds"] += seconds


def _epoch_row(epoch: int, steps: int, partial: dict[str, float], r: Recipe, world: int,
               device: torch.device) -> dict[str, Any]:
    """The epoch's log row; under DDP the sums of all processes."""
    sums = torch.tensor([partial["loss"], partial["correct"], partial["n"]], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(sums)
    loss, correct, n = sums.tolist()
    return {"epoch": epoch + 1, "lr": lr_at(r, (epoch + 1) * steps - 1, steps), "train_loss": loss / max(n, 1),
            "train_acc": correct / max(n, 1), "seconds": partial["seconds"],
            "images_per_s": n / partial["seconds"] if partial["seconds"] else math.nan}
