"""Training: the paper's recipes as presets, one compact loop, resumable, single process or DDP.

    run = surgeon.train("resnet18", "digits", recipe="digits", epochs=5, out="r18.safetensors")
    run.model, run.history[-1]["val_acc"]

    torchrun --nproc-per-node 2 -m surgeon.cli.main train resnet18 --data digits --recipe digits --out r18.safetensors

Presets (PAPER.md, "Training recipe"):

- ``strong``: AdamW, lr 1.25e-4 at batch 96, weight decay 0.05 on all parameters, 5 linear warmup
  epochs then cosine to 0 over 300, gradient clipping at norm 5, RandAugment m9 n2 mstd1.0, random
  crop with 4 px padding, flip, Mixup 1.0 / CutMix 0.8 with probability 1, label smoothing 0.1,
  stochastic depth 0.1.
- ``strong-imagenet``: the paper's ImageNet changes to it: batch 128, RandAugment mstd0.5, random
  erasing 0.25, random resized crop at 224 px, no clipping (the rest as ``strong``).
- ``weak``: SGD with momentum 0.9, lr 0.1 at batch 128, weight decay 5e-4, 200 epochs, lr x0.2 at
  epochs 60, 120, 160; padded crop and flip only.
- ``digits``: the strong recipe cut to CPU size for scikit-learn's digits at 32 px (lr 1e-3 at
  batch 64, 1 warmup + 9 cosine epochs, no flip, RandAugment or Mixup).

A recipe file (TOML) starts from a preset (``base = "strong"``) and overrides keys of `Recipe`.

Determinism: every random draw is seeded from (seed, epoch, step) or (seed, epoch, sample index),
so a run interrupted and resumed gives exactly the weights of an uninterrupted one, with any number
of data-loading workers. CPU kernels reduce in an order that depends on torch's thread count:
`fixed_numerics` fixes it (a search does, per job), and on CUDA turns on deterministic kernels.
`Recipe.batch_size` is the global batch: under DDP each of the N processes
takes a contiguous 1/N of every global batch, so N processes see the batches one process would
(BatchNorm statistics, Mixup pairs and stochastic depth draws stay per process, as in timm).
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import importlib.util
import math
import os
import random
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from surgeon.core import checks
from surgeon.data import datasets as sdata
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.outputs import logits_of
from surgeon.evaluation.evaluate import evaluate
from surgeon.model.runtime import StepBoundaries, check_labels, display_name, model_device, restored_modes
from surgeon.core.files import atomic_path, check_input, check_output
from surgeon.model.weights import save
from surgeon.model.sizes import input_size_of
from surgeon.surgery.loading import load_model
from surgeon.surgery.loading import load as load_file
from surgeon.core.jsonio import dumps, plain
from surgeon.core.progress import progress as progress_bar
from surgeon.core.registry import Registry
from surgeon.training.recipe_check import RecipeErrors, check_section, field_checks, toml_line
from surgeon.core.runfolder import run_dir_for, undo_on_failure
from surgeon.core.tables import Tabular
from surgeon.analysis.trajectory import clear_snapshots, write_snapshot

__all__ = ["RECIPES", "Diverged", "Recipe", "ShardedBatches", "TrainResult", "build_for_training", "default_val_spec",
           "fixed_numerics", "line_of", "lr_at", "recipe_problems", "recipe_value", "run_dir_for", "train", "training_recipe"]


class Diverged(SurgeonError):
    """The training loss became NaN or infinite (the checkpoint of the last good epoch is kept)."""


@contextmanager
def fixed_numerics(threads: int | None = None, deterministic: bool = False) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads and, when `deterministic`, torch's
    deterministic algorithms (``torch.use_deterministic_algorithms``, cuDNN deterministic without
    benchmarking, cuBLAS with a fixed workspace ``CUBLAS_WORKSPACE_CONFIG=:4096:8``); the previous
    settings are restored afterwards, also on error. CPU kernels split their reductions over the
    threads, so a training's numbers depend on the thread count unless it is fixed."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SurgeonError(f"threads = {threads!r}; give an integer >= 1")
    cudnn = torch.backends.cudnn
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic, cudnn.benchmark)
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            cudnn.deterministic, cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        cudnn.deterministic, cudnn.benchmark = before[3], before[4]
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run besides the model, the data and the seed."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1.25e-4  # peak learning rate at `batch_size`
    batch_size: int = 96  # global batch (all processes together)
    weight_decay: float = 0.05
    decay_all: bool = True  # weight decay on every parameter (paper); False: not on biases and norms
    momentum: float = 0.9  # sgd only
    epochs: int = 300  # after the warmup epochs
    warmup_epochs: int = 5
    schedule: Literal["cosine", "step"] = "cosine"
    min_lr: float = 0.0  # cosine floor
    milestones: tuple[int, ...] = ()  # step: epochs (counted from the start) where lr is multiplied by gamma
    gamma: float = 0.2
    clip_grad: float | None = 5.0  # max global gradient norm; None: no clipping
    label_smoothing: float = 0.1
    mixup: float = 1.0  # Mixup alpha (0: off)
    cutmix: float = 0.8  # CutMix alpha (0: off)
    mix_prob: float = 1.0
    auto_augment: str | None = "rand-m9-n2-mstd1.0"
    padding: int | None = 4  # padded random crop (CIFAR); None: random resized crop (ImageNet)
    hflip: float = 0.5
    re_prob: float = 0.0  # random erasing
    drop_path: float = 0.1  # stochastic depth, set when the model is built from its name
    input_size: tuple[int, int, int] | None = None  # (C, H, W); None: the model's own
    amp: bool = True  # mixed precision on CUDA (bfloat16 where supported, else float16 + loss scaling)

    @property
    def total_epochs(self) -> int:
        return self.warmup_epochs + self.epochs

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: The named training recipes (``--recipe NAME``); a TOML file may start from one (``base = "strong"``).
RECIPES: Registry[Recipe] = Registry("training recipe", {
    "strong": Recipe(),
    "strong-imagenet": Recipe(batch_size=128, auto_augment="rand-m9-n2-mstd0.5", re_prob=0.25, padding=None,
                              clip_grad=None, input_size=(3, 224, 224)),
    "weak": Recipe(optimizer="sgd", lr=0.1, batch_size=128, weight_decay=5e-4, epochs=200, warmup_epochs=0,
                   schedule="step", milestones=(60, 120, 160), gamma=0.2, clip_grad=None, label_smoothing=0.0,
                   mixup=0.0, cutmix=0.0, auto_augment=None, drop_path=0.0),
    "digits": Recipe(lr=1e-3, batch_size=64, epochs=9, warmup_epochs=1, mixup=0.0, cutmix=0.0, auto_augment=None,
                     hflip=0.0, drop_path=0.0, input_size=(3, 32, 32)),
})


_CHECKS = field_checks(Recipe)  # one `Check` per field, from its type annotation


def line_of(text: str, key: str) -> int | None:
    """The 1-based line of ``key = ...`` at the top level of a TOML text (`surgeon.recipe_check.toml_line`)."""
    return toml_line(text, "", key)


def recipe_value(name: str, value: Any, where: str) -> Any:
    """The value of `Recipe` field `name` checked against the field's type (`where` prefixes the error)."""
    try:
        return _CHECKS[name].convert(value)
    except ValueError as exc:
        raise SurgeonError(f"{where}: {exc}") from None


