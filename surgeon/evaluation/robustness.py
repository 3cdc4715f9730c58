"""Robustness of a classifier: the corruption benchmarks CIFAR-10-C / CIFAR-100-C / ImageNet-C
(PAPER.md, "Corruption robustness") and the frequency-band noise of Park & Kim, Fig. 2b.

    loader = surgeon.data.loader("digits", model)
    res = corruption_robustness(model, loader, ["gaussian_noise", "fog"])    # corrupted on the fly
    res = corruption_robustness(model, loader, cifar_c="~/data/CIFAR-10-C")  # the released files
    res.clean["acc"], res.grid("acc"), res.per_corruption("nll"), res.mean("ece")
    fn = frequency_noise_robustness(model, loader)                          # Fig. 2b
    fn.change                           # noisy minus clean accuracy at f = 0.1 pi .. 0.9 pi

Pixels: corruptions and frequency noise act on images in [0, 1], before normalisation, while the
loaders of `surgeon.data` normalise with the model's mean / std. Every corrupted batch is therefore
taken back to pixels on the device, x = z * std + mean, corrupted, and normalised again,
z' = (x' - mean) / std. The mean / std are read from the ``Normalize`` step of the loader's
transform (none: the batches are pixels already); batches of a plain iterable are taken to be
normalised with the model's own timm data config, as `surgeon.data.loader` does.

Randomness: every (corruption, severity) cell and every frequency restarts a `torch.Generator` on
the model's device from `seed`, so a cell's value does not depend on which other cells were asked
for, and one seed gives the same numbers on a given device. The wrapping adds no host sync;
motion blur and JPEG compression read back to the host by their nature (`surgeon.corruptions`).

The model is never changed: `surgeon.evaluate` runs it in eval mode under no_grad and restores its
train / eval flags, also on error.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from surgeon.core import checks
from surgeon.data.corruptions import CORRUPTIONS, corrupt, frequency_noise
from surgeon.data.datasets import ArrayImages, _Gray, eval_transform, loader
from surgeon.core.errors import SurgeonError, first_line
from surgeon.evaluation.evaluate import EvaluationResult, evaluate
from surgeon.core.files import check_folder
from surgeon.core.jsonio import plain
from surgeon.parallel.executors import Executor
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import display_name, model_device
from surgeon.core.tables import Tabular

__all__ = ["BENCHMARK", "FREQUENCIES", "SEVERITIES", "CorruptionResult", "FrequencyNoiseResult",
           "corruption_robustness", "frequency_noise_robustness", "pixel_normalisation"]

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")  # the 15 corruptions of CIFAR-10-C / ImageNet-C, in the release's order
SEVERITIES = (1, 2, 3, 4, 5)
FREQUENCIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # Fig. 2b, fractions of pi

_PROBE = torch.zeros(1, 3, 2, 2)  # a tiny batch on which `corrupt` at severity 0 validates a name


# ----------------------------------------------------------------------------------------------
# Results


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN; NaN when none is."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


@dataclass
class CorruptionResult(Tabular):
    """Metrics (`surgeon.metrics.Metrics`: acc, top5, nll, brier, ece, ...) of one model on clean and
    corrupted data. ``metrics[corruption][severity]`` holds each measured cell; ``clean`` the clean
    data's metrics. Means are plain means over the measured cells: for a metric m,
    per_corruption(m)[c] = (1/S) sum_s m(c, s), per_severity(m)[s] = (1/C) sum_c m(c, s) and
    mean(m) = (1/(C S)) sum_{c, s} m(c, s) (the benchmark's "mean over corruptions and severities";
    errors are 1 - acc). ``interrupted``: Ctrl-C stopped the run; the cells after it are missing."""

    model: str
    source: str
    corruptions: list[str]
    severities: list[int]
    clean: dict[str, float]
    metrics: dict[str, dict[int, dict[str, float]]] = field(repr=False)
    samples: int
    interrupted: bool = False

    def _check(self, metric: str) -> None:
        if metric not in self.clean:
            raise SurgeonError(f"unknown metric {metric!r}; choose from {', '.join(self.clean)}")

    def grid(self, metric: str = "acc") -> np.ndarray:
        """(corruptions, severities) array of `metric`, NaN for cells not measured."""
        self._check(metric)
        return np.array([[self.metrics.get(c, {}).get(s, {}).get(metric, math.nan) for s in self.severities]
                         for c in self.corruptions], dtype=np.float64).reshape(len(self.corruptions), -1)

    def per_corruption(self, metric: str = "acc") -> dict[str, float]:
        """Mean of `metric` over the severities, per corruption."""
        return {c: _nanmean(row) for c, row in zip(self.corruptions, self.grid(metric))}

    def per_severity(self, metric: str = "acc") -> dict[int, float]:
        """Mean of `metric` over the corruptions, per severity."""
        return {s: _nanmean(col) for s, col in zip(self.severities, self.grid(metric).T)}

    def mean(self, metric: str = "acc") -> float:
        """Mean of `metric` over every measured (corruption, severity) cell."""
        return _nanmean(self.grid(metric).ravel())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the cells, the clean metrics and every mean (NaN written as null)."""
        names = list(self.clean)
        return {
            "model": self.model, "source": self.source, "corruptions": self.corruptions,
            "severities": self.severities, "samples": self.samples, "interrupted": self.interrupted,
            "clean": plain(self.clean),
            "mean": plain({m: self.mean(m) for m in names}),
            "per_corruption": {c: plain({m: self.per_corruption(m)[c] for m in names}) for c in self.corruptions},
            "per_severity": {str(s): plain({m: self.per_severity(m)[s] for m in names}) for s in self.severities},
            "metrics": {c: {str(s): plain(cell) for s, cell in row.items()} for c, row in self.metrics.items()},
        }

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x corruption x severity x metric (corruption and severity None: clean data)."""
        rows = [{"model": self.model, "corruption": None, "severity": None, "quantity": k, "value": v}
                for k, v in plain(self.clean).items()]
        for c in self.corruptions:
            for s, cell in sorted(self.metrics.get(c, {}).items()):
                rows += [{"model": self.model, "corruption": c, "severity": s, "quantity": k, "value": v}
                         for k, v in plain(cell).items()]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.figure_of(viz.plot_corruptions(self))


@dataclass
class FrequencyNoiseResult(Tabular):
    """Fig. 2b for one model: ``accuracy[i]`` at the band centred on ``frequencies[i]`` (fractions
    of pi; NaN when not measured) and the ``clean`` accuracy; ``change`` = accuracy - clean."""

    model: str
    frequencies: list[float]
    accuracy: list[float]
    clean: float
    eps: float
    width: float
    samples: int
    interrupted: bool = False

    @property
    def change(self) -> list[float]:
        """Accuracy change per frequency: acc(x + band-limited noise) - acc(x)."""
        return [a - self.clean for a in self.accuracy]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as null)."""
        return {"model": self.model, "frequencies": self.frequencies, "eps": self.eps, "width": self.width,
                "clean": plain(self.clean), "accuracy": [plain(a) for a in self.accuracy],
                "change": [plain(c) for c in self.change], "samples": self.samples,
                "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x frequency (None: clean data) x quantity (accuracy, change)."""
        rows = [{"model": self.model, "frequency": None, "quantity": "accuracy", "value": plain(self.clean)}]
        for f, a, c in zip(self.frequencies, self.accuracy, self.change):
            rows += [{"model": self.model, "frequency": f, "quantity": q, "value": plain(v)}
                     for q, v in (("accuracy", a), ("change", c))]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.figure_of(viz.plot_frequency_noise(self))


# ----------------------------------------------------------------------------------------------
# Pixels in, normalised images out


def _data_transform(data: Any) -> Callable | None:
    """The per-image transform of a loader's dataset (`surgeon.data` datasets keep it), if any."""
    return getattr(getattr(data, "dataset", None), "transform", None)


def _steps(transform: Any) -> Iterator[Any]:
    """The steps of a transform, nested ``Compose``s flattened."""
    for step in getattr(transform, "transforms", [transform]):
        if hasattr(step, "transforms"):
            yield from _steps(step)
        else:
            yield step


def pixel_normalisation(model: nn.Module, data: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel with which the batches of `data` were normalised: what
    `surgeon.data.normalised` declares, else those of the ``Normalize`` step of the loader's
    transform (one channel when it ends in grey), else (0, 1) when its transform has none. A plain
    iterable that says nothing is refused: an assumed normalisation would scale every eps wrongly."""
    from torchvision.transforms import Normalize

    declared = getattr(data, "normalisation", None)
    if declared is not None:
        return tuple(map(float, declared[0])), tuple(map(float, declared[1]))
    transform = _data_transform(data)
    if transform is None:
        raise SurgeonError("the batches do not say how their pixels were normalised: wrap them, "
                           "surgeon.data.normalised(data, mean=..., std=...) (mean=(0, 0, 0), std=(1, 1, 1) for "
                           "pixels in [0, 1]), or use surgeon.data.loader")
    steps = list(_steps(transform))
    channels = 1 if any(isinstance(step, _Gray) for step in steps) else 3  # grey: equal values on all three
    for step in steps:
        if isinstance(step, Normalize):
            mean, std = (np.broadcast_to(np.atleast_1d(v).astype(float), 3)[:channels] for v in (step.mean, step.std))
            return tuple(mean.tolist()), tuple(std.tolist())
    return (0.0,) * channels, (1.0,) * channels


def model_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's own preprocessing (timm data config), one value per input channel."""
    from timm.data import resolve_model_data_config

    from surgeon.model.sizes import input_size_of

    cfg, channels = resolve_model_data_config(model), input_size_of(model)[0]
    mean, std = (np.atleast_1d(cfg[k]).astype(float) for k in ("mean", "std"))
    if len(mean) != channels:
        mean, std = np.full(channels, mean.mean()), np.full(channels, std.mean())
    return tuple(mean.tolist()), tuple(std.tolist())


def _in_pixels(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
               data: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The device-side transform z -> (fn(z std + mean) - mean) / std: `fn` sees the pixels in
    [0, 1] of the normalised batch z."""
    mean, std = pixel_normalisation(model, data)
    device = model_device(model)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda z: (fn(z * s + m) - m) / s


def _generator(model: nn.Module, seed: int) -> torch.Generator:
    return torch.Generator(device=model_device(model)).manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# The released benchmark files


def _root(path: str | os.PathLike, what: str, layout: str) -> Path:
    return check_folder(path, f"{what} folder", f"point {layout} at the extracted release")


def _cifar_c(path: str | os.PathLike, names: Sequence[str]) -> Callable[[str, int, Callable], ArrayImages]:
    """Check a CIFAR-10-C / CIFAR-100-C folder (``<corruption>.npy``: (5 n, H, W, 3) uint8, the 5
    severities stacked, n = 10,000 in the release; ``labels.npy``: (5 n,)) and return
    ``dataset(corruption, severity, transform)`` over rows (severity - 1) n .. severity n of the
    memory-mapped arrays."""
    root = _root(path, "CIFAR-C", "cifar_c=")
    present = sorted(p.stem for p in root.glob("*.npy") if p.stem != "labels")
    if not (root / "labels.npy").is_file():
        raise SurgeonError(f"{str(root)!r} has no labels.npy; the CIFAR-10-C / CIFAR-100-C release ships it beside "
                           "the <corruption>.npy files: re-extract the archive into this folder")
    missing = [f"{n}.npy" for n in names if n not in present]
    if missing:
        raise SurgeonError(f"{str(root)!r} lacks {', '.join(missing)}; re-extract the archive or choose among the "
                           f"files present: corruptions={','.join(present) or '(none)'}")
    labels = _npy(root / "labels.npy")
    if labels.ndim != 1 or labels.shape[0] % 5 or labels.shape[0] == 0 or labels.dtype.kind not in "iu":
        raise SurgeonError(f"{str(root / 'labels.npy')!r} holds {labels.dtype} of shape {labels.shape}, expected "
                           "integer labels (5 n,) for the 5 stacked severities; re-extract the archive")
    arrays = {n: _npy(root / f"{n}.npy") for n in names}
    for n, a in arrays.items():
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[0] != labels.shape[0] or a.shape[-1] != 3:
            raise SurgeonError(f"{str(root / f'{n}.npy')!r} holds {a.dtype} of shape {a.shape}, expected uint8 "
                               f"({labels.shape[0]}, H, W, 3): 5 severities x {labels.shape[0] // 5} images stacked, "
                               "as many as labels.npy has; re-extract the archive")
    rows = labels.shape[0] // 5

    def dataset(name: str, severity: int, transform: Callable) -> ArrayImages:
        part = slice((severity - 1) * rows, severity * rows)
        return ArrayImages(arrays[name][part], labels[part].tolist(), [], transform)

    return dataset


def _npy(path: Path) -> np.ndarray:
    """A memory-mapped .npy array; a damaged file is a one-line `SurgeonError`."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SurgeonError(f"cannot read {str(path)!r} ({first_line(exc, 80)}); re-extract the archive") from None


def _class_folders(path: Path) -> list[str]:
    return sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _imagenet_c(path: str | os.PathLike, names: Sequence[str], severities: Sequence[int],
                classes: Sequence[str]) -> Callable[[str, int], Path]:
    """Check an ImageNet-C folder (``<corruption>/<severity>/<class>/*.JPEG``): every asked
    corruption and severity present, each with the class folders of the clean data (when it has
    named classes, so that labels agree); return ``folder(corruption, severity)``."""
    root = _root(path, "ImageNet-C", "imagenet_c=")
    present = _class_folders(root)
    missing = [n for n in names if n not in present]
    if missing:
        raise SurgeonError(f"{str(root)!r} has no folder for {', '.join(missing)}; extract those archives or choose "
                           f"among the folders present: corruptions={','.join(present) or '(none)'}")
    holes = [f"{n}/{s}" for n in names for s in severities if not (root / n / str(s)).is_dir()]
    if holes:
        raise SurgeonError(f"{str(root)!r} lacks the severity folders {', '.join(holes)}; extract them, or pass "
                           "severities= with those present")
    for n in names:
        for s in severities:
            found = _class_folders(root / n / str(s))
            if classes and found != list(classes):
                raise SurgeonError(f"the class folders of {str(root / n / str(s))!r} ({len(found)}) differ from those "
                                   f"of the clean data ({len(classes)}), so labels would not agree; give the "
                                   "matching clean data= (e.g. the ImageNet val ImageFolder)")
    return lambda name, severity: root / name / str(severity)


# ----------------------------------------------------------------------------------------------
# Runs


def _check_severities(severities: Sequence[int]) -> list[int]:
    bad = [s for s in severities if not isinstance(s, (int, np.integer)) or not 1 <= s <= 5]
    if bad or not severities:
        raise SurgeonError(f"severities {list(severities)} must be integers from 1 to 5; e.g. severities=1,3,5")
    return checks.distinct("severities", [int(s) for s in severities])


def _run(model: nn.Module, cells: dict[Any, Callable[[], dict[str, Any]]], batches: int | None, progress: bool,
         label: str, executor: Executor | None = None) -> tuple[dict[Any, EvaluationResult], bool]:
    """`evaluate` every cell in order; a cell is a function returning evaluate's ``data`` and
    ``transform``. Stops at Ctrl-C, dropping the cell it cut (partial cells would not compare);
    returns the evaluations and whether it was interrupted. Nothing done yet: Ctrl-C propagates.
    With an `executor` (`surgeon.executor("ray")`) every cell is one task."""
    if executor is not None and not executor.in_process:
        return _run_tasks(executor, model, cells, batches, progress, label)
    done: dict[Any, EvaluationResult] = {}
    with progress_bar(progress, len(cells), label) as advance:
        for key, cell in cells.items():
            try:
                ev = evaluate(model, batches=batches, **cell())
            except KeyboardInterrupt:
                if not done:
                    raise
                return done, True
            if ev.interrupted:
                if not done:
                    raise KeyboardInterrupt
                return done, True
            done[key] = ev
            advance()
    return done, False


def _cell_task(model: nn.Module, cell: Callable[[], dict[str, Any]], batches: int | None, threads: int) -> EvaluationResult:
    torch.set_num_threads(threads)
    return evaluate(model, batches=batches, **cell())


def _run_tasks(ex: Executor, model: nn.Module, cells: dict[Any, Callable[[], dict[str, Any]]], batches: int | None,
               progress: bool, label: str) -> tuple[dict[Any, EvaluationResult], bool]:
    """`_run` with the cells as tasks on `ex`; a cell whose worker died on every attempt is left
    out with a warning naming it; Ctrl-C cancels the tasks and keeps the cells done."""
    keys = list(cells)
    done: dict[Any, EvaluationResult] = {}
    failed: dict[Any, str] = {}
    threads = max(1, int(getattr(ex, "job_cpus", 1) or 1))
    try:
        with ex, progress_bar(progress, len(cells), label) as advance:
            shared = ex.put(model)
            for i, out in ex.map(_cell_task, [(shared, cells[k], batches, threads) for k in keys]):
                if out.ok:
                    done[keys[i]] = out.value
                else:
                    failed[keys[i]] = out.failed
                advance()
    except KeyboardInterrupt:
        if not done:
            raise
        return {k: done[k] for k in keys if k in done}, True
    if failed:
        warnings.warn(f"{len(failed)} cell(s) left out, their tasks failed: "
                      + "; ".join(f"{k}: {why}" for k, why in list(failed.items())[:3]), stacklevel=3)
    return {k: done[k] for k in keys if k in done}, False


def _corrupted_cell(model: nn.Module, data: Iterable[Any], name: str, severity: int, preset: str,
                    seed: int) -> Callable[[], dict[str, Any]]:
    """A cell corrupting the clean batches on the device, with a generator fresh from `seed`."""
    def cell() -> dict[str, Any]:
        g = _generator(model, seed)
        return {"data": data, "transform": _in_pixels(lambda x: corrupt(x, name, severity, g, preset=preset),
                                                      model, data)}

    return cell


def _released_cells(model: nn.Module, data: Iterable[Any], names: Sequence[str], severities: Sequence[int],
                    cifar_c: str | os.PathLike | None,
                    imagenet_c: str | os.PathLike | None) -> dict[Any, Callable[[], dict[str, Any]]]:
    """Cells reading the released files (checked here, before any work) through the clean data's
    transform and batch size."""
    transform = _data_transform(data) or eval_transform(model)
    batch_size = getattr(data, "batch_size", None) or 32
    if cifar_c is not None:
        images = _cifar_c(cifar_c, names)
        return {(n, s): (lambda n=n, s=s: {"data": DataLoader(images(n, s, transform), batch_size=batch_size)})
                for n in names for s in severities}
    folder = _imagenet_c(imagenet_c, names, severities, getattr(getattr(data, "dataset", None), "classes", []))
    return {(n, s): (lambda n=n, s=s: {"data": loader(folder(n, s), model, batch_size=batch_size,
                                                      transform=transform)})
            for n in names for s in severities}


def check_corruption_args(corruptions: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES, *,
                          preset: str = "auto", cifar_c: str | os.PathLike | None = None,
                          imagenet_c: str | os.PathLike | None = None) -> tuple[list[str], list[int]]:
    """Check `corruption_robustness`'s arguments that need no model or data (names, severities,
    preset, the released files' folder); return the corruption names and severities it will use.
    Raises SurgeonError naming the first problem: callers (the CLI) run it before any work."""
    severities = _check_severities(severities)
    if cifar_c is not None and imagenet_c is not None:
        raise SurgeonError("give either cifar_c= or imagenet_c=, not both")
    released = imagenet_c is not None or cifar_c is not None
    names = checks.distinct("corruptions", corruptions) if corruptions is not None else \
        list(BENCHMARK if released else CORRUPTIONS)
    if not names:
        raise SurgeonError("no corruption asked for; e.g. corruptions=gaussian_noise,fog")
    if cifar_c is not None:
        _cifar_c(cifar_c, names)
    elif imagenet_c is not None:
        _imagenet_c(imagenet_c, names, severities, ())
    else:
        for n in names:
            corrupt(_PROBE, n, 0, preset=preset)  # a bad name or preset fails here
    return names, severities


def check_frequency_args(frequencies: Sequence[float] = FREQUENCIES, *, eps: float = 0.1,
                         width: float = 0.2) -> list[float]:
    """Check `frequency_noise_robustness`'s band arguments (each frequency in [0, 1], eps, width)
    before any work; return the frequencies as floats."""
    checks.args(eps=eps, width=width)
    for f in frequencies:
        checks.check_float("frequency", f, min=0.0, max=1.0)
    freqs = checks.distinct("frequencies", [float(f) for f in frequencies])
    if not freqs:
        raise SurgeonError("no frequency asked for; e.g. frequencies=0.1,0.5,0.9")
    for f in freqs:
        frequency_noise(_PROBE, f, eps, width, generator=torch.Generator().manual_seed(0))
    return freqs


def corruption_robustness(model: nn.Module, data: Iterable[Any], corruptions: Sequence[str] | None = None,
                          severities: Sequence[int] = SEVERITIES, *, preset: str = "auto",
                          cifar_c: str | os.PathLike | None = None, imagenet_c: str | os.PathLike | None = None,
                          batches: int | None = None, seed: int = 0, progress: bool = False,
                          executor: Executor | None = None) -> CorruptionResult:
    """Metrics of `model` on the clean `data` and on every (corruption, severity) (PAPER.md,
    "Corruption robustness"; Park & Kim report them for CIFAR-{10,100}-C and ImageNet-C).

    Args:
        model: a classifier; left unchanged.
        data: labelled clean batches, normalised for the model (`surgeon.data.loader`).
        corruptions: names to measure; default: every corruption of `surgeon.corruptions.CORRUPTIONS`
            made on the fly, or the 15 benchmark corruptions (`BENCHMARK`) of the released files.
        severities: among 1..5.
        preset: the constants of the corruptions made on the fly: ``auto``, ``cifar`` or ``imagenet``.
        cifar_c: a CIFAR-10-C / CIFAR-100-C folder: read the corrupted images from its .npy files
            (memory-mapped) instead, preprocessed by `data`'s transform and batch size.
        imagenet_c: an ImageNet-C folder ``<corruption>/<severity>/<class>/``: likewise.
        batches: per cell (and for the clean data), stop after this many batches.
        seed: of the corruptions made on the fly, restarted for each cell.
        progress: one progress bar over the cells.
        executor: run every (corruption, severity) cell as one task of this `surgeon.executor`
            (e.g. ``surgeon.executor("ray")``); cells whose workers died are left out, named.
    """
    checks.args(batches=batches, seed=seed)
    names, severities = check_corruption_args(corruptions, severities, preset=preset, cifar_c=cifar_c,
                                              imagenet_c=imagenet_c)
    cells: dict[Any, Callable[[], dict[str, Any]]] = {"clean": lambda: {"data": data}}
    if imagenet_c is not None or cifar_c is not None:
        cells.update(_released_cells(model, data, names, severities, cifar_c, imagenet_c))
        source = f"CIFAR-C files in {cifar_c}" if cifar_c is not None else f"ImageNet-C folders in {imagenet_c}"
    else:
        cells.update({(n, s): _corrupted_cell(model, data, n, s, preset, seed) for n in names for s in severities})
        source = f"corrupted on the fly (preset {preset}, seed {seed})"
    done, interrupted = _run(model, cells, batches, progress, "corruptions", executor)
    grid: dict[str, dict[int, dict[str, float]]] = {}
    for key, ev in done.items():
        if key != "clean":
            grid.setdefault(key[0], {})[key[1]] = ev.metrics
    clean = done["clean"]
    return CorruptionResult(display_name(model), source, names, severities, clean.metrics, grid, clean.samples,
                            interrupted)


def frequency_noise_robustness(model: nn.Module, data: Iterable[Any], frequencies: Sequence[float] = FREQUENCIES,
                               *, eps: float = 0.1, width: float = 0.2, batches: int | None = None, seed: int = 0,
                               progress: bool = False, executor: Executor | None = None) -> FrequencyNoiseResult:
    """Park & Kim, Fig. 2b: the accuracy change acc(x + n_f) - acc(x) when the images x (pixels in
    [0, 1]) get the noise n_f = Re(IFFT2(band_f * FFT2(eps * sign(N(0, 1))))) of the square
    frequency ring f - width .. f + width (fractions of pi; `surgeon.corruptions.frequency_noise`),
    for each f in `frequencies`. The paper's reading: on ImageNet ResNet-50 loses most at high
    frequencies, ViT-Ti at low ones.

    Args:
        model: a classifier; left unchanged.
        data: labelled clean batches, normalised for the model (`surgeon.data.loader`).
        frequencies: band centres in [0, 1] (fractions of pi).
        eps: the noise amplitude before filtering; width: the band's half-width.
        batches: per frequency (and for the clean data), stop after this many batches.
        seed: of the noise, restarted for each frequency.
        progress: one progress bar over the frequencies.
        executor: run every frequency as one task of this `surgeon.executor`.
    """
    checks.args(batches=batches, seed=seed)
    freqs = check_frequency_args(frequencies, eps=eps, width=width)

    def noisy(f: float) -> Callable[[], dict[str, Any]]:
        def cell() -> dict[str, Any]:
            g = _generator(model, seed)
            return {"data": data, "transform": _in_pixels(lambda x: frequency_noise(x, f, eps, width, g), model, data)}

        return cell

    cells: dict[Any, Callable[[], dict[str, Any]]] = {"clean": lambda: {"data": data}}
    cells.update({i: noisy(f) for i, f in enumerate(freqs)})
    done, interrupted = _run(model, cells, batches, progress, "frequency noise", executor)
    accuracy = [done[i].metrics["acc"] if i in done else math.nan for i in range(len(freqs))]
    clean = done["clean"]
    return FrequencyNoiseResult(display_name(model), freqs, accuracy, clean.metrics["acc"], eps, width,
                                clean.samples, interrupted)
