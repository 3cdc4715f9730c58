"""Compare models with all of the paper's measures, on the same batches and seeds, resumably.

    cmp = surgeon.compare(["r18.safetensors", "vit.safetensors"], "digits", out="report/", settings=QUICK)
    cmp.claims()                        # the paper's claims, each with its measured quantity and verdict
    cmp.results["r18"]["fourier"]       # each measure as the JSON of its result type
    cmp = surgeon.read_comparison("report/")    # read back from report/results.json

Measures (`MEASURES`; their sizes and runners are `surgeon.comparison.measures`), each an existing
analysis run unchanged on every model:

- ``fourier`` / ``variance``: `surgeon.probe` on every block (Fig. 2a, 8 / Fig. 9), test split;
- ``hessian``: `surgeon.hessian_spectrum`, the top-k (largest magnitude, the paper's) eigenvalues
  per training mini-batch, and the most negative one (``which="SA"``, k = 1) per batch (Fig. 1c, 4);
- ``landscape``: `surgeon.landscape` on two filter-normalised random directions (Fig. 1a);
- ``frequency_noise``: `surgeon.frequency_noise_robustness` (Fig. 2b), test split;
- ``lesions``: `surgeon.lesion_study` of every block (Fig. 10), test split.

Every model reads the same data: one loader per model from the same spec, seed and batch size
(``hessian_batch_size`` for the Hessian where set; clean images; the test split for probes, noise and lesions, the shuffled training split, drawn
with `seed`, for the Hessian and the landscape), each at the model's own input size. Every random
draw (start vectors, directions, noise) is seeded with `seed`.

Persistence: with `out`, each finished (model, measure) is written at once to ``out/results.json``
(a temp file and a rename, so a kill leaves the previous file whole). ``resume=True`` reads it back
and skips the finished pairs; a file written with other models, data, measures or sizes is refused.
A landscape also keeps its finished points in ``out/partial/`` while it runs, so a killed landscape
continues from its last point. An interrupted measure (Ctrl-C) is not stored.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError
from surgeon.core.files import atomic_path, check_input
from surgeon.core.jsonio import dumps
from surgeon.core.tables import Tabular
from surgeon.parallel.run import Run
from surgeon._compat import moved_keywords, options_from
from surgeon.comparison.measures import (MEASURES, PAPER, QUICK, RUNNERS, Context, Settings,  # noqa: F401  (the
                                         check_measures, with_settings)  # public names of 0.1's compare module)

__all__ = ["MEASURES", "Settings", "PAPER", "QUICK", "ComparisonResult", "compare", "read_comparison"]

FORMAT = "surgeon-compare"
VERSION = 1
RESULTS = "results.json"


# ----------------------------------------------------------------------------------------------
# The comparison


@dataclass
class ComparisonResult(Tabular):
    """What `compare` measured: ``models`` (one dict per model: label, spec, input size, classes
    and its blocks), ``results[label][measure]`` (the JSON form of the measure's result type),
    ``seconds[label][measure]``, the ``config`` it ran with and, when persisted, its ``path``."""

    config: dict[str, Any]
    models: list[dict[str, Any]]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    path: Path | None = None
    interrupted: bool = False

    @property
    def labels(self) -> list[str]:
        return [m["label"] for m in self.models]

    @property
    def measures(self) -> list[str]:
        return list(self.config["measures"])

    def model(self, label: str) -> dict[str, Any]:
        for m in self.models:
            if m["label"] == label:
                return m
        raise SurgeonError(f"no model {label!r} in this comparison; models: {', '.join(self.labels)}")

    def done(self, label: str, measure: str) -> bool:
        return measure in self.results.get(label, {})

    def claims(self) -> list[Any]:
        """The paper's claims with the measured quantities and verdicts (`surgeon.claims`)."""
        from surgeon.comparison.claims import evaluate_claims

        return evaluate_claims(self)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "config": self.config, "models": self.models,
                "results": self.results, "seconds": self.seconds, "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: one per claim and model (claim, figure, model, quantity, value, verdict)."""
        rows = []
        for c in self.claims():
            for label in self.labels:  # a model the claim could not measure: its row with no value
                rows.append({"claim": c.id, "figure": c.figure, "model": label, "quantity": c.quantity,
                             "value": c.values.get(label), "verdict": c.verdict})
        return rows

    def report(self, out: str | os.PathLike) -> Path:
        """Write the HTML report, figures and CSV tables into the folder `out` (`surgeon.report`)."""
        from surgeon.comparison.report import write_report

        return write_report(self, out)

    def _repr_html_(self) -> str:
        from surgeon.comparison.report import comparison_html

        return comparison_html(self, figures=False)

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), title="comparison")