def recipe_problems(r: Recipe) -> list[tuple[str, str]]:
    """``(key, message)`` for every setting of `r` out of its range (the budget, rates, probabilities)."""
    return [(key, message) for bad, key, message in (
        (0 <= r.epochs and 0 <= r.warmup_epochs and r.epochs + r.warmup_epochs < 1, "epochs",
         "the budget is zero epochs; give epochs >= 1"),
        (r.epochs < 0, "epochs", f"epochs = {r.epochs}; it cannot be negative"),
        (r.warmup_epochs < 0, "warmup_epochs", f"warmup_epochs = {r.warmup_epochs}; it cannot be negative"),
        (r.batch_size < 1, "batch_size", f"batch_size = {r.batch_size}; it must be at least 1"),
        ((r.mixup > 0 or r.cutmix > 0) and r.batch_size % 2, "batch_size",
         f"batch_size = {r.batch_size}; Mixup/CutMix pair samples: use an even batch_size"),
        (not r.lr > 0, "lr", f"lr = {r.lr}; it must be positive"),
        (r.min_lr < 0, "min_lr", f"min_lr = {r.min_lr}; it cannot be negative"),
        (r.weight_decay < 0, "weight_decay", f"weight_decay = {r.weight_decay}; it cannot be negative"),
        (not 0 <= r.momentum < 1, "momentum", f"momentum = {r.momentum}; give a number in [0, 1)"),
        (not r.gamma > 0, "gamma", f"gamma = {r.gamma}; it must be positive"),
        (list(r.milestones) != sorted(set(r.milestones)) or any(m < 1 for m in r.milestones), "milestones",
         f"milestones = {list(r.milestones)}; give increasing epochs >= 1"),
        (r.clip_grad is not None and not r.clip_grad > 0, "clip_grad", "clip_grad must be positive or none"),
        (not 0 <= r.label_smoothing < 1, "label_smoothing", f"label_smoothing = {r.label_smoothing}; give [0, 1)"),
        (r.mixup < 0, "mixup", f"mixup = {r.mixup}; give an alpha >= 0 (0: off)"),
        (r.cutmix < 0, "cutmix", f"cutmix = {r.cutmix}; give an alpha >= 0 (0: off)"),
        (not 0 <= r.mix_prob <= 1, "mix_prob", f"mix_prob = {r.mix_prob}; give a probability in [0, 1]"),
        (r.padding is not None and r.padding < 0, "padding", f"padding = {r.padding}; give pixels >= 0 or none"),
        (not 0 <= r.hflip <= 1, "hflip", f"hflip = {r.hflip}; give a probability in [0, 1]"),
        (not 0 <= r.re_prob <= 1, "re_prob", f"re_prob = {r.re_prob}; give a probability in [0, 1]"),
        (not 0 <= r.drop_path < 1, "drop_path", f"drop_path = {r.drop_path}; give a rate in [0, 1)"),
        (r.input_size is not None and min(r.input_size) < 1, "input_size",
         f"input_size = {list(r.input_size or ())}; give [C, H, W] >= 1"),
    ) if bad]


