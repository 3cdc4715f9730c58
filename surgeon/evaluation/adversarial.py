"""Adversarial robustness: FGSM and PGD in pixel space (the original code's ``ops/adversarial.py``,
PAPER.md "The original code's other tools").

    loader = surgeon.data.loader("digits", model)
    res = adversarial_robustness(model, loader, attack="fgsm", eps=[0.0, 0.004, 0.008])
    res = adversarial_robustness(model, loader, attack=Attack("pgd", steps=10), eps=[0.008])
    res.accuracy                      # accuracy on the attacked images, per eps
    res.metrics[i]["nll"]             # every metric of `surgeon.metrics` per eps

With p(x) the predicted distribution (the softmax, or the mean softmax over ``n_ff`` MC-dropout
passes) and L(x, y) = -log p_y(x) its NLL, for pixels x in [0, 1]:

- FGSM: x' = clip_[0, 1](x + eps * sign(grad_x L(x, y))).
- PGD: x_0 = clip_[0, 1](x + U(-eps, eps)) (``random_start``) or x; then ``steps`` times
  x_{i+1} = clip_[0, 1](clip_[x - eps, x + eps](x_i + alpha * sign(grad_x L(x_i, y)))).

The attacks act on pixels, before normalisation, as the corruptions do (`surgeon.evaluation.pixels`):
each normalised batch z is taken to pixels x = z std + mean, attacked, and normalised again
(``normalisation=(mean, std)`` of `fgsm` / `pgd`). The attack's settings are one options object,
`Attack`; the keywords of 0.1 (``alpha=``, ``steps=``, ``random_start=``, ``mean=``, ``std=``)
still work for one release, with a `SurgeonDeprecationWarning`.
Gradients never reach the model: its parameters are set to ``requires_grad=False`` during the
attack (so no ``.grad`` appears, and a backward costs no weight gradients), then restored, as
are its train / eval flags (eval, or MC dropout's dropout-only train mode), also on error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.core.jsonio import plain
from surgeon.evaluation.metrics import STOCHASTIC, Metrics, check_mc_dropout
from surgeon.core.progress import progress as progress_bar
from surgeon.evaluation.pixels import pixel_normalisation
from surgeon.model.runtime import BatchLoop, check_classifier, check_labels, display_name, model_device, restored_modes
from surgeon.core.tables import Tabular
from surgeon._compat import moved_keywords, options_from

__all__ = ["ATTACKS", "Attack", "AdversarialResult", "adversarial_robustness", "fgsm", "pgd", "frozen"]

ATTACKS = ("fgsm", "pgd")
DEFAULTS = {"fgsm": {"eps": (0.007,)}, "pgd": {"eps": (0.3,), "alpha": 2 / 255, "steps": 40}}  # the original's


@dataclass(frozen=True)
class Attack:
    """The attack's settings (the budget eps is the function's own argument, one row per eps):

    - ``method``: ``fgsm`` (one signed-gradient step of size eps) or ``pgd`` (the default).
    - ``alpha``: PGD's step size in pixels, in (0, 1]; default 2/255 (the original's).
    - ``steps``: PGD's number of steps, in [1, 1000]; default 40 (the original's).
    - ``random_start``: PGD starts from x + U(-eps, eps) (True) or from x.

    FGSM uses none of alpha, steps, random_start. Checked on construction (ranges of
    `surgeon.core.checks.ARGS`, the CLI's)."""

    method: str = "pgd"
    alpha: float = DEFAULTS["pgd"]["alpha"]
    steps: int = DEFAULTS["pgd"]["steps"]
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.method not in ATTACKS:
            raise SurgeonError(f"unknown attack {self.method!r}; choose from {', '.join(ATTACKS)}")
        checks.args(alpha=self.alpha, steps=self.steps)
        checks.flag("random_start", self.random_start)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attack_of(attack: str | Attack | None, old: dict[str, Any], function: str) -> Attack:
    """The `Attack` a function runs: `attack` itself, or built from a method name and 0.1's
    ``alpha=`` / ``steps=`` / ``random_start=`` (deprecated), with a warning naming the new form."""
    if isinstance(attack, str):
        fields = moved_keywords(old, ("alpha", "steps", "random_start"), function=function,
                                new=f"attack=Attack({attack!r}, ...)")
        attack = Attack(attack, **fields)
    attack = options_from(Attack, attack, old, function=function, keyword="attack", strict=False)
    if not isinstance(attack, Attack):
        raise SurgeonError(f"attack={attack!r} is not an attack; give 'fgsm', 'pgd' or an Attack(...)")
    return attack


def _normalisation_of(normalisation: tuple[Sequence[float], Sequence[float]] | None, old: dict[str, Any],
                      function: str) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """(mean, std) from `normalisation` or from 0.1's ``mean=`` / ``std=`` (deprecated); any other
    keyword left in `old` is the TypeError of an unknown keyword."""
    moved = moved_keywords(old, ("mean", "std"), function=function, new="normalisation=(mean, std)")
    if old:
        raise TypeError(f"{function}() got an unexpected keyword argument {next(iter(old))!r}")
    if moved and normalisation is not None:
        raise SurgeonError(f"{function}: give normalisation= or mean=, std=, not both")
    if moved:
        return moved.get("mean"), moved.get("std")
    return (None, None) if normalisation is None else tuple(normalisation)  # type: ignore[return-value]


@dataclass
class AdversarialResult(Tabular):
    """Metrics (`surgeon.metrics.Metrics`) of one model on clean and attacked images:
    ``metrics[i]`` at ``eps[i]``; ``clean`` on the unattacked images."""

    model: str
    attack: str
    eps: list[float]
    alpha: float | None
    steps: int | None
    random_start: bool
    n_ff: int
    clean: dict[str, float]
    metrics: list[dict[str, float]] = field(repr=False)
    samples: int
    interrupted: bool = False

    @property
    def accuracy(self) -> list[float]:
        """Accuracy on the attacked images, per eps."""
        return [m["acc"] for m in self.metrics]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as null)."""
        return {"model": self.model, "attack": self.attack, "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
                "random_start": self.random_start, "n_ff": self.n_ff, "samples": self.samples,
                "interrupted": self.interrupted, "clean": plain(self.clean),
                "metrics": [plain(m) for m in self.metrics]}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x eps (0: clean images) x metric."""
        return [{"model": self.model, "attack": self.attack, "eps": e, "quantity": k, "value": v}
                for e, cell in ((0.0, self.clean), *zip(self.eps, self.metrics)) for k, v in plain(cell).items()]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.figure_of(viz.plot_attack([self]))


