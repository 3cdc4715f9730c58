"""Corruption robustness of a classifier: the corruption benchmarks CIFAR-10-C / CIFAR-100-C /
ImageNet-C (PAPER.md, "Corruption robustness"), corrupted on the fly or read from the released files.

    loader = surgeon.data.loader("digits", model)
    res = corruption_robustness(model, loader, ["gaussian_noise", "fog"])    # corrupted on the fly
    res = corruption_robustness(model, loader, source=CorruptionSource(cifar_c="~/data/CIFAR-10-C"))  # the released files
    res.clean["acc"], res.grid("acc"), res.per_corruption("nll"), res.mean("ece")

The corruptions act on pixels (`surgeon.evaluation.pixels`); every (corruption, severity) is one
cell restarting its generator from `seed` (`surgeon.evaluation.cells`). The frequency-band noise of
Park & Kim, Fig. 2b, is `surgeon.evaluation.frequency_noise`.

The model is never changed: `surgeon.evaluate` runs it in eval mode under no_grad and restores its
train / eval flags, also on error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from surgeon.core import checks
from surgeon.data.corruptions import CONSTANTS, CORRUPTIONS, corrupt
from surgeon.data.datasets import ArrayImages, eval_transform, loader
from surgeon.core.errors import SurgeonError, first_line
from surgeon.core.files import check_folder
from surgeon.core.jsonio import plain
from surgeon.parallel.run import Run
from surgeon.model.runtime import display_name
from surgeon.core.tables import Tabular
from surgeon.evaluation.cells import _generator, _run
from surgeon.evaluation.pixels import _PROBE, _data_transform, _in_pixels
from surgeon._compat import options_from


__all__ = ["BENCHMARK", "SEVERITIES", "CorruptionResult", "CorruptionSource", "corruption_robustness"]


BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")  # the 15 corruptions of CIFAR-10-C / ImageNet-C, in the release's order
SEVERITIES = (1, 2, 3, 4, 5)


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


def _check_severities(severities: Sequence[int]) -> list[int]:
    bad = [s for s in severities if not isinstance(s, (int, np.integer)) or not 1 <= s <= 5]
    if bad or not severities:
        raise SurgeonError(f"severities {list(severities)} must be integers from 1 to 5; e.g. severities=1,3,5")
    return checks.distinct("severities", [int(s) for s in severities])


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


@dataclass(frozen=True)
class CorruptionSource:
    """Where the corrupted images come from:

    - ``preset``: made on the fly from the clean data, with the constants ``auto`` (CIFAR's for
      images up to 64 px, else ImageNet's), ``cifar`` or ``imagenet`` (`surgeon.data.corruptions`);
    - ``cifar_c``: or read from a CIFAR-10-C / CIFAR-100-C folder's .npy files (memory-mapped),
      preprocessed by the data's transform and batch size;
    - ``imagenet_c``: or read from an ImageNet-C folder ``<corruption>/<severity>/<class>/``.

    At most one folder; checked on construction (the folder's files when the run starts)."""

    preset: str = "auto"
    cifar_c: str | os.PathLike | None = None
    imagenet_c: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.preset not in CONSTANTS:
            raise SurgeonError(f"preset {self.preset!r} is unknown; choose from {', '.join(CONSTANTS)}")
        if self.cifar_c is not None and self.imagenet_c is not None:
            raise SurgeonError("give either cifar_c= or imagenet_c=, not both")

    @property
    def released(self) -> bool:
        """Read from the released files (else made on the fly)."""
        return self.cifar_c is not None or self.imagenet_c is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if v is None else str(v)) for k, v in asdict(self).items()}


def corruption_robustness(model: nn.Module, data: Iterable[Any], corruptions: Sequence[str] | None = None,
                          severities: Sequence[int] = SEVERITIES, *, source: CorruptionSource | None = None,
                          batches: int | None = None, seed: int = 0, run: Run | None = None,
                          **old: Any) -> CorruptionResult:
    """Metrics of `model` on the clean `data` and on every (corruption, severity) (PAPER.md,
    "Corruption robustness"; Park & Kim report them for CIFAR-{10,100}-C and ImageNet-C).

    Args:
        model: a classifier; left unchanged.
        data: labelled clean batches, normalised for the model (`surgeon.data.loader`).
        corruptions: names to measure; default: every corruption of `surgeon.corruptions.CORRUPTIONS`
            made on the fly, or the 15 benchmark corruptions (`BENCHMARK`) of the released files.
        severities: among 1..5.
        source: a `CorruptionSource`: made on the fly (its ``preset``, the default) or read from
            the released CIFAR-C / ImageNet-C files.
        batches: per cell (and for the clean data), stop after this many batches.
        seed: of the corruptions made on the fly, restarted for each cell.
        run: a `surgeon.parallel.Run`: one progress bar over the cells; an executor runs every
            (corruption, severity) cell as one task (cells whose workers died are left out, named).
        old: ``preset=``, ``cifar_c=``, ``imagenet_c=``, ``progress=``, ``executor=`` of 0.1
            (deprecated: give ``source=`` and ``run=``).
    """
    source = options_from(CorruptionSource, source, old, function="corruption_robustness", keyword="source",
                          strict=False)
    run = options_from(Run, run, old, function="corruption_robustness", keyword="run").only(
        "corruption_robustness", "progress", "executor")
    checks.args(batches=batches, seed=seed)
    names, severities = check_corruption_args(corruptions, severities, preset=source.preset, cifar_c=source.cifar_c,
                                              imagenet_c=source.imagenet_c)
    cells: dict[Any, Callable[[], dict[str, Any]]] = {"clean": lambda: {"data": data}}
    cifar_c, imagenet_c = source.cifar_c, source.imagenet_c
    if source.released:
        cells.update(_released_cells(model, data, names, severities, cifar_c, imagenet_c))
        said = f"CIFAR-C files in {cifar_c}" if cifar_c is not None else f"ImageNet-C folders in {imagenet_c}"
    else:
        cells.update({(n, s): _corrupted_cell(model, data, n, s, source.preset, seed) for n in names for s in severities})
        said = f"corrupted on the fly (preset {source.preset}, seed {seed})"
    done, interrupted = _run(model, cells, batches, run.progress, "corruptions", run.executor)
    grid: dict[str, dict[int, dict[str, float]]] = {}
    for key, ev in done.items():
        if key != "clean":
            grid.setdefault(key[0], {})[key[1]] = ev.metrics
    clean = done["clean"]
    return CorruptionResult(display_name(model), said, names, severities, clean.metrics, grid, clean.samples,
                            interrupted)