def _recipe_source(spec: str | os.PathLike | Recipe | dict[str, Any]) -> tuple[RecipeErrors, Any, dict[str, Any]]:
    """The error collector of a recipe spec, its base preset's name and its keys."""
    if isinstance(spec, Recipe):
        return RecipeErrors("recipe"), spec, {}
    if isinstance(spec, dict):
        keys = dict(spec)
        return RecipeErrors("recipe"), keys.pop("base", "strong"), keys
    if str(spec) in RECIPES:
        return RecipeErrors("recipe"), str(spec), {}
    path = Path(spec)
    if not path.exists():
        raise SurgeonError(f"recipe {str(spec)!r} is neither a preset ({', '.join(RECIPES)}) nor a file; "
                           "e.g. recipe='strong' or a TOML file such as my_recipe.toml")
    check_input(path, "training recipe")
    text = path.read_text()
    try:
        keys = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SurgeonError(f"{path}: not valid TOML ({exc})") from None
    return RecipeErrors(str(path), text), keys.pop("base", "strong"), keys


def training_recipe(spec: str | os.PathLike | Recipe | dict[str, Any] = "strong", **overrides: Any) -> Recipe:
    """A `Recipe` from a preset name, a TOML file (``base = "PRESET"`` plus `Recipe` keys), a dict
    of keys, or a Recipe; then `overrides` (None values ignored). Every problem is reported at
    once (`surgeon.recipe_check`): unknown keys with the closest known one, values of the wrong
    type or out of range, each with its file and line."""
    errors, base, keys = _recipe_source(spec)
    start = base if isinstance(base, Recipe) else RECIPES.get(base, None) if isinstance(base, str) else None
    if start is None:
        errors.add("", "base", f"base = {base!r}; base must be one of {', '.join(RECIPES)}")
    values = check_section(errors, "", keys, _CHECKS)
    given = {k: v for k, v in overrides.items() if v is not None}
    args = RecipeErrors("arguments")
    values.update(check_section(args, "", given, _CHECKS))
    if start is not None:
        r = dataclasses.replace(start, **values)
        for key, message in recipe_problems(r):
            (args if key in given else errors).add("", key, message)
    errors.problems += args.problems
    errors.raise_if_any()
    return r