@contextmanager
def frozen(model: nn.Module, n_ff: int = 1) -> Iterator[None]:
    """The model for an input-gradient: eval mode (with ``n_ff > 1``: only the `STOCHASTIC`
    modules in train mode, MC dropout) and every parameter ``requires_grad=False``; flags and
    ``requires_grad`` restored after, also on error."""
    grads = {p: p.requires_grad for p in model.parameters()}
    with restored_modes(model, "eval"):
        try:
            if n_ff > 1:
                for m in model.modules():
                    if isinstance(m, STOCHASTIC):
                        m.training = True
            for p in grads:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in grads.items():
                p.requires_grad_(flag)


def _log_probs(model: nn.Module, x: torch.Tensor, n_ff: int) -> torch.Tensor:
    """log p(x): log_softmax of the logits, or log of the mean softmax over n_ff passes."""
    if n_ff <= 1:
        return logits_of(model(x)).float().log_softmax(1)
    return torch.logsumexp(torch.stack([logits_of(model(x)).float().log_softmax(1) for _ in range(n_ff)]), 0) - math.log(n_ff)


def _gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   n_ff: int) -> torch.Tensor:
    """sign(grad_x L(x, y)) for pixels x, L the summed NLL (per-sample signs equal the mean's)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.nll_loss(_log_probs(model, (x - mean) / std, n_ff), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def _norm_tensors(mean: Sequence[float] | None, std: Sequence[float] | None,
                  like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = like.shape[1]
    m = torch.tensor(mean if mean is not None else (0.0,) * c, device=like.device, dtype=like.dtype)
    s = torch.tensor(std if std is not None else (1.0,) * c, device=like.device, dtype=like.dtype)
    return m.view(1, -1, 1, 1), s.view(1, -1, 1, 1)


def _check_eps(eps: float, what: str = "eps") -> float:
    if not isinstance(eps, (int, float)) or not 0 <= eps <= 1 or math.isnan(eps):
        raise SurgeonError(f"{what}={eps!r} must be a number in [0, 1] (pixels in [0, 1]); e.g. eps=0.007")
    return float(eps)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         normalisation: tuple[Sequence[float], Sequence[float]] | None = None, n_ff: int = 1,
         **old: Any) -> torch.Tensor:
    """FGSM on pixels x in [0, 1]: clip_[0, 1](x + eps * sign(grad_x L)); the model sees
    (x - mean) / std, `normalisation` = (mean, std) (None: pixels as they are). The model is left
    unchanged (`frozen`). ``mean=``, ``std=``: deprecated, give ``normalisation=``."""
    mean, std = _normalisation_of(normalisation, old, "fgsm")
    eps = _check_eps(eps)
    m, s = _norm_tensors(mean, std, x)
    with frozen(model, n_ff):
        return (x + eps * _gradient_sign(model, x, y, m, s, n_ff)).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, attack: Attack | None = None,
        generator: torch.Generator | None = None, normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
        n_ff: int = 1, **old: Any) -> torch.Tensor:
    """PGD on pixels x in [0, 1] (see the module docstring) with the settings of `attack` (an
    `Attack`; default the original's); the model sees (x - mean) / std, `normalisation` = (mean,
    std). The model is left unchanged. ``alpha=``, ``steps=``, ``random_start=``, ``mean=``,
    ``std=``: deprecated, give ``attack=`` and ``normalisation=``."""
    attack = _attack_of(attack, old, "pgd")
    mean, std = _normalisation_of(normalisation, old, "pgd")
    if attack.method != "pgd":
        raise SurgeonError(f"pgd() was given attack method {attack.method!r}; use fgsm() or Attack('pgd', ...)")
    eps, alpha, steps = _check_eps(eps), attack.alpha, attack.steps
    m, s = _norm_tensors(mean, std, x)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    adv = x.detach().clone()
    if attack.random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = (adv + (2 * noise - 1) * eps).clamp(0, 1)
    with frozen(model, n_ff):
        for _ in range(steps):
            adv = torch.minimum(torch.maximum(adv + alpha * _gradient_sign(model, adv, y, m, s, n_ff), lo), hi)
    return adv.detach()


def _check(eps: Sequence[float], n_ff: int, batches: int | None) -> list[float]:
    if not eps:
        raise SurgeonError("no eps given; e.g. eps=0.002,0.004,0.008")
    if not isinstance(n_ff, int) or n_ff < 1:
        raise SurgeonError(f"n_ff={n_ff!r} must be at least 1 (1: one deterministic pass)")
    if batches is not None and batches < 1:
        raise SurgeonError(f"batches={batches} must be at least 1")
    return checks.distinct("eps", [_check_eps(e) for e in eps])


def _predict(model: nn.Module, z: torch.Tensor, n_ff: int) -> torch.Tensor:
    """Log-probabilities for the metrics, without gradients, in the attack's mode."""
    with torch.no_grad(), frozen(model, n_ff):
        return _log_probs(model, z, n_ff)


