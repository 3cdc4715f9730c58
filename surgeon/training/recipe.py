"""Training recipes: `Recipe` (everything that decides a run besides model, data and seed), the
presets `RECIPES`, `training_recipe` (a preset, TOML file or dict, checked all at once),
`recipe_with` (a recipe with a run's epochs / batch size / lr / input size) and the lr schedule
`lr_at`.

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
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.core.files import check_input
from surgeon.core.registry import Registry
from surgeon.training.recipe_check import RecipeErrors, check_section, field_checks, toml_line

__all__ = ["RECIPES", "Recipe", "line_of", "lr_at", "recipe_problems", "recipe_value", "recipe_with", "training_recipe"]


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


def recipe_with(recipe: str | os.PathLike | Recipe | dict[str, Any] = "strong", *, epochs: int | None = None,
                batch_size: int | None = None, lr: float | None = None,
                input_size: tuple[int, int, int] | None = None) -> Recipe:
    """`recipe` (a preset name, TOML file, dict or `Recipe`, as `training_recipe`) with a run's
    overrides, None keeping the recipe's own: `epochs` after warmup, `batch_size` (global), `lr`,
    `input_size` (C, H, W). A `batch_size` without `lr` scales the recipe's lr linearly with it,
    ``lr * batch_size / recipe.batch_size`` (the CLI's ``--batch-size`` likewise). `epochs` has the
    CLI's range (`surgeon.core.checks.ARGS`: 0 would train the warmup epochs alone)."""
    checks.args(epochs=epochs)
    r = training_recipe(recipe, epochs=epochs, input_size=input_size, batch_size=batch_size, lr=lr)
    if batch_size is not None and lr is None:  # linear scaling from the recipe's own batch size
        base = training_recipe(recipe)
        r = dataclasses.replace(r, lr=base.lr * batch_size / base.batch_size)
    return r


def lr_at(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimisation step `step` (0-based). Warmup: lr (step + 1) / W over the
    W = warmup_epochs x steps_per_epoch first steps. Then cosine: min_lr + (lr - min_lr)(1 + cos(pi t / T)) / 2,
    t the steps after warmup, T = epochs x steps_per_epoch; or step: lr x gamma^(milestones passed),
    milestones counted in epochs from the start. Kept rather than `timm.scheduler`: timm's warmup
    reaches lr one step later (at W, from warmup_lr_init) and its MultiStepLRScheduler decays one
    step before torch's MultiStepLR; after warmup the cosine equals timm's CosineLRScheduler with
    warmup_prefix=True (tests/test_library_parity.py)."""
    warm = r.warmup_epochs * steps_per_epoch
    if step < warm:
        return r.lr * (step + 1) / warm
    if r.schedule == "step":
        return r.lr * r.gamma ** sum(step >= m * steps_per_epoch for m in r.milestones)
    t, total = step - warm, max(1, r.epochs * steps_per_epoch)
    return r.min_lr + (r.lr - r.min_lr) * (1 + math.cos(math.pi * min(t, total) / total)) / 2
