"""Frequency-noise robustness (Park & Kim, Fig. 2b): the accuracy change when the images get noise
limited to a frequency band, for each band.

    fn = frequency_noise_robustness(model, loader)
    fn.change                           # noisy minus clean accuracy at f = 0.1 pi .. 0.9 pi

The noise acts on pixels (`surgeon.evaluation.pixels`); each band is one cell restarting its
generator from `seed` (`surgeon.evaluation.cells`). The model is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surgeon.core import checks
from surgeon.data.corruptions import frequency_noise
from surgeon.core.errors import SurgeonError
from surgeon.core.jsonio import plain
from surgeon.parallel.run import Run
from surgeon._compat import options_from
from surgeon.model.runtime import display_name
from surgeon.core.tables import Tabular
from surgeon.evaluation.cells import _generator, _run
from surgeon.evaluation.pixels import _PROBE, _in_pixels

__all__ = ["FREQUENCIES", "FrequencyNoiseResult", "frequency_noise_robustness"]


FREQUENCIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # Fig. 2b, fractions of pi


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


def frequency_noise_robustness(model: nn.Module, data: Iterable[Any], frequencies: Sequence[float] = FREQUENCIES,
                               *, eps: float = 0.1, width: float = 0.2, batches: int | None = None, seed: int = 0,
                               run: Run | None = None, **old: Any) -> FrequencyNoiseResult:
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
        run: a `surgeon.parallel.Run`: one progress bar over the frequencies; an executor runs
            every frequency as one task.
        old: ``progress=``, ``executor=`` of 0.1 (deprecated: give ``run=``).
    """
    run = options_from(Run, run, old, function="frequency_noise_robustness", keyword="run").only(
        "frequency_noise_robustness", "progress", "executor")
    checks.args(batches=batches, seed=seed)
    freqs = check_frequency_args(frequencies, eps=eps, width=width)

    def noisy(f: float) -> Callable[[], dict[str, Any]]:
        def cell() -> dict[str, Any]:
            g = _generator(model, seed)
            return {"data": data, "transform": _in_pixels(lambda x: frequency_noise(x, f, eps, width, g), model, data)}

        return cell

    cells: dict[Any, Callable[[], dict[str, Any]]] = {"clean": lambda: {"data": data}}
    cells.update({i: noisy(f) for i, f in enumerate(freqs)})
    done, interrupted = _run(model, cells, batches, run.progress, "frequency noise", run.executor)
    accuracy = [done[i].metrics["acc"] if i in done else math.nan for i in range(len(freqs))]
    clean = done["clean"]
    return FrequencyNoiseResult(display_name(model), freqs, accuracy, clean.metrics["acc"], eps, width,
                                clean.samples, interrupted)
