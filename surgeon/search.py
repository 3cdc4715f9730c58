"""Build-up searches: the paper's AlterNet design procedure, automated, resumable and parallel.

    result = surgeon.run_search("recipes/digits_buildup.toml", "runs/digits", workers=2)
    [(r["id"], r["mean"], r["accepted"]) for r in result.records], result.best["msa"]

    surgeon search recipes/digits_buildup.toml --out runs/digits --workers 2
    surgeon report runs/digits --out buildup.png

The build-up rules (PAPER.md, "AlterNet and the build-up rules"), as `buildup` applies them:

1. Step 0 trains the base model (the baseline); it is the first best.
2. From the last allowed stage backwards, the next candidate is the best architecture with one
   more MSA in the stage: `surgeon.alternate` on the base model with the candidate's MSA counts,
   so a stage of n conv blocks holding m MSAs reads [Conv] * (n - 2m) + [Conv, MSA] * m.
3. Every candidate is trained from scratch once per seed in ``repeats`` (`surgeon.train` with the
   recipe's budget) and scored by the mean over the seeds of the metric on the validation data.
4. After an accept the search stays in the stage while m + 1 <= n / 2 and m + 1 <= ``max_msa``;
   after a reject, or at the cap, it moves to the stage before; it stops after the first allowed
   stage.

Acceptance, for any generator: the candidates of a step train independently; the best of them
(by mean; ties go to the first) is accepted when it beats the best so far by at least ``delta``
and strictly (higher ``acc`` / ``top5``, lower ``nll`` / ``brier`` / ``ece``); the others are
rejected. A candidate whose training diverges (or runs out of device memory) is recorded as
failed with the reason, counts as rejected, and the search goes on.

Recipes. A TOML file (`search_recipe` validates it; unknown or missing keys are named with their
line)::

    [model]   name (timm / tv: name or surgeon file), num_classes?, input_size? [C, H, W],
              weights?, pretrained?, stem? ("cifar": `surgeon.cifar_stem`), [model.kwargs]
              (constructor arguments)
    [data]    train (a surgeon.data spec), val? (default: the test split), subset?
    [train]   recipe (preset or training TOML), epochs (the budget per candidate, after warmup),
              any other `surgeon.Recipe` key (warmup_epochs, lr, batch_size, ...)
    [search]  metric (acc | top5 | nll | brier | ece), delta? (0), repeats? (seeds: [0, 1, 2] or 3),
              stages? (default: every stage with >= 2 conv blocks), max_msa? (n / 2; or per stage),
              heads? (3 * 2^(i-1); or per stage), window? (min(7, map)), dim_head? (64),
              threads? (torch CPU threads per training: 1), deterministic? (false; true: torch's
              deterministic algorithms, for CUDA)

or a Python file defining ``SETTINGS`` (the same sections as a dict) and a generator
``candidates(search)`` that yields the steps: each a list of `Candidate` built with
``search.msa({"c4": 1})`` or ``search.candidate(name, edit, on=...)`` (``edit`` takes the block
graph and applies surgeon passes with registered block names, e.g. ``surgeon.insert(g,
after="c3.b-1", module="smoothing")``); each ``yield`` returns that step's records, whose
``accepted`` decides what comes next (recipes/smoothing_buildup.py). Blocks a Python recipe
registers itself exist only in its own process: run such searches with ``workers=1``.

Outputs in OUT: ``results.jsonl`` (one line per candidate: id, step, name, MSA counts and block
addresses, the passes that build it, per-seed metrics, mean / std, accepted, failed + reason),
``candidates/<id>/seed<k>.safetensors`` (the trained model; ``seed<k>.run/`` its checkpoint and
logs, ``seed<k>.json`` its outcome and training seconds), ``best.safetensors`` (the best
candidate's best seed), ``buildup.png`` (the chart, `surgeon.plots.plot_buildup`), and a copy of
the recipe (``recipe.toml`` / ``recipe.py``), ``search.json`` (its hash and resolved settings:
resuming with another recipe is refused) and ``train.toml`` (the candidates' training recipe, for
``surgeon train --recipe``).

Resume (``resume=True``, ``--resume``): the generator is replayed; candidates in results.jsonl
and seeds with an outcome file are not trained again, a training with a checkpoint continues from
it (``surgeon.train(..., resume=True)``), so a resumed search writes the results file an
uninterrupted one writes. Seeds fix the initialisation (base model and new blocks), data order
and augmentation: the same recipe makes the same decisions.

Parallel: ``workers=N`` runs the (candidate, seed) trainings of a step in N local processes (spawn
context; GPUs, when present, dealt round-robin). Every job, in this process or a worker, runs with
the recipe's ``threads`` torch threads (default 1; restored afterwards) and, with ``deterministic =
true``, torch's deterministic algorithms (`surgeon.training.fixed_numerics`): CPU kernels reduce in
an order that depends on the thread count, so fixing it makes results.jsonl the same with any
``workers``. search.json records both.

Beyond one machine: ``backend="ray"`` (``--backend ray``) runs every (candidate, seed) training as
one Ray task (`surgeon.executors`) on the cluster at ``address`` (else a local one), with
``job_cpus`` / ``job_gpus`` per task; the decisions and results.jsonl are those of the local engine.
The tasks write the models, checkpoints and outcome files into OUT, which must be a filesystem
every node shares (a relative OUT on a multi-node cluster is refused), so ``resume`` continues from
what they wrote even after the driver was killed. A task whose worker dies is run again up to
``retries`` times, then recorded as failed (the candidate is rejected). ``job_gpus > 1`` trains the
candidate with ``torchrun --nproc-per-node job_gpus -m surgeon.cli train`` inside its task
(`surgeon.train` under torchrun: DDP, its own checkpoints and resume)::

    surgeon.run_search("recipes/alternet50_cifar100.toml", "/shared/runs/alter50", backend="ray",
                       address="HEAD:6379", job_gpus=8, retries=2)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import torch
from torch import nn

from . import checks, data as sdata
from . import provenance
from .errors import SurgeonError, first_line
from .executors import Executor, RayExecutor
from .executors import executor as make_executor
from .graph import BlockGraph, graph
from .io import atomic_path, check_input
from .jsonio import dumps
from .tables import Tabular
from .io import save as save_model
from .models import input_size_of, load_model
from .passes import alternate, apply_passes, cifar_stem
from .recipe_check import Check, RecipeErrors, check_sections, field_checks
from .runfolder import check_spawn_safe, undo_on_failure
from .training import RECIPES as TRAIN_PRESETS
from .training import (
    Diverged,
    Recipe,
    build_for_training,
    fixed_numerics,
    default_val_spec,
    recipe_problems,
    run_dir_for,
    train,
    training_recipe,
)

__all__ = [
    "METRICS",
    "Candidate",
    "Job",
    "Search",
    "SearchRecipe",
    "SearchResult",
    "Setup",
    "build_model",
    "buildup",
    "read_records",
    "run_search",
    "search_recipe",
    "search_report",
    "train_candidate",
]

#: Metrics a search can optimise: +1 higher is better, -1 lower is better.
METRICS: dict[str, int] = {"acc": 1, "top5": 1, "nll": -1, "brier": -1, "ece": -1}

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,80}"  # candidate names: they become folder names


@dataclass(frozen=True)
class Candidate:
    """One architecture: ``passes`` (surgeon's recorded pass entries) replayed on the freshly
    built base model; ``msa`` counts its MSA blocks per stage, ``msa_blocks`` gives their addresses."""

    name: str
    passes: tuple[dict[str, Any], ...] = ()
    msa: dict[str, int] = field(default_factory=dict)
    msa_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    """What every candidate's training shares; plain data, so that worker processes receive it.
    ``train`` holds the input size; ``model_kwargs`` the constructor arguments, weights, pretrained."""

    model: str
    model_kwargs: dict[str, Any]
    num_classes: int | None
    data: str
    val: str | None
    subset: float | None
    train: Recipe
    stem: str | None = None  # "cifar": `surgeon.cifar_stem` applied to the base model
    threads: int = 1  # torch CPU threads of every job: its numbers must not depend on how many run at once
    deterministic: bool = False  # torch's deterministic algorithms (CUDA)


@dataclass(frozen=True)
class Job:
    """One training: `candidate` with `seed`, written to `out` (its run folder beside it);
    ``resume``: that run folder holds a checkpoint of an earlier attempt, to continue."""

    candidate: Candidate
    seed: int
    setup: Setup
    out: Path
    resume: bool = False
    device: str | None = None
    progress: bool = False
    gpus: int = 0  # > 1: the training runs under torchrun over that many GPUs (one per rank)


Steps = Generator[list[Candidate], list[dict[str, Any]], None]
Evaluator = Callable[[Job], Mapping[str, float]]


# ----------------------------------------------------------------------------------------------
# Recipes


@dataclass(frozen=True)
class SearchRecipe:
    """A validated search recipe (see the module docstring); `search_recipe` reads one."""

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
        """Where a key (or a section) of the recipe is, for messages: ``FILE (line N) [section]``."""
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
    """The problem collector of a search recipe (`surgeon.recipe_check`; lines for TOML files)."""
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
    """The `Check` of a search-recipe key of `kind` (a `_KINDS` entry)."""
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


#: the schema `surgeon.recipe_check.check_sections` validates a search recipe by.
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


def _python_recipe(path: Path, text: str) -> tuple[Any, Callable[[Search], Steps]]:
    """SETTINGS and the candidates generator function of a Python recipe."""
    spec = importlib.util.spec_from_file_location(f"surgeon_recipe_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}",
                                                  path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[module.__name__] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - any error in the user's file: name it in one line
        raise SurgeonError(f"{path}: the recipe does not run ({type(exc).__name__}: {first_line(exc, 100)})") from None
    generator = getattr(module, "candidates", None)
    if not inspect.isgeneratorfunction(generator):
        raise SurgeonError(f"{path}: define a generator function candidates(search) that yields lists of candidates")
    if not hasattr(module, "SETTINGS"):
        raise SurgeonError(f"{path}: define SETTINGS, a dict with the sections {', '.join(_SCHEMA)}")
    return module.SETTINGS, generator


def search_recipe(path: str | os.PathLike) -> SearchRecipe:
    """Read and validate a search recipe: a TOML file (the build-up rules) or a Python file with
    SETTINGS and its own ``candidates(search)`` generator. Unknown or missing sections and keys,
    values of the wrong kind and a zero budget are all reported at once, each with its file, line
    and section (`surgeon.recipe_check`)."""
    p = check_input(path, "search recipe", "e.g. recipes/digits_buildup.toml")
    text = p.read_text()
    if p.suffix == ".toml":
        try:
            raw: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SurgeonError(f"{p}: not valid TOML ({exc})") from None
        generator: Callable[[Search], Steps] = buildup
    elif p.suffix == ".py":
        raw, generator = _python_recipe(p, text)
    else:
        raise SurgeonError(f"{p}: a search recipe is a .toml file, or a .py file with SETTINGS and candidates(search)")

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
    errors.raise_if_any()  # every problem of the recipe at once
    setup = Setup(m["name"], kwargs, m.get("num_classes"), d["train"], val, d.get("subset"), r, m.get("stem"),
                  s.get("threads", 1), s.get("deterministic", False))
    repeats = s.get("repeats", 1)
    return SearchRecipe(p, text, setup, generator, s["metric"], float(s.get("delta", 0.0)),
                        tuple(range(repeats)) if isinstance(repeats, int) else tuple(repeats),
                        tuple(s["stages"]) if "stages" in s else None, s.get("max_msa"), s.get("heads"),
                        s.get("window"), s.get("dim_head", 64), model={k: m[k] for k in sorted(m)})


# ----------------------------------------------------------------------------------------------
# What a candidate generator sees


class Search:
    """What a candidate generator works with.

    Attributes:
        recipe: the `SearchRecipe`.
        setup: the training every candidate shares (classes from the data, input size resolved).
        base: the base model (random weights), for inspection; candidates never modify it.
        graph: its block graph at the training input size.
        stages: the stages the search may change, in model order (default: those with >= 2
            conv blocks, i.e. room for an MSA).
        best: the record of the best candidate so far (None before the first accept).
    """

    def __init__(self, recipe: SearchRecipe) -> None:
        self.recipe = recipe
        setup = recipe.setup
        if setup.num_classes is None:
            classes = getattr(sdata.dataset(setup.data, train=True), "classes", None)
            setup = dataclasses.replace(setup, num_classes=len(classes) if classes else None)
        self.base = load_model(setup.model, num_classes=setup.num_classes, **setup.model_kwargs)
        size = input_size_of(self.base, setup.train.input_size)  # the recipe's, else what the model records
        if setup.stem:
            self.base = cifar_stem(self.base, input_size=size)
        self.setup = dataclasses.replace(setup, train=dataclasses.replace(setup.train, input_size=size))
        self.input_size = size
        self.graph = graph(self.base, input_size=size)
        self.best: dict[str, Any] | None = None
        self._msa: dict[tuple[tuple[str, int], ...], Candidate] = {}  # msa() by counts: built once
        stages = self.graph.stages
        for key in ("max_msa", "heads"):
            table = getattr(recipe, key)
            lacking = [k for k in table if k not in stages] if isinstance(table, dict) else []
            if lacking:
                raise SurgeonError(f"{recipe.where('search', key)}: {key} names stage(s) {', '.join(lacking)} that "
                                   f"{setup.model} lacks (its stages: {', '.join(stages)})")
        if recipe.stages is None:
            self.stages = tuple(s for s in stages if self.conv_blocks(s) >= 2)
        else:
            lacking = [s for s in recipe.stages if s not in stages]
            if lacking:
                raise SurgeonError(f"{recipe.where('search', 'stages')}: {setup.model} has no stage "
                                   f"{', '.join(lacking)} (its stages: {', '.join(stages)}; see surgeon inspect)")
            self.stages = tuple(s for s in stages if s in recipe.stages)

    def conv_blocks(self, stage: str) -> int:
        """n: the conv blocks of `stage` in the base model."""
        return sum(b.kind == "conv" for b in self.graph.stages[stage])

    def max_msa(self, stage: str) -> int:
        """The most MSAs `stage` may hold: n // 2 (m <= n / 2), capped by the recipe's max_msa."""
        cap = self.recipe.max_msa
        cap = cap.get(stage) if isinstance(cap, dict) else cap
        return min(self.conv_blocks(stage) // 2, cap or self.conv_blocks(stage))

    def candidate(self, name: str, edit: Callable[[BlockGraph], nn.Module] | None = None, *,
                  on: Candidate | None = None) -> Candidate:
        """The candidate `name`: the passes of `on` (default: none, the base model), then those
        `edit` applies (it takes the block graph of that model at the input size and returns the
        edited model; registered block names only, so that the candidate can be rebuilt and saved)."""
        if not re.fullmatch(_NAME, name):
            raise SurgeonError(f"candidate name {name!r}: use letters, digits and _ . + = - (it names a folder)")
        passes = [dict(p) for p in on.passes] if on is not None else []
        model = apply_passes(self.base, passes) if passes else self.base
        if edit is not None:
            known = len(provenance.cfg_of(model).passes)
            edited = edit(self.graph if model is self.base else graph(model, input_size=self.input_size))
            added = list(provenance.cfg_of(edited).passes)[known:] if isinstance(edited, nn.Module) else []
            if not added:
                raise SurgeonError(f"candidate {name}: the edit must return the model edited with surgeon passes "
                                   "(alternate, insert, replace, remove)")
            if any(p.get("pass") == "opaque" for p in added):
                raise SurgeonError(f"candidate {name}: edited with a module object or factory, which cannot be rebuilt "
                                   "in a worker or saved; use a registered block name (surgeon.layers.registered())")
            passes, model = passes + added, edited
        msa: dict[str, int] = {}
        blocks = []
        for stage, members in graph(model, input_size=self.input_size).stages.items():
            for b in members:
                if b.kind == "msa":
                    msa[stage] = msa.get(stage, 0) + 1
                    blocks.append(b.address)
        return Candidate(name, tuple(json.loads(dumps(passes))), msa, tuple(blocks))

    def msa(self, counts: Mapping[str, int]) -> Candidate:
        """The base model with `counts` MSAs per stage (`surgeon.alternate` with the recipe's heads,
        window, dim_head; stochastic depth: the training recipe's drop_path); ``{}``: the baseline,
        named ``baseline``, else e.g. ``c3x1+c4x2``."""
        counts = {s: int(counts[s]) for s in self.graph.stages if counts.get(s)}
        key = tuple(counts.items())
        if key not in self._msa:
            self._msa[key] = self._alternated(counts)
        return self._msa[key]

    def _alternated(self, counts: dict[str, int]) -> Candidate:
        """`msa` without the cache."""
        if not counts:
            return self.candidate("baseline")
        r = self.recipe

        def edit(g: BlockGraph) -> nn.Module:
            try:
                return alternate(g, counts, heads=r.heads, window=r.window, dim_head=r.dim_head,
                                 drop_path=self.setup.train.drop_path)
            except SurgeonError as exc:
                raise SurgeonError(f"{r.where('search')}: {exc}") from None

        return self.candidate("+".join(f"{s}x{m}" for s, m in counts.items()), edit)


def buildup(search: Search) -> Steps:
    """The paper's build-up rules (module docstring): the baseline, then one more MSA at a time
    from the last allowed stage backwards, staying in a stage while its candidates are accepted
    and m + 1 <= min(n / 2, max_msa). Every stage is checked to take an MSA before any training."""
    for stage in search.stages:
        search.msa({stage: 1})  # refuses a stage with n < 2, a window larger than its map, ...
    yield [search.msa({})]
    counts: dict[str, int] = {}
    for stage in reversed(search.stages):
        while counts.get(stage, 0) < search.max_msa(stage):
            trial = {**counts, stage: counts.get(stage, 0) + 1}
            (record,) = yield [search.msa(trial)]
            if not record["accepted"]:
                break
            counts = trial


# ----------------------------------------------------------------------------------------------
# Training one candidate


def build_model(job: Job) -> nn.Module:
    """The candidate of `job`, initialised from its seed: the base model built by name (with the
    training recipe's stochastic depth) and the candidate's passes replayed."""
    s = job.setup
    torch.manual_seed(job.seed)
    model = build_for_training(s.model, s.train, s.num_classes, **s.model_kwargs)
    if s.stem:
        model = cifar_stem(model, input_size=s.train.input_size)
    return apply_passes(model, [dict(p) for p in job.candidate.passes])


def train_candidate(job: Job) -> dict[str, float]:
    """The default evaluator: `surgeon.train` of `build_model(job)` with the shared recipe and the
    job's seed into ``job.out`` (continuing its checkpoint when ``job.resume``); returns the last
    epoch's validation metrics (acc, nll, ...). Ctrl-C keeps the checkpoint and stops the search."""
    s = job.setup
    if job.gpus > 1:
        return _torchrun_candidate(job)
    run = train(build_model(job), s.data, recipe=s.train, out=job.out, resume=job.resume, overwrite=True, val=s.val,
                subset=s.subset, seed=job.seed, device=job.device, progress=job.progress)
    if run.interrupted:
        raise KeyboardInterrupt
    return {k.removeprefix("val_"): v for k, v in run.history[-1].items() if k.startswith("val_")}


def _torchrun_candidate(job: Job) -> dict[str, float]:
    """`train_candidate` over ``job.gpus`` GPUs of one node: the seeded, untrained candidate is
    saved beside the target, then ``torchrun --nproc-per-node GPUS -m surgeon.cli train`` trains
    it with DDP (surgeon.train under torchrun) into ``job.out``; the last epoch's validation
    metrics come from its log. A failed training (e.g. divergence) fails the candidate."""
    s = job.setup
    init = job.out.with_name(job.out.stem + ".init.safetensors")
    save_model(build_model(job), init, overwrite=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={job.gpus}",
               "-m", "surgeon.cli", "train", str(init), "--data", s.data, "--recipe",
               str(job.out.parents[2] / "train.toml"), "--seed", str(job.seed), "--out", str(job.out),
               *(["--val", s.val] if s.val else []), *(["--subset", str(s.subset)] if s.subset else []),
               *(["--resume"] if job.resume else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "diverged" in tail.lower():
            raise Diverged(tail)
        raise SurgeonError(f"torchrun training of {job.out.parent.name} seed {job.seed} failed: {tail}")
    last = json.loads((run_dir_for(job.out) / "log.jsonl").read_text().splitlines()[-1])
    return {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}


def _execute(evaluator: Evaluator, job: Job) -> dict[str, Any]:
    """One job's outcome: ``{"seed", "metrics" | "failed", "seconds"}``. Divergence and running
    out of device memory fail the candidate; any other error stops the search."""
    t0 = time.perf_counter()
    try:
        with fixed_numerics(job.setup.threads, job.setup.deterministic):  # the same wherever it runs
            metrics = evaluator(job)
        outcome: dict[str, Any] = {"seed": job.seed, "metrics": {
            k: float(v) if math.isfinite(float(v)) else None for k, v in metrics.items()}}
    except (Diverged, torch.OutOfMemoryError) as exc:
        outcome = {"seed": job.seed, "failed": first_line(exc)}
    outcome["seconds"] = time.perf_counter() - t0
    return outcome


def _task(evaluator: Evaluator, job: Job) -> dict[str, Any]:
    """`_execute` as one executor task (its numerics fixed inside, whatever runs it)."""
    outcome = _execute(evaluator, job)
    _write_outcome(job, outcome)  # by the task: a resumed search finds it even if the driver died
    return outcome


def _write_outcome(job: Job, outcome: dict[str, Any]) -> None:
    with atomic_path(job.out.with_suffix(".json")) as tmp:
        tmp.write_text(dumps(outcome))


class _Runner:
    """Runs a step's jobs on an executor (`surgeon.executors`): this process, local processes or
    Ray tasks, entered on the first job and left (pending jobs cancelled on an error) when the
    search ends. A job whose worker died on every attempt becomes a failed outcome."""

    def __init__(self, evaluator: Evaluator, executor: Executor) -> None:
        self.evaluator, self.executor = evaluator, executor
        self.entered = False

    @property
    def in_process(self) -> bool:
        return self.executor.in_process

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.entered:
            self.executor.__exit__(kind, exc, tb)

    def start(self) -> None:
        """Enter the executor (start processes, join the cluster) once."""
        if not self.entered:
            self.executor.__enter__()
            self.entered = True

    @property
    def job_gpus(self) -> float:
        return float(getattr(self.executor, "job_gpus", 0) or 0)

    def device(self, slot: int) -> str | None:
        """The device of a step's slot-th job: on Ray the GPU(s) the task is given (Ray sets
        CUDA_VISIBLE_DEVICES), locally the GPUs in turn."""
        if isinstance(self.executor, RayExecutor):
            return "cuda" if self.job_gpus else "cpu"
        return _device(slot)

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        """(job, outcome) as the jobs finish."""
        if not jobs:
            return
        self.start()
        for i, result in self.executor.map(_task, [(self.evaluator, job) for job in jobs]):
            if result.ok:
                yield jobs[i], result.value
            else:
                yield jobs[i], {"seed": jobs[i].seed, "failed": result.failed, "seconds": None}


def _device(slot: int) -> str | None:
    """The device of a step's slot-th job: the local GPUs in turn, else None (the model's, CPU)."""
    n = torch.cuda.device_count()
    return f"cuda:{slot % n}" if n else None


# ----------------------------------------------------------------------------------------------
# The engine


@dataclass
class SearchResult(Tabular):
    """A search's folder, its records (the lines of results.jsonl) and its chart."""

    out: Path
    records: list[dict[str, Any]]
    chart: Path | None = None
    input_size: tuple[int, int, int] | None = None  # (C, H, W) every candidate was trained and evaluated at
    input_size: tuple[int, int, int] | None = None  # (C, H, W) every candidate was trained and evaluated at

    @property
    def best(self) -> dict[str, Any] | None:
        """The record of the last accepted candidate, the search's answer."""
        return next((r for r in reversed(self.records) if r["accepted"]), None)

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: candidate x seed x validation metric (failed runs: value None)."""
        rows = []
        for r in self.records:
            ids = {"step": r["step"], "candidate": r["id"], "msa": " ".join(f"{s}:{n}" for s, n in r["msa"].items()),
                   "accepted": r["accepted"]}
            for run in r["runs"]:
                rows += [{**ids, "seed": run["seed"], "quantity": k, "value": v}
                         for k, v in run.get("metrics", {r["metric"]: None}).items()]
        return rows


def read_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records in ``OUT/results.jsonl`` ([] when it does not exist yet)."""
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SurgeonError(f"{path} is damaged ({exc}); restore it or start the search in another folder") from None


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two settings dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in dict.fromkeys([*old, *new]) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_folder(out: Path, recipe: SearchRecipe, resume: bool) -> None:
    """Refuse, before any work, an OUT that a new search must not use (a search already, or a
    folder with files) and, with `resume`, one that holds no search or another recipe's."""
    stamp = out / "search.json"
    if resume:
        if not stamp.is_file():
            raise SurgeonError(f"resume=True: {out} holds no search (no search.json); start it without resume=True")
        old = json.loads(stamp.read_text())
        if old.get("sha256") != recipe.digest:
            diff = _differences(old.get("settings", {}), recipe.settings)
            raise SurgeonError(f"{out} was made by another recipe ({', '.join(diff[:4]) or 'its settings'} differ); "
                               f"resume with that recipe ({out / old.get('copy', 'recipe.toml')}) or choose another out=")
    elif stamp.is_file():
        raise SurgeonError(f"{out} holds a search already; continue it with resume=True or choose another out=")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SurgeonError(f"{out} exists and is not an empty folder; choose another out= (nothing there is replaced)")


def _search_started(out: Path) -> bool:
    """Whether a search folder holds work worth resuming: a result or a training checkpoint."""
    return (out / "results.jsonl").is_file() or any((out / "candidates").glob("*/seed*.json")) or any(
        (out / "candidates").glob("*/*.run/checkpoint.pt"))


def _create_folder(out: Path, recipe: SearchRecipe, setup: Setup) -> None:
    """A new search's folder: the recipe's copy, search.json (its hash and settings) and train.toml."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SurgeonError(f"cannot create {out} ({first_line(exc, 80)}); choose another out=") from None
    copy = "recipe" + recipe.path.suffix
    (out / copy).write_text(recipe.text)
    lines = ["# the training recipe of every candidate: surgeon train MODEL --recipe train.toml"]
    lines += [f"{k} = {dumps('none' if v is None else v)}" for k, v in setup.train.to_dict().items()]
    (out / "train.toml").write_text("\n".join(lines) + "\n")
    with atomic_path(out / "search.json") as tmp:
        tmp.write_text(dumps({"recipe": str(recipe.path), "copy": copy, "sha256": recipe.digest,
                              "input_size": list(setup.train.input_size or ()), "threads": setup.threads,
                              "deterministic": setup.deterministic, "settings": recipe.settings},
                             indent=1, default=str))


class _Engine:
    """Runs the steps a generator yields, records them, decides, and writes the outputs."""

    def __init__(self, search: Search, out: Path, runner: _Runner, progress: bool,
                 on_record: Callable[[dict[str, Any]], None] | None) -> None:
        self.search, self.out, self.runner, self.progress, self.on_record = search, out, runner, progress, on_record
        self.done = {r["id"]: r for r in read_records(out)}
        self.records: list[dict[str, Any]] = []

    def run(self, steps: Steps, candidates: list[Candidate] | None) -> list[dict[str, Any]]:
        """Run the step `candidates` (the generator's first) and those `steps` yields after it."""
        step = 0
        while candidates is not None:
            sent = self.step(step, self._checked(candidates))
            self.records += sent
            with atomic_path(self.out / "results.jsonl") as tmp:
                tmp.write_text("".join(dumps(r) + "\n" for r in self.records))
            for record in sent:
                if self.on_record is not None:
                    self.on_record(record)
            try:
                candidates = steps.send(sent)
            except StopIteration:
                candidates = None
            step += 1
        return self.records

    def _checked(self, candidates: Any) -> list[Candidate]:
        names = [c.name for c in candidates] if isinstance(candidates, (list, tuple)) and all(
            isinstance(c, Candidate) for c in candidates) else []
        if not names or len(set(names)) != len(names):
            raise SurgeonError(f"{self.search.recipe.path}: candidates() yielded {candidates!r:.80}; yield a non-empty "
                               "list of Candidate with distinct names (search.msa(...), search.candidate(...))")
        return list(candidates)

    def step(self, step: int, candidates: list[Candidate]) -> list[dict[str, Any]]:
        """Train what is not done yet of the step's (candidate, seed) pairs, then record and decide."""
        repeats = self.search.recipe.repeats
        ids = [f"{step:02d}-{c.name}" for c in candidates]
        runs: dict[tuple[str, int], dict[str, Any]] = {}
        jobs: list[Job] = []
        for cid, c in zip(ids, candidates):
            if cid in self.done:
                if self.done[cid]["passes"] != list(c.passes):
                    raise SurgeonError(f"{self.out / 'results.jsonl'}: candidate {cid} was built otherwise; the folder "
                                       "was made by another recipe or surgeon version: choose another out=")
                runs.update({(cid, run["seed"]): run for run in self.done[cid]["runs"]})
                continue
            for seed in repeats:
                target = self.out / "candidates" / cid / f"seed{seed}.safetensors"
                if target.with_suffix(".json").is_file():
                    runs[cid, seed] = json.loads(target.with_suffix(".json").read_text())
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                jobs.append(Job(c, seed, self.search.setup, target, (run_dir_for(target) / "checkpoint.pt").is_file(),
                                self.runner.device(len(jobs)), self.progress and self.runner.in_process,
                                int(self.runner.job_gpus) if self.runner.job_gpus >= 2 else 0))
        for job, outcome in self.runner.run(jobs):
            if "failed" in outcome and outcome["seconds"] is None:  # its worker died: the task wrote nothing
                _write_outcome(job, outcome)
            runs[job.out.parent.name, job.seed] = outcome
        records = [self._record(step, cid, c, [runs[cid, s] for s in repeats]) for cid, c in zip(ids, candidates)]
        self._decide(records)
        return records

    def _record(self, step: int, cid: str, c: Candidate, runs: list[dict[str, Any]]) -> dict[str, Any]:
        metric, sign = self.search.recipe.metric, METRICS[self.search.recipe.metric]
        runs = [{"seed": r["seed"], **({"failed": r["failed"]} if "failed" in r else {"metrics": r["metrics"]})}
                for r in runs]
        reason = next((f"seed {r['seed']}: {r['failed']}" for r in runs if "failed" in r), None)
        values = [r["metrics"].get(metric) for r in runs if "metrics" in r]
        if reason is None and any(v is None for v in values):
            if not all(metric in r["metrics"] for r in runs):
                raise SurgeonError(f"the evaluator returned no {metric!r} for {cid} (it gave "
                                   f"{', '.join(runs[0]['metrics']) or 'nothing'}); return the recipe's metric")
            reason = f"the validation {metric} is not finite"
        mean = statistics.fmean(values) if reason is None else None
        std = statistics.stdev(values) if reason is None and len(values) > 1 else (0.0 if reason is None else None)
        model = None
        if reason is None:
            seed = max(runs, key=lambda r: sign * r["metrics"][metric])["seed"]
            path = self.out / "candidates" / cid / f"seed{seed}.safetensors"
            model = str(path.relative_to(self.out)) if path.is_file() else None
        return {"id": cid, "step": step, "name": c.name, "msa": c.msa, "msa_blocks": list(c.msa_blocks),
                "passes": list(c.passes), "metric": metric, "runs": runs, "mean": mean, "std": std,
                "accepted": False, "failed": reason is not None, "reason": reason, "model": model}

    def _decide(self, records: list[dict[str, Any]]) -> None:
        """Accept the step's best candidate when it beats the best so far by >= delta, strictly."""
        recipe = self.search.recipe
        sign = METRICS[recipe.metric]
        ok = [r for r in records if not r["failed"]]
        if not ok:
            return
        winner = max(ok, key=lambda r: sign * r["mean"])
        best = self.search.best
        gain = None if best is None else sign * (winner["mean"] - best["mean"])
        if gain is None or (gain > 0 and gain >= recipe.delta):
            winner["accepted"] = True
            self.search.best = winner


def _shared_folder(folder: Path, ex: RayExecutor) -> Path:
    """The search folder as the tasks see it: absolute; on a multi-node cluster it must be a
    path every node shares, so a relative one is refused."""
    if not folder.is_absolute() and not folder.expanduser().is_absolute() and ex.multi_node:
        raise SurgeonError(f"out={folder} is relative, but the Ray cluster has {len(ex.nodes())} nodes; give the "
                           "absolute path of a folder on a filesystem every node shares (e.g. /shared/runs/NAME)")
    return folder.expanduser().resolve()


def _chart(records: list[dict[str, Any]], path: Path) -> Path:
    from .plots import plot_buildup, save_figure

    return save_figure(plot_buildup(records).figure, path)


def run_search(recipe: str | os.PathLike | SearchRecipe, out: str | os.PathLike, *, resume: bool = False,
               workers: int = 1, evaluator: Evaluator | None = None, progress: bool = False,
               on_record: Callable[[dict[str, Any]], None] | None = None, backend: str | Executor = "local",
               address: str | None = None, job_cpus: float | None = None, job_gpus: float = 0,
               retries: int = 0) -> SearchResult:
    """Run the search `recipe` describes into the folder `out` (see the module docstring).

    Args:
        recipe: a search recipe file (TOML or Python) or a `SearchRecipe`.
        out: a new (or empty) folder; with `resume`, the folder of an interrupted search made by
            the same recipe (another recipe is refused).
        workers: (candidate, seed) trainings of a step run at once, in spawned local processes.
        backend: ``local`` (this process or `workers` processes) or ``ray`` (one Ray task per
            (candidate, seed) on the cluster at `address`, else a local one; `job_cpus` /
            `job_gpus` per task); or an `surgeon.executors.Executor`. A job whose worker dies is
            run again up to `retries` times, then recorded as failed (the candidate is rejected).
        evaluator: ``evaluator(job) -> metrics`` (default `train_candidate`); a top-level function
            when workers > 1. Raise `surgeon.training.Diverged` to fail a candidate.
        progress: training progress bars (one worker only).
        on_record: called with each candidate's record once its step is decided.

    Returns:
        `SearchResult`; ``OUT/best.safetensors`` is the best candidate's best seed (when trained
        models exist) and ``OUT/buildup.png`` the build-up chart.
    """
    checks.args(job_cpus=job_cpus, job_gpus=job_gpus, retries=retries)
    if not isinstance(workers, int) or workers < 1:
        raise SurgeonError(f"workers = {workers!r}; give 1 or more local processes")
    ex = make_executor(backend, workers=workers, address=address, job_cpus=job_cpus, job_gpus=job_gpus,
                       retries=retries)
    r = recipe if isinstance(recipe, SearchRecipe) else search_recipe(recipe)
    folder = Path(out)
    _check_folder(folder, r, resume)
    if workers > 1:
        check_spawn_safe(f"run_search(workers={workers})")
    undo = None  # a failed start removes the folder it made (never an earlier run's files)
    try:
        with _Runner(evaluator or train_candidate, ex) as runner:
            if isinstance(ex, RayExecutor):  # join the cluster first: its errors come before any file
                runner.start()
                folder = _shared_folder(folder, ex)
            search = Search(r)
            steps = r.candidates(search)
            first = next(steps, None)  # the generator's own checks run before anything is written
            if not resume:
                undo = undo_on_failure(folder, _search_started)
                _create_folder(folder, r, search.setup)
            records = _Engine(search, folder, runner, progress, on_record).run(steps, first)
    except BaseException:
        if undo is not None:
            undo()
        raise
    best = SearchResult(folder, records).best
    if best is not None and best["model"] is not None:
        with atomic_path(folder / "best.safetensors") as tmp:
            shutil.copyfile(folder / best["model"], tmp)
    return SearchResult(folder, records, _chart(records, folder / "buildup.png") if records else None,
                        search.input_size)


def search_report(out: str | os.PathLike, *, chart: str | os.PathLike | None = None) -> SearchResult:
    """The records of the search in `out`, with its build-up chart redrawn (to `chart`, default
    ``OUT/buildup.png``; the suffix picks the format)."""
    folder = Path(out)
    if not (folder / "search.json").is_file():
        raise SurgeonError(f"{folder} holds no search (no search.json); give the out= folder of surgeon search")
    records = read_records(folder)
    if not records:
        raise SurgeonError(f"{folder} has no finished candidate yet; continue the search with resume=True")
    return SearchResult(folder, records, _chart(records, Path(chart) if chart is not None else folder / "buildup.png"))