def lr_at(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimisation step `step` (0-based). Warmup: lr (step + 1) / W over the
    W = warmup_epochs x steps_per_epoch first steps. Then cosine: min_lr + (lr - min_lr)(1 + cos(pi t / T)) / 2,
    t the steps after warmup, T = epochs x steps_per_epoch; or step: lr x gamma^(milestones passed),
    milestones counted in epochs from the start."""
    warm = r.warmup_epochs * steps_per_epoch
    if step < warm:
        return r.lr * (step + 1) / warm
    if r.schedule == "step":
        return r.lr * r.gamma ** sum(step >= m * steps_per_epoch for m in r.milestones)
    t, total = step - warm, max(1, r.epochs * steps_per_epoch)
    return r.min_lr + (r.lr - r.min_lr) * (1 + math.cos(math.pi * min(t, total) / total)) / 2


# ----------------------------------------------------------------------------------------------
# Data: deterministic per sample, sharded per process


def _mix_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class SeededItems(Dataset):
    """A dataset whose item i in epoch e is drawn with python, numpy and torch (CPU) generators
    seeded from (seed, e, i): augmentation independent of workers, processes and resume point."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        s = _mix_seed(self.seed, self.epoch, i)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.random.default_generator.manual_seed(s)
        return self.base[i]


class ShardedBatches(Sampler[list[int]]):
    """Batches of one epoch: a permutation of the n items seeded from (seed, epoch), cut into global
    batches of `batch_size` (the incomplete last one dropped), of which process `rank` of `world`
    takes the contiguous slice [rank b / world, (rank + 1) b / world). Starts at batch `start`."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise SurgeonError(f"batch size {batch_size} does not split over {world} processes; "
                               f"use a multiple of {world}")
        if n < batch_size:
            raise SurgeonError(f"the training data has {n} images, fewer than one batch of {batch_size}; "
                               "lower batch_size= or use more data")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        share = self.batch // self.world
        for b in range(self.start, self.n // self.batch):
            lo = b * self.batch + self.rank * share
            yield order[lo:lo + share]


# ----------------------------------------------------------------------------------------------
# Runs: where they write, what a checkpoint holds


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


def _run_started(run_dir: Path) -> bool:
    """Whether a run folder holds work worth resuming: a checkpoint."""
    return (run_dir / "checkpoint.pt").is_file()


def _fingerprint(model: nn.Module) -> str:
    """Architecture identity: the model's build spec and passes, and every state tensor's name and shape."""
    cfg = provenance.cfg_of(model)
    spec = {k: v for k, v in cfg.base.items() if k != "drop_path_rate"}
    parts = [dumps(spec, sort_keys=True, default=str), dumps(list(cfg.passes), sort_keys=True, default=str)]
    parts += [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _write_checkpoint(path: Path, state: dict[str, Any], previous: int | None) -> None:
    """torch.save through a temp file + rename: a failure (disk full) leaves the previous checkpoint."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        kept = f"the previous checkpoint (epoch {previous}) is intact" if previous is not None else "no checkpoint was kept"
        full = " (disk full)" if exc.errno == errno.ENOSPC else ""
        raise SurgeonError(f"cannot write checkpoint {str(path)!r}{full}: {first_line(exc, 80)}; {kept}; "
                           "free space and rerun with resume=True") from None


def _write_logs(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """log.jsonl and log.csv with one row per epoch, rewritten whole (atomically) each epoch."""
    with atomic_path(run_dir / "log.jsonl") as tmp:
        tmp.write_text("".join(dumps(row) + "\n" for row in history))
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(history)


def _tensorboard(run_dir: Path) -> Any:
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))