def read_comparison(path: str | os.PathLike) -> ComparisonResult:
    """A `ComparisonResult` read back from a report folder or its ``results.json``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / RESULTS
    check_input(p, "comparison file", "give the folder surgeon compare wrote (it holds results.json)")
    try:
        saved = json.loads(p.read_text())
        ok = saved.get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise SurgeonError(f"{str(p)!r} is not a results.json written by surgeon compare; give its report folder")
    if saved.get("version") != VERSION:
        raise SurgeonError(f"{str(p)!r} has comparison format version {saved.get('version')}, this surgeon reads "
                           f"{VERSION}; run surgeon compare again")
    return ComparisonResult(saved["config"], saved["models"], saved.get("results", {}), saved.get("seconds", {}), p,
                      bool(saved.get("interrupted", False)))


def _write(cmp: ComparisonResult) -> None:
    if cmp.path is None:
        return
    with atomic_path(cmp.path) as tmp:
        tmp.write_text(dumps(cmp.to_dict(), indent=1) + "\n")


# ----------------------------------------------------------------------------------------------
# Entry point


def model_labels(models: Sequence[Any], labels: Sequence[str] | None) -> list[str]:
    """One label per model: `labels` (a repeated one numbered, ``r18 (2)``) or each model's name
    or file stem."""
    from surgeon.model.runtime import display_name

    if labels is None:
        labels = [Path(m).stem if isinstance(m, (str, os.PathLike)) and str(m).endswith(".safetensors")
                  else (str(m) if isinstance(m, (str, os.PathLike)) else display_name(m)) for m in models]
    labels = list(labels)
    if len(labels) != len(models):
        raise SurgeonError(f"{len(labels)} labels for {len(models)} models; give one label per model")
    seen: dict[str, int] = {}
    unique = []
    for lab in labels:  # the same model twice (two files of one name): number them
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return unique


def _model_info(label: str, spec: str, model: Any, size: tuple[int, int, int]) -> dict[str, Any]:
    """The model's entry in results.json: its blocks (kind, stage, depth, grid, params, FLOPs)."""
    from surgeon.blockgraph import graph

    g = graph(model, input_size=size)
    blocks = [{"address": b.address, "kind": b.kind, "stage": b.stage, "depth": b.depth,
               "downsamples": b.downsamples, "grid": list(b.grid) if b.grid else None, "params": b.params,
               "flops": b.flops} for b in g.blocks]
    classes = int(g.blocks[-1].out_shape[-1]) if g.blocks and g.blocks[-1].out_shape else None
    return {"label": label, "spec": spec, "input_size": list(size), "num_classes": classes,
            "params": sum(p.numel() for p in model.parameters()), "blocks": blocks}


def _load(spec: Any, num_classes: int | None, seed: int) -> tuple[str, Any]:
    import torch

    from surgeon.surgery.loading import load_model
    from surgeon.model.runtime import display_name

    if isinstance(spec, (str, os.PathLike)):
        torch.manual_seed(seed)  # a random-init model is the same on every run (and on resume)
        return str(spec), load_model(str(spec), num_classes=num_classes)
    if isinstance(spec, torch.nn.Module):
        return display_name(spec), spec
    raise SurgeonError(f"a model must be a name, a surgeon file or an nn.Module, not {type(spec).__name__}")


def compare(models: Sequence[Any] | Mapping[str, Any], data: str | os.PathLike = "digits",
            out: str | os.PathLike | None = None, *, measures: Iterable[str] | None = None,
            settings: Settings | None = None, num_classes: int | None = None, seed: int = 0, run: Run | None = None,
            **old: Any) -> ComparisonResult:
    """Run the paper's `measures` on every model on the same batches and seeds.

    Args:
        models: two or more model names, surgeon files (anything `surgeon.load_model` takes) or
            modules, or a mapping label -> model (the names in tables and figures; default: the
            name or the file's stem); a module is used as it is (never changed: each analysis
            restores it).
        data: a labelled data spec (`surgeon.data.loader`): ``digits``, ``cifar10:ROOT``, a folder.
        out: a folder for ``results.json``, written after every finished (model, measure).
        measures: a subset of `MEASURES` (default: all).
        settings: the sizes (a `Settings`; default `PAPER`; `QUICK`: a few minutes on a laptop
            CPU), the input size every model is fed at among them.
        num_classes: classifier size for models built from a name (their default otherwise).
        seed: of the random-init models built from names, the data order and every random draw.
        run: a `surgeon.parallel.Run`: ``resume`` (continue from ``out/results.json``, skipping the
            finished (model, measure) pairs), ``overwrite`` (start afresh even when it exists),
            ``executor`` (for the sweeps that have tasks: Hessian batches, landscape rows, noise
            bands), ``progress`` and ``callback`` (called with (label, measure, seconds) after each
            finished measure).
        old: 0.1's ``quick=``, ``labels=``, ``input_size=`` (give ``settings=`` and a mapping) and
            ``resume=``, ``overwrite=``, ``executor=``, ``progress=``, ``on_done=`` (give ``run=``).

    Returns:
        The `ComparisonResult`; ``interrupted=True`` when Ctrl-C stopped it (the finished pairs are
        kept in results.json).
    """
    from surgeon.core import checks
    from surgeon.model.sizes import resolve_input_size

    models, labels, settings, run = _compare_options(models, settings, run, old)
    checks.args(seed=seed, num_classes=num_classes)
    if len(models) < 1:
        raise SurgeonError("no model given; compare two or more, e.g. resnet18 vit_tiny_patch16_224")
    chosen = check_measures(measures)
    names = model_labels(models, labels)
    path = _results_path(out, run.resume, run.overwrite)
    input_size = settings.input_size
    config = {"models": [str(m) if isinstance(m, (str, os.PathLike)) else None for m in models], "labels": names,
              "data": str(data), "measures": chosen, "settings": _plain_settings(settings), "seed": seed,
              "num_classes": num_classes, "input_size": list(input_size) if input_size is not None else None}
    previous = _previous(path, config) if run.resume and path is not None and path.exists() else None
    cmp = ComparisonResult(config, [], dict(previous.results) if previous else {},
                     dict(previous.seconds) if previous else {}, path)
    partial = path.parent / "partial" if path is not None else None
    for label, spec in zip(names, models):
        spec_name, model = _load(spec, num_classes, seed)
        size = resolve_input_size(model, input_size).size
        cmp.models.append(_model_info(label, spec_name, model, size))
        _write(cmp)
        ctx = Context(model, size, data, settings, seed, run.progress, run.executor, partial, label)
        if not _measure_model(cmp, ctx, chosen, run.callback):
            break
    return cmp


