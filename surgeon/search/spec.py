"""Search specs: reading and validating one (a TOML file with the build-up rules, or a Python
file with SETTINGS and its own ``candidates(search)`` generator) into a `SearchSpec`; the
checks are `surgeon.recipe_check`'s, shared with the training recipes."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError, first_line
from surgeon.core.files import check_input
from surgeon.core.jsonio import dumps
from surgeon.training.recipe_check import Check, RecipeErrors, check_sections, field_checks
from surgeon.training.recipe import RECIPES as TRAIN_PRESETS
from surgeon.training.recipe import Recipe, recipe_problems, training_recipe
from surgeon.training.setup import default_val_spec
from surgeon.search.jobs import Setup
from surgeon.search.rules import Search, Steps, buildup

#: Metrics a search can optimise: +1 higher is better, -1 lower is better.
METRICS: dict[str, int] = {"acc": 1, "top5": 1, "nll": -1, "brier": -1, "ece": -1}


@dataclass(frozen=True)
class SearchSpec:
    """A validated search spec (docs/architecture.md, "Build-up search"); `search_spec` reads one."""

    path: Path
    text: str
    setup: Setup
    candidates: Callable[[Search], Steps]
    metric: str
    delta: float = 0.0
    repeats: tuple[int, ...] = (0,)
    stages: tuple[str, ...] | None = None
    max_msa: int | dict[str, int] | None = None
    heads: int | dict[str, int] | None = None
    window: int | None = None
    dim_head: int = 64
    model: dict[str, Any] = field(default_factory=dict)  # the [model] section as given, for the hash

    def where(self, section: str, key: str | None = None) -> str:
        """Where a key (or a section) of the spec is, for messages: ``FILE (line N) [section]``."""
        return _errors(self.path, self.text).where(section, key)

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that decides the search's results, as plain data (stored in search.json)."""
        s = self.setup
        strategy = "buildup" if self.candidates is buildup else hashlib.sha256(self.text.encode()).hexdigest()
        return {"model": self.model, "data": {"train": s.data, "val": s.val, "subset": s.subset},
                "train": s.train.to_dict(),
                "search": {"metric": self.metric, "delta": self.delta, "repeats": list(self.repeats),
                           "stages": list(self.stages) if self.stages else None, "max_msa": self.max_msa,
                           "heads": self.heads, "window": self.window, "dim_head": self.dim_head,
                           "threads": s.threads, "deterministic": s.deterministic},
                "candidates": strategy}

    @property
    def digest(self) -> str:
        return hashlib.sha256(dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()


def _errors(path: Path, text: str) -> RecipeErrors:
    """The problem collector of a search spec (`surgeon.recipe_check`; lines for TOML files)."""
    return RecipeErrors(str(path), text if path.suffix == ".toml" else "")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _per_stage(v: Any) -> bool:
    return _is_count(v) or (isinstance(v, dict) and bool(v) and all(
        isinstance(k, str) and re.fullmatch(r"c\d+", k) and _is_count(x) for k, x in v.items()))


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "count": (_is_count, "an integer >= 1"),
    "fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "delta": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_count(x) for x in v),
             "[C, H, W], e.g. [3, 32, 32]"),
    "table": (lambda v: isinstance(v, dict), "a table of constructor arguments"),
    "stem": (lambda v: v == "cifar", '"cifar" (surgeon.cifar_stem: a stride-1 3x3 stem, no pooling, for 32 px inputs)'),
    "stages": (lambda v: isinstance(v, (list, tuple)) and bool(v) and len(set(v)) == len(v) and all(
        isinstance(x, str) and re.fullmatch(r"c\d+", x) for x in v), 'a list of distinct stages, e.g. ["c3", "c4"]'),
    "per_stage": (_per_stage, "an integer >= 1 or a table per stage, e.g. {c3 = 1, c4 = 2}"),
    "metric": (lambda v: v in METRICS, f"one of {', '.join(METRICS)}"),
    "repeats": (lambda v: _is_count(v) or (isinstance(v, (list, tuple)) and bool(v) and len(set(v)) == len(v) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v)), "a number of seeds (3: seeds 0, 1, 2) or a list of distinct seeds"),
}

#: section -> key -> (kind, required); [train] takes ``recipe`` and every `Recipe` key (epochs required).
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "model": {"name": ("str", True), "num_classes": ("count", False), "input_size": ("size", False),
              "weights": ("str", False), "pretrained": ("bool", False), "kwargs": ("table", False),
              "stem": ("stem", False)},
    "data": {"train": ("str", True), "val": ("str", False), "subset": ("fraction", False)},
    "search": {"metric": ("metric", True), "delta": ("delta", False), "repeats": ("repeats", False),
               "stages": ("stages", False), "max_msa": ("per_stage", False), "heads": ("per_stage", False),
               "window": ("count", False), "dim_head": ("count", False), "threads": ("count", False),
               "deterministic": ("bool", False)},
}


def _kind_check(key: str, kind: str, required: bool) -> Check:
    """The `Check` of a search-spec key of `kind` (a `_KINDS` entry)."""
    test, give = _KINDS[kind]

    def convert(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"{key} = {value!r}; give {give}")
        return value

    return Check(convert, required)