# ----------------------------------------------------------------------------------------------
# The loop


def build_for_training(model: str, r: Recipe, num_classes: int | None, **load_kwargs: Any) -> nn.Module:
    """A model from its name or surgeon file, with the recipe's stochastic depth where the
    constructor takes ``drop_path_rate`` (timm); others are built without and warned about."""
    is_file = model.endswith(".safetensors") and Path(model).exists() and not load_kwargs.get("weights")
    if r.drop_path > 0:
        try:
            if is_file:
                return load_file(model, drop_path_rate=r.drop_path)
            return load_model(model, num_classes=num_classes, drop_path_rate=r.drop_path, **load_kwargs)
        except (TypeError, SurgeonError) as exc:
            if "drop_path_rate" not in str(exc):
                raise
            warnings.warn(f"{model} has no stochastic depth (no drop_path_rate argument); training without it",
                          stacklevel=3)
    return load_file(model) if is_file else load_model(model, num_classes=num_classes, **load_kwargs)


def _distributed() -> tuple[int, int, torch.device | None]:
    """(rank, world size, device) under torchrun; (0, 1, None) otherwise. Initialises the process
    group (NCCL on CUDA, gloo on CPU) when torchrun started this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _param_groups(model: nn.Module, r: Recipe) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if r.decay_all:
        return [{"params": params, "weight_decay": r.weight_decay}]
    return [{"params": [p for p in params if p.dim() > 1], "weight_decay": r.weight_decay},
            {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]


def _optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, r)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum)
    return torch.optim.AdamW(groups, lr=r.lr)


def _num_outputs(model: nn.Module, input_size: Sequence[int], device: torch.device) -> int:
    with restored_modes(model, "eval"), torch.no_grad():
        return int(logits_of(model(torch.zeros(1, *input_size, device=device))).shape[-1])


def default_val_spec(data: str, val: str | None) -> str | None:
    """The validation data: `val` when given ('none' turns it off), else the test split of a named
    dataset (digits, CIFAR); a folder has no default."""
    if val is not None:
        return None if val.lower() == "none" else val
    return data if data == "digits" or data.split(":")[0] in ("cifar10", "cifar100") else None


def _fresh_sums() -> dict[str, float]:
    """An epoch's running sums: loss x images, correct predictions, images, seconds."""
    return {"loss": 0.0, "correct": 0.0, "n": 0.0, "seconds": 0.0}


@dataclass(eq=False)
class _Run:
    """One training run's state, shared by the steps of `train`: what it was set up with (recipe,
    model, data, optimiser; fields set by `_data` and `_optimisation`) and where it stands (the
    next epoch, the finished steps of it, their running sums, the history of finished epochs)."""

    r: Recipe
    net: nn.Module  # the model, unwrapped
    device: torch.device
    seed: int
    rank: int
    world: int
    target: Path | None  # the output surgeon file
    run_dir: Path | None
    snapshots: int
    size: tuple[int, ...] = field(init=False)  # the training input size (C, H, W)
    items: SeededItems = field(init=False)
    sampler: ShardedBatches = field(init=False)
    loader: DataLoader = field(init=False)
    val_loader: DataLoader | None = field(init=False)
    steps: int = field(init=False)  # steps per epoch
    mix: Any = field(init=False)
    criterion: nn.Module = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    amp: bool = field(init=False)
    amp_dtype: torch.dtype = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    wrapped: nn.Module = field(init=False)  # what the forward pass runs: `net`, or its DDP wrapper
    fingerprint: str = field(init=False)
    epoch: int = 0
    step: int = 0
    partial: dict[str, float] = field(default_factory=_fresh_sums)
    history: list[dict[str, Any]] = field(default_factory=list)
    saved: int | None = None  # the epoch of the checkpoint on disk
    writer: Any = None  # TensorBoard
    name: str = ""

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None


