"""The measures of `surgeon compare`: their names (`MEASURES`), their sizes (`Settings`, `PAPER`,
`QUICK`) and one runner per measure (`RUNNERS`), each an existing analysis run unchanged on one
model, its result returned as JSON (the result type's ``to_dict``). The driver that runs them on
every model and keeps results.json is `surgeon.comparison.compare`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from surgeon.core.errors import SurgeonError

__all__ = ["MEASURES", "Settings", "PAPER", "QUICK", "RUNNERS", "Context", "check_measures", "with_settings"]

MEASURES = ("fourier", "variance", "hessian", "landscape", "frequency_noise", "lesions")


@dataclass(frozen=True)
class Settings:
    """Sizes of the measures and of their inputs. `PAPER` follows PAPER.md where the paper fixes a
    size (top-5 eigenvalues, a 21 x 21 landscape on [-1, 1], bands 0.1 .. 0.9 pi); `QUICK`
    finishes in a few minutes on a laptop CPU. ``None`` batches: all the data. ``input_size``:
    (C, H, W) every model is fed at (None: each model's own, `surgeon.model.sizes.resolve_input_size`);
    ``QUICK.replace(input_size=(3, 32, 32))`` changes one size of a preset."""

    batch_size: int = 64
    hessian_batch_size: int | None = None  # the Hessian's mini-batches (None: batch_size)
    probe_batches: int | None = 16
    hessian_k: int = 5
    hessian_batches: int = 10
    hessian_tol: float = 1e-4
    hessian_max_iter: int | None = None  # Lanczos steps per solve (None: curvature's default)
    landscape_grid: int = 21
    landscape_span: float = 1.0
    landscape_batches: int = 4
    frequencies: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    noise_eps: float = 0.1
    noise_batches: int | None = None
    lesion_batches: int | None = None
    input_size: tuple[int, int, int] | None = None

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (checked like any Settings)."""
        return replace(self, **changes)

    def __post_init__(self) -> None:
        from surgeon.core import checks

        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(self.input_size))
        checks.args(batch_size=self.batch_size, k=self.hessian_k, tol=self.hessian_tol, grid=self.landscape_grid,
                    span=self.landscape_span, eps=self.noise_eps)
        for name in ("hessian_batch_size", "hessian_max_iter", "probe_batches", "hessian_batches", "landscape_batches", "noise_batches", "lesion_batches"):
            n = getattr(self, name)
            if n is not None and (not isinstance(n, int) or n < 1):
                raise SurgeonError(f"{name}={n!r} must be a positive integer (or None: all the data)")
        if self.landscape_grid < 2:
            raise SurgeonError(f"landscape_grid={self.landscape_grid} must be at least 2")


PAPER = Settings()
QUICK = Settings(batch_size=32, hessian_batch_size=16, probe_batches=2, hessian_k=3, hessian_batches=1, hessian_tol=1e-2,
                 hessian_max_iter=16,
                 landscape_grid=5, landscape_batches=1, frequencies=(0.1, 0.3, 0.5, 0.7, 0.9), noise_batches=4,
                 lesion_batches=4)


# ----------------------------------------------------------------------------------------------
# The runners: each one existing analysis, its result as JSON


@dataclass
class Context:
    """What every measure of one model reads: the model, its input size and the shared settings."""

    model: Any
    input_size: tuple[int, int, int]
    data: Any
    settings: Settings
    seed: int
    progress: bool
    executor: Any
    partial: Path | None
    label: str

    @property
    def run(self) -> Any:
        """How the sweeps run (`surgeon.parallel.Run`): progress bars, the executor."""
        from surgeon.parallel.run import Run

        return Run(progress=self.progress, executor=self.executor)

    def loader(self, train: bool, batch_size: int | None = None) -> Any:
        """The data at the model's input size: the shuffled training split (drawn with `seed`) or
        the test split, in batches of `batch_size` (default: the settings' ``batch_size``)."""
        from surgeon.data import datasets as data
        from surgeon.data.sampling import Sampling

        return data.loader(self.data, self.model, batch_size=batch_size or self.settings.batch_size,
                           input_size=self.input_size, train=train, sampling=Sampling(shuffle=train, seed=self.seed))