def _section_checks(section: str) -> dict[str, Check]:
    if section == "train":
        return {"recipe": _kind_check("recipe", "str", True), **field_checks(Recipe, required=("epochs",))}
    return {key: _kind_check(key, kind, required) for key, (kind, required) in _SCHEMA[section].items()}


#: the schema `surgeon.recipe_check.check_sections` validates a search spec by.
_CHECKS: dict[str, dict[str, Check]] = {s: _section_checks(s) for s in ("model", "data", "train", "search")}


def _train_recipe(errors: RecipeErrors, values: dict[str, Any], base_dir: Path) -> Recipe | None:
    """The [train] section's valid `values` as a `Recipe`: its preset or training TOML with the
    keys; range problems go to `errors`. None when the base recipe cannot be read."""
    spec = values.pop("recipe", None)
    if spec is None:  # missing or refused: already reported
        return None
    if spec in TRAIN_PRESETS:
        base = TRAIN_PRESETS[spec]
    else:
        file = base_dir / spec
        try:
            if not file.exists():
                raise SurgeonError(f"recipe = {spec!r} is neither a preset ({', '.join(TRAIN_PRESETS)}) nor a "
                                   "training TOML file")
            base = training_recipe(check_input(file, "training recipe"))
        except SurgeonError as exc:
            errors.add("train", "recipe", str(exc))
            return None
    r = dataclasses.replace(base, **values)
    for key, message in recipe_problems(r):
        if key == "epochs" and r.epochs + r.warmup_epochs < 1:
            message = (f"the budget per candidate is zero epochs (epochs = {r.epochs}, warmup_epochs = "
                       f"{r.warmup_epochs}); give epochs >= 1")
        errors.add("train", key, message)
    return r


def _python_spec(path: Path, text: str) -> tuple[Any, Callable[[Search], Steps]]:
    """SETTINGS and the candidates generator function of a Python spec."""
    spec = importlib.util.spec_from_file_location(f"surgeon_spec_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}",
                                                  path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[module.__name__] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - any error in the user's file: name it in one line
        raise SurgeonError(f"{path}: the search spec does not run ({type(exc).__name__}: {first_line(exc, 100)})") from None
    generator = getattr(module, "candidates", None)
    if not inspect.isgeneratorfunction(generator):
        raise SurgeonError(f"{path}: define a generator function candidates(search) that yields lists of candidates")
    if not hasattr(module, "SETTINGS"):
        raise SurgeonError(f"{path}: define SETTINGS, a dict with the sections {', '.join(_SCHEMA)}")
    return module.SETTINGS, generator


def search_spec(path: str | os.PathLike) -> SearchSpec:
    """Read and validate a search spec: a TOML file (the build-up rules) or a Python file with
    SETTINGS and its own ``candidates(search)`` generator. Unknown or missing sections and keys,
    values of the wrong kind and a zero budget are all reported at once, each with its file, line
    and section (`surgeon.recipe_check`)."""
    p = check_input(path, "search spec", "e.g. recipes/digits_buildup.toml")
    text = p.read_text()
    if p.suffix == ".toml":
        try:
            raw: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SurgeonError(f"{p}: not valid TOML ({exc})") from None
        generator: Callable[[Search], Steps] = buildup
    elif p.suffix == ".py":
        raw, generator = _python_spec(p, text)
    else:
        raise SurgeonError(f"{p}: a search spec is a .toml file, or a .py file with SETTINGS and candidates(search)")

    errors = _errors(p, text)
    values = check_sections(errors, raw, _CHECKS)
    m, d, s = (values.get(k, {}) for k in ("model", "data", "search"))
    kwargs = dict(m.get("kwargs", {}))
    if "weights" in m:
        weights = Path(m["weights"]).expanduser()
        weights = weights if weights.is_absolute() else p.parent / weights
        try:
            kwargs["weights"] = str(check_input(weights, "weights file"))
        except SurgeonError as exc:
            errors.add("model", "weights", str(exc))
    if m.get("pretrained"):
        kwargs["pretrained"] = True
    r = _train_recipe(errors, dict(values.get("train", {})), p.parent)
    if r is not None and "input_size" in m:
        r = dataclasses.replace(r, input_size=tuple(m["input_size"]))
    val = default_val_spec(d["train"], d.get("val")) if "train" in d else None
    if "train" in d and val is None:
        errors.add("data", "val" if "val" in d else "train", "the search compares candidates on validation data; "
                   "give [data] val, a labelled dataset (digits, cifar100:ROOT, a folder)")
    errors.raise_if_any()  # every problem of the spec at once
    setup = Setup(m["name"], kwargs, m.get("num_classes"), d["train"], val, d.get("subset"), r, m.get("stem"),
                  s.get("threads", 1), s.get("deterministic", False))
    repeats = s.get("repeats", 1)
    return SearchSpec(p, text, setup, generator, s["metric"], float(s.get("delta", 0.0)),
                        tuple(range(repeats)) if isinstance(repeats, int) else tuple(repeats),
                        tuple(s["stages"]) if "stages" in s else None, s.get("max_msa"), s.get("heads"),
                        s.get("window"), s.get("dim_head", 64), model={k: m[k] for k in sorted(m)})