def train(model: nn.Module | str, data: str = "digits", *, recipe: str | os.PathLike | Recipe = "strong",
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
          val: str | None = None, subset: float | None = None, input_size: Sequence[int] | None = None,
          num_classes: int | None = None, seed: int = 0, workers: int | None = None, download: bool = False,
          device: str | torch.device | None = None, progress: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, snapshots: int = 0,
          **load_kwargs: Any) -> TrainResult:
    """Train `model` on `data` (a `surgeon.data` spec: digits, cifar100:ROOT, an ImageFolder tree).

    Args:
        model: a timm / ``tv:`` name or surgeon file (built with the recipe's stochastic depth and,
            unless given, as many classes as the data has), or a module (trained in place).
        recipe: a preset (``strong``, ``weak``, ``digits``), a TOML file or a `Recipe`; `epochs`
            (after warmup), `batch_size` (global; lr scaled linearly with it) and `lr` override it.
        out: the trained model's surgeon file (weights + build recipe + training recipe). Its run
            folder `run_dir_for(out)` keeps ``checkpoint.pt`` (every epoch), ``log.jsonl``,
            ``log.csv`` and TensorBoard events when tensorboard is installed.
        resume: continue from the run folder's checkpoint (refused if it is another model's or
            another recipe's); without it an existing checkpoint is refused unless `overwrite`.
        val: validation data evaluated after every epoch (default: the test split of digits /
            CIFAR; ``none``: off).
        subset: train on a class-balanced fraction of the data (``0.06``: the paper's small-data runs).
        seed: seeds data order, augmentation, Mixup, stochastic depth and initialisation.
        on_epoch: called with each finished epoch's history row (after its checkpoint and logs), on rank 0.
        snapshots: keep the trainable weights every N epochs, the initial and the last ones too, in
            the run folder's ``snapshots/`` (atomically), for `surgeon.trajectory` (Fig. 1b); 0: off.
        download: let torchvision fetch CIFAR into its root when it is missing (online only).
        load_kwargs: `surgeon.load_model` arguments when `model` is a name (weights, pretrained, img_size).

    Returns:
        `TrainResult`. Ctrl-C writes a checkpoint at the last finished step (single process) and
        returns with ``interrupted=True``; ``resume=True`` continues exactly there.
    """
    checks.args(subset=subset, num_classes=num_classes, seed=seed, workers=workers, snapshots=snapshots, epochs=epochs)
    sdata.check_spec(data)
    sdata.check_spec(default_val_spec(data, val), "val")  # a bad val= named as such, before any model is built
    rank, world, dist_device = _distributed()
    r = _run_recipe(recipe, epochs, input_size, batch_size, lr)
    target = _run_target(out, resume, overwrite)
    run_dir = run_dir_for(target) if target is not None else None
    torch.manual_seed(seed)  # initialisation of models built here
    train_ds = sdata.dataset(data, train=True, subset=subset, seed=seed, download=download)
    net = _build(model, r, train_ds, num_classes, target, load_kwargs)
    device = torch.device(device) if device is not None else dist_device or (
        torch.device("cuda") if isinstance(model, str) and torch.cuda.is_available() else model_device(net))
    net.to(device)
    run = _Run(r, net, device, seed, rank, world, target, run_dir, snapshots)
    _data(run, train_ds, default_val_spec(data, val), workers, download)
    _optimisation(run)
    if resume:
        _resume(run)
    _check_snapshots(run)
    undo = undo_on_failure(run_dir, _run_started) if run_dir is not None and run.main else None
    _open_folder(run, resume)
    modes = ExitStack()  # every module's train/eval flag restored at the end
    modes.enter_context(restored_modes(net, None))
    try:
        interrupted = _epochs(run, progress, on_epoch)
    except BaseException:  # a failed start (no checkpoint yet) leaves no run folder behind
        _close_writer(run)
        if undo is not None:
            undo()
        raise
    finally:
        modes.close()
        _close_writer(run)
    return _finish(run, data, subset, interrupted)