def _compare_options(models: Sequence[Any] | Mapping[str, Any], settings: Settings | None, run: Run | None,
                     old: dict[str, Any]) -> tuple[list[Any], list[str] | None, Settings, Run]:
    """(models, labels, settings, run) of a comparison from its arguments or 0.1's keywords
    (deprecated, popped out of `old`): ``quick=`` (`QUICK`), ``labels=`` (a mapping),
    ``input_size=`` (``settings.input_size``), and the run control (``on_done=``: the callback)."""
    moved = moved_keywords(old, ("quick", "labels", "input_size"), function="compare",
                           new="settings=QUICK.replace(input_size=...) and models={label: model}")
    run = options_from(Run, run, old, function="compare", keyword="run", renamed={"on_done": "callback"})
    run = run.only("compare", "resume", "overwrite", "executor", "progress", "callback")
    settings = settings or (QUICK if moved.get("quick") else PAPER)
    if moved.get("input_size") is not None:
        settings = settings.replace(input_size=moved["input_size"])
    labels = moved.get("labels")
    if isinstance(models, Mapping):
        labels, models = list(models), list(models.values())
    return list(models), labels, settings, run


def _measure_model(cmp: ComparisonResult, ctx: Context, chosen: list[str],
                   on_done: Callable[[str, str, float], None] | None) -> bool:
    """Run the `chosen` measures not yet done on the model of `ctx`, each stored (and results.json
    written) as soon as it finishes; False when Ctrl-C stopped one (``cmp.interrupted`` set, the
    unfinished measure not stored)."""
    label = ctx.label
    for measure in chosen:
        if cmp.done(label, measure):
            continue
        start = time.perf_counter()
        try:
            value = RUNNERS[measure](ctx)
        except KeyboardInterrupt:
            cmp.interrupted = True
            warnings.warn(f"interrupted during {measure} of {label}; finished measures are kept"
                          + (f" in {cmp.path} (rerun with resume)" if cmp.path else ""), stacklevel=3)
            return False
        seconds = time.perf_counter() - start
        cmp.results.setdefault(label, {})[measure] = value
        cmp.seconds.setdefault(label, {})[measure] = seconds
        _write(cmp)
        if on_done is not None:
            on_done(label, measure, seconds)
    return True


def _plain_settings(s: Settings) -> dict[str, Any]:
    """The sizes as results.json records them (the input size apart, at the top as in 0.1)."""
    d = asdict(s)
    d["frequencies"] = list(d["frequencies"])
    del d["input_size"]
    return d


def _results_path(out: str | os.PathLike | None, resume: bool, overwrite: bool) -> Path | None:
    """``out/results.json``; an existing one without `resume` or `overwrite` is refused before any work."""
    if out is None:
        if resume:
            raise SurgeonError("resume=True needs out= (the folder holding results.json)")
        return None
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SurgeonError(f"out={str(folder)!r} is a file; give a folder for the report")
    if not folder.parent.exists():
        raise SurgeonError(f"the folder above out={str(folder)!r} does not exist; create it first")
    path = folder / RESULTS
    if path.exists() and not (resume or overwrite):
        raise SurgeonError(f"{str(path)!r} exists; pass resume=True to continue it or overwrite=True to start afresh")
    if resume and overwrite:
        raise SurgeonError("give resume=True or overwrite=True, not both")
    folder.mkdir(exist_ok=True)
    if overwrite and path.exists():
        path.unlink()
        partial = folder / "partial"
        for f in partial.glob("*.json") if partial.is_dir() else ():
            f.unlink()
    return path


def _previous(path: Path, config: dict[str, Any]) -> ComparisonResult:
    """The comparison in `path`, refused when it ran with another configuration."""
    prev = read_comparison(path)
    diff = [k for k in config if prev.config.get(k) != config[k]]
    if diff:
        k = diff[0]
        raise SurgeonError(f"{str(path)!r} was written with other {k} ({prev.config.get(k)!r}, here {config[k]!r}); "
                           f"rerun with the same arguments, or overwrite=True to start afresh")
    return prev