def _attack_fn(attack: Attack, **shared: Any) -> Callable[..., torch.Tensor]:
    """``fn(model, x, y, eps, generator)``: FGSM (the generator unused) or PGD with its settings."""
    if attack.method == "fgsm":
        return lambda model, x, y, e, g: fgsm(model, x, y, e, **shared)
    return lambda model, x, y, e, g: pgd(model, x, y, e, attack=attack, generator=g, **shared)


def adversarial_robustness(model: nn.Module, data: Iterable[Any], attack: str | Attack = "fgsm",
                           eps: Sequence[float] | None = None, *, n_ff: int = 1, batches: int | None = None,
                           seed: int = 0, progress: bool = False, **old: Any) -> AdversarialResult:
    """Metrics of `model` on the clean batches of `data` and on their FGSM / PGD versions, per eps.

    Args:
        model: a classifier; left exactly as it was (flags, ``requires_grad``, no ``.grad``).
        data: labelled batches normalised for the model (`surgeon.data.loader`); the attack acts on
            their pixels (`surgeon.evaluation.pixels.pixel_normalisation`).
        attack: ``fgsm``, ``pgd`` (the original's settings) or an `Attack` (PGD's step size,
            number of steps and random start).
        eps: pixel budgets in [0, 1], one metrics row each; default the original's (0.007 / 0.3).
        n_ff: the prediction (and the loss) is the mean softmax over this many MC-dropout passes.
        batches: stop after this many batches.
        seed: of PGD's random start; restarted for each eps, so a row does not depend on the others.
        progress: a progress bar over the batches.
        old: ``alpha=``, ``steps=``, ``random_start=`` of 0.1 (deprecated: give an `Attack`).
    """
    attack = _attack_of(attack, old, "adversarial_robustness")
    if old:
        raise TypeError(f"adversarial_robustness() got an unexpected keyword argument {next(iter(old))!r}")
    name, pgd_ = attack.method, attack.method == "pgd"
    eps = _check(list(DEFAULTS[name]["eps"]) if eps is None else eps, n_ff, batches)
    if n_ff > 1:
        check_mc_dropout(model, n_ff, "n_ff")
    if (k := check_classifier(model, data)) is not None:
        check_labels(data, k)
    device = model_device(model)
    mean, std = pixel_normalisation(model, data)
    gens = [torch.Generator(device=device).manual_seed(seed) for _ in eps]
    total = batches if batches is not None else (len(data) if hasattr(data, "__len__") else None)
    attack_batch = _attack_fn(attack, normalisation=(mean, std), n_ff=n_ff)
    tally = _Tally(len(eps))

    def step(batch: Any) -> bool:
        if batch is None:
            return False
        z, y = batch[0].to(device), batch[1].to(device)
        tally.add(_attacked_outputs(model, z, y, attack_batch, list(zip(eps, gens)), mean, std, n_ff), y)
        return True

    loop = BatchLoop("metrics cover", limit=batches)
    with progress_bar(progress, total, f"{name} attack") as advance:
        loop.run(data, step, advance=advance)
    if tally.clean is None:
        raise SurgeonError("the data yielded no batch to attack; check data= (and subset=)")
    return AdversarialResult(display_name(model), name, eps, attack.alpha if pgd_ else None,
                             attack.steps if pgd_ else None, attack.random_start and pgd_, n_ff,
                             tally.clean.compute(), [r.compute() for r in tally.rows], tally.samples,
                             loop.interrupted)