def _probe(name: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        from surgeon.analysis.probes import probe

        res = probe(ctx.model, ctx.loader(False), (name,), "*", batches=ctx.settings.probe_batches,
                    progress=ctx.progress)
        return _checked(res, res.to_dict())

    return run


def _hessian(ctx: Context) -> dict[str, Any]:
    from surgeon.analysis.curvature import hessian_spectrum
    from surgeon.analysis.options import Solver

    s = ctx.settings
    common = dict(batches=s.hessian_batches, solver=Solver(tol=s.hessian_tol, max_iter=s.hessian_max_iter),
                  seed=ctx.seed, run=ctx.run)
    lm = hessian_spectrum(ctx.model, ctx.loader(True, s.hessian_batch_size), s.hessian_k, which="LM", **common)
    if lm.interrupted:
        raise KeyboardInterrupt
    sa = hessian_spectrum(ctx.model, ctx.loader(True, s.hessian_batch_size), 1, which="SA", **common)
    return _checked(sa, {"lm": lm.to_dict(), "sa": sa.to_dict()})


def _landscape(ctx: Context) -> dict[str, Any]:
    from surgeon.analysis.landscapes import landscape
    from surgeon.analysis.options import Lattice

    s = ctx.settings
    save = None
    if ctx.partial is not None:
        ctx.partial.mkdir(parents=True, exist_ok=True)
        save = ctx.partial / f"landscape-{_slug(ctx.label)}.json"
    res = landscape(ctx.model, ctx.loader(True), lattice=Lattice(grid=s.landscape_grid, span=s.landscape_span),
                    batches=s.landscape_batches, seed=ctx.seed, save=save, run=ctx.run)
    return _checked(res, res.to_dict())


def _frequency_noise(ctx: Context) -> dict[str, Any]:
    from surgeon.evaluation.frequency_noise import frequency_noise_robustness

    s = ctx.settings
    res = frequency_noise_robustness(ctx.model, ctx.loader(False), s.frequencies, eps=s.noise_eps,
                                     batches=s.noise_batches, seed=ctx.seed, run=ctx.run)
    return _checked(res, res.to_dict())


def _lesions(ctx: Context) -> dict[str, Any]:
    from surgeon.analysis.lesions import lesion_study

    res = lesion_study(ctx.model, ctx.loader(False), "*", batches=ctx.settings.lesion_batches,
                       input_size=ctx.input_size, progress=ctx.progress)
    return _checked(res, res.to_dict())


def _checked(res: Any, value: dict[str, Any]) -> dict[str, Any]:
    """`value`, unless the analysis was cut short by Ctrl-C: a partial measure is not stored."""
    if getattr(res, "interrupted", False):
        raise KeyboardInterrupt
    return value


#: measure name -> function of a `Context` returning the measure's JSON (the result's ``to_dict``)
RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "fourier": _probe("fourier"), "variance": _probe("variance"), "hessian": _hessian, "landscape": _landscape,
    "frequency_noise": _frequency_noise, "lesions": _lesions,
}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def check_measures(measures: Iterable[str] | None) -> list[str]:
    """The measures to run, in `MEASURES` order; an unknown name is refused with the known ones."""
    if measures is None:
        return list(MEASURES)
    chosen = [m.strip() for m in measures if m.strip()]
    from surgeon.core.errors import closest

    for m in chosen:
        if m not in MEASURES:
            near = closest(m, MEASURES)
            hint = f"did you mean {near[0]}? " if near else ""
            raise SurgeonError(f"unknown measure {m!r}; {hint}measures: {', '.join(MEASURES)}")
    if not chosen:
        raise SurgeonError(f"no measure given; measures: {', '.join(MEASURES)}")
    return [m for m in MEASURES if m in chosen]


def with_settings(base: Settings, **changes: Any) -> Settings:
    """`base` with some sizes changed (checked)."""
    return replace(base, **changes)