def _run_recipe(recipe: str | os.PathLike | Recipe, epochs: int | None, input_size: Sequence[int] | None,
                batch_size: int | None, lr: float | None) -> Recipe:
    """The run's recipe with its overrides; a `batch_size` without `lr` scales the recipe's lr linearly."""
    r = training_recipe(recipe, epochs=epochs, input_size=input_size, batch_size=batch_size, lr=lr)
    if batch_size is not None and lr is None:  # linear scaling from the recipe's own batch size
        base = training_recipe(recipe)
        r = dataclasses.replace(r, lr=base.lr * batch_size / base.batch_size)
    return r


def _run_target(out: str | os.PathLike | None, resume: bool, overwrite: bool) -> Path | None:
    """The output file, checked: `resume` needs a checkpoint in its run folder, a new run refuses one."""
    target = check_output(out, overwrite=overwrite or resume) if out is not None else None
    ckpt_path = run_dir_for(target) / "checkpoint.pt" if target is not None else None
    if resume and (ckpt_path is None or not ckpt_path.is_file()):
        raise SurgeonError(f"resume=True: no checkpoint at {str(ckpt_path)!r}; start the run without resume=True")
    if ckpt_path is not None and ckpt_path.is_file() and not (resume or overwrite):
        raise SurgeonError(f"{str(ckpt_path)!r} holds an earlier run; pass resume=True to continue it or overwrite=True "
                           "to start over")
    return target


def _build(model: nn.Module | str, r: Recipe, train_ds: Dataset, num_classes: int | None, target: Path | None,
           load_kwargs: dict[str, Any]) -> nn.Module:
    """The model to train: built from its name (classes from the data) or the module given."""
    if isinstance(model, str):
        classes = getattr(train_ds, "classes", [])
        is_file = model.endswith(".safetensors")
        net = build_for_training(model, r, num_classes or (len(classes) if classes and not is_file else None),
                                 **load_kwargs)
    else:
        net = model
    if target is not None and not provenance.has_cfg(net):
        raise SurgeonError("out= needs a model surgeon can rebuild: pass its name (or create it with "
                           "surgeon.load_model) instead of a module object")
    return net


def _data(run: _Run, train_ds: Any, val_spec: str | None, workers: int | None, download: bool) -> None:
    """The input size, the seeded and sharded training loader, the validation loader; labels checked
    against the model's outputs."""
    r, net = run.r, run.net
    run.size = input_size_of(net, r.input_size)  # the recipe's, else what the model records, else its default
    classes_out = _num_outputs(net, run.size, run.device)
    check_labels(train_ds, classes_out)
    train_ds.transform = sdata.train_transform(net, input_size=run.size, auto_augment=r.auto_augment,
                                               re_prob=r.re_prob, hflip=r.hflip, padding=r.padding)
    run.items = SeededItems(train_ds, run.seed)
    run.sampler = ShardedBatches(len(run.items), r.batch_size, run.seed, run.rank, run.world)
    n_workers = workers if workers is not None else (min(8, os.cpu_count() or 1) if len(run.items) > 5000 else 0)
    run.loader = DataLoader(run.items, batch_sampler=run.sampler, num_workers=n_workers, collate_fn=sdata._collate,
                            pin_memory=run.device.type == "cuda")
    run.val_loader = (sdata.loader(val_spec, net, batch_size=256, input_size=run.size, workers=workers,
                                   download=download) if val_spec else None)
    if run.val_loader is not None:
        check_labels(run.val_loader, classes_out)
    run.steps = len(run.sampler)
    run.mix = None
    if r.mixup > 0 or r.cutmix > 0:
        run.mix = sdata.mixer(classes_out, mixup=r.mixup, cutmix=r.cutmix, prob=r.mix_prob,
                              label_smoothing=r.label_smoothing)