def _attacked_outputs(model: nn.Module, z: torch.Tensor, y: torch.Tensor, attack_batch: Callable[..., torch.Tensor],
                      budgets: list[tuple[float, torch.Generator]], mean: Sequence[float] | None,
                      std: Sequence[float] | None, n_ff: int) -> list[torch.Tensor]:
    """The model's outputs on the normalised batch `z` and on its attacked versions, one per
    (eps, generator) in `budgets`: the attack acts on the pixels x = z * std + mean (clamped to
    [0, 1]) and its result is normalised back, (adv - mean) / std, before the prediction."""
    m, s = _norm_tensors(mean, std, z)
    x = (z * s + m).clamp(0, 1)
    outs = [_predict(model, z, n_ff)]
    for e, g in budgets:
        adv = attack_batch(model, x, y, e, g)
        outs.append(_predict(model, (adv - m) / s, n_ff))
    return outs


class _Tally:
    """The metrics of a run: the clean row and one row per eps, created with the first batch (its
    number of classes) and updated all at once, so a cut batch counts nowhere."""

    def __init__(self, budgets: int):
        self.budgets = budgets
        self.clean: Metrics | None = None
        self.rows: list[Metrics] = []
        self.samples = 0

    def add(self, outs: list[torch.Tensor], y: torch.Tensor) -> None:
        """Count one batch: `outs` = [clean output, attacked output per eps], `y` its labels."""
        if self.clean is None:
            self.clean, self.rows = Metrics(outs[0].shape[1]), [Metrics(outs[0].shape[1]) for _ in range(self.budgets)]
        for metrics, out in zip([self.clean, *self.rows], outs):
            metrics.update(out, y, probs=False)
        self.samples += y.shape[0]