def _optimisation(run: _Run) -> None:
    """Loss, optimiser, mixed precision and its grad scaler, the DDP wrapper (under torchrun); the
    fingerprint a checkpoint is matched by. The lr schedule is `lr_at`, set every step."""
    r, net, device = run.r, run.net, run.device
    run.criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if run.mix else r.label_smoothing)
    run.opt = _optimizer(net, r)
    run.amp = r.amp and device.type == "cuda"
    run.amp_dtype = torch.bfloat16 if run.amp and torch.cuda.is_bf16_supported() else torch.float16
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp and run.amp_dtype == torch.float16)
    run.wrapped = net
    if run.world > 1:
        run.wrapped = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    run.fingerprint = _fingerprint(net)
    run.name = display_name(net)


def _resume(run: _Run) -> None:
    """Continue from the run folder's checkpoint: refused if it is another model's or another recipe's."""
    path, r = run.ckpt_path, run.r
    state = torch.load(path, map_location=run.device, weights_only=False)
    if state["fingerprint"] != run.fingerprint:
        raise SurgeonError(f"checkpoint {str(path)!r} is from another model ({state['model']}); "
                           "resume with the same model or pass overwrite=True to start over")
    if state["recipe"] != r.to_dict() or state["seed"] != run.seed:
        diff = [k for k, v in r.to_dict().items() if state["recipe"].get(k) != v] or ["seed"]
        raise SurgeonError(f"checkpoint {str(path)!r} was made with another recipe ({', '.join(diff)} "
                           "differ); resume with the same options or pass overwrite=True to start over")
    run.net.load_state_dict(state["model_state"])
    run.opt.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.partial, run.history = state["epoch"], state["step"], state["partial"], state["history"]
    run.saved = run.epoch


def _check_snapshots(run: _Run) -> None:
    if run.snapshots and run.run_dir is None:
        raise SurgeonError("snapshots need a run folder: give out= as well")
    if not isinstance(run.snapshots, int) or run.snapshots < 0:
        raise SurgeonError(f"snapshots={run.snapshots!r} must be 0 (off) or a number of epochs")


def _open_folder(run: _Run, resume: bool) -> None:
    """TensorBoard, the run folder (an earlier run's snapshots cleared), the initial snapshot."""
    if run.run_dir is not None and run.main:
        run.writer = _tensorboard(run.run_dir)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_snapshots(run.run_dir)  # an earlier run's snapshots would mix into this run's trajectory
    if run.epoch == 0 and run.step == 0:
        _snapshot(run, 0)


def _checkpoint(run: _Run, at_epoch: int, at_step: int, part: dict[str, float]) -> None:
    """checkpoint.pt (rank 0): the weights, optimiser, scaler and where the run stands."""
    if run.ckpt_path is None or not run.main:
        return
    state = {"fingerprint": run.fingerprint, "model": run.name, "recipe": run.r.to_dict(), "seed": run.seed,
             "epoch": at_epoch, "step": at_step, "partial": part, "history": run.history,
             "model_state": run.net.state_dict(), "optimizer": run.opt.state_dict(),
             "scaler": run.scaler.state_dict()}
    _write_checkpoint(run.ckpt_path, state, run.saved)
    run.saved = at_epoch


def _snapshot(run: _Run, at_epoch: int) -> None:
    """The trainable weights every `snapshots` epochs and at the last (`surgeon.trajectory`)."""
    if run.snapshots and run.main and (at_epoch % run.snapshots == 0 or at_epoch == run.r.total_epochs):
        write_snapshot(run.run_dir, run.net, at_epoch)


def _close_writer(run: _Run) -> None:
    if run.writer is not None:
        run.writer.close()
        run.writer = None


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
