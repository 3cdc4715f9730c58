"""Perturbation stability in the style of CIFAR-10-P (Hendrycks & Dietterich 2019; the original
code's ``ops/cifarp.py`` and ``ops/tests.py``).

    res = perturbation_stability(model, loader, ["gaussian_noise", "translate"])   # made on the fly
    res = perturbation_stability(model, source=PerturbationSource("~/data/CIFAR-10-P"))  # the release
    res.metrics["translate"]["flip_probability"], res.mean_flip_probability

Each image becomes a sequence of T frames x_0 .. x_{T-1}. With p_t the predicted distribution of
frame t (softmax, or the mean softmax over ``mc_dropout`` passes) and y_t = argmax p_t, per
perturbation type, averaged over the images:

- ``consistency`` = (1/(T-1)) sum_{t<T-1} [y_t == y_{t+1}] (the original's);
- ``cec`` = -(1/(T-1)) sum_{t<T-1} (1/K) sum_k p_{t+1,k} log p_{t,k}: the original's
  consecutive-frame cross-entropy, which averages (not sums) over the K classes;
- ``flip_probability`` = (1/(T-1)) sum_{t>=1} [y_t != y_{t-1}], or [y_t != y_0] for the noise
  types (their frames are independent draws, not a motion): Hendrycks & Dietterich's FP;
- ``mean_flip_probability``: the mean FP over the types (not normalised by AlexNet's).

Sequences: the CIFAR-10-P ``<type>.npy`` files ((N, T, H, W, 3) uint8, memory-mapped, read a
batch at a time, resized to the model's input size when they differ), or made on the fly from
any labelled data (labels unused): ``translate`` shifts the image by t px in frame t (reflected
border), and a corruption of `surgeon.corruptions` grows in severity, frame t at severity t
(T = 6: the clean image and severities 1..5). Frames are pixels in [0, 1], normalised for the
model as `surgeon.evaluation.pixels` does. The model is left as it was (eval mode, no gradients, flags
restored, also on error).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from surgeon.core import checks
from surgeon.data.corruptions import CORRUPTIONS, corrupt
from surgeon.core.errors import SurgeonError
from surgeon.core.files import check_folder
from surgeon.model.outputs import logits_of
from surgeon.core.jsonio import plain
from surgeon.evaluation.metrics import check_mc_dropout, mc_dropout_probs
from surgeon.model.sizes import input_size_of
from surgeon.core.progress import progress as progress_bar
from surgeon.evaluation.pixels import model_normalisation, pixel_normalisation
from surgeon.evaluation.robustness import _npy
from surgeon.model.runtime import display_name, model_device, restored_modes
from surgeon.core.tables import Tabular
from surgeon._compat import options_from

__all__ = ["NOISE", "ON_THE_FLY", "CIFAR_P", "PerturbationSource", "StabilityResult", "perturbation_stability", "sequence",
           "stability_metrics"]

NOISE = ("gaussian_noise", "shot_noise", "speckle_noise", "impulse_noise")  # FP against the first frame
CIFAR_P = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "spatter", "brightness", "translate", "rotate",
           "tilt", "scale", "speckle_noise", "gaussian_blur", "snow", "shear")  # the release's types
ON_THE_FLY = ("translate", *CORRUPTIONS)
FRAMES = {"translate": 6}  # corruptions: severities 0..5


@dataclass
class StabilityResult(Tabular):
    """Per perturbation type: ``metrics[type]`` = {consistency, cec, flip_probability}."""

    model: str
    source: str
    perturbations: list[str]
    frames: dict[str, int]
    metrics: dict[str, dict[str, float]] = field(repr=False)
    samples: int
    interrupted: bool = False

    @property
    def mean_flip_probability(self) -> float:
        """Mean flip probability over the types measured."""
        values = [m["flip_probability"] for m in self.metrics.values()]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "perturbations": self.perturbations, "frames": self.frames,
                "samples": self.samples, "interrupted": self.interrupted,
                "mean_flip_probability": plain({"v": self.mean_flip_probability})["v"],
                "metrics": {k: plain(v) for k, v in self.metrics.items()}}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x perturbation x metric (consistency, cec, flip_probability), then the
        mean flip probability over the types (perturbation None)."""
        ids = {"model": self.model, "samples": self.samples}
        rows = [{**ids, "perturbation": n, "frames": self.frames.get(n), "quantity": k, "value": plain(v)}
                for n in self.perturbations for k, v in self.metrics[n].items()]
        return rows + [{**ids, "perturbation": None, "frames": None, "quantity": "mean_flip_probability",
                        "value": plain(self.mean_flip_probability)}]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.figure_of(viz.plot_stability([self]))


def stability_metrics(probs: torch.Tensor, noise: bool) -> dict[str, torch.Tensor]:
    """Per-image sums over frame pairs of the module docstring's quantities, for probs (B, T, K):
    ``consistent``, ``cec`` and ``flips`` (each (B,)); divide by T - 1 and average for the metrics."""
    pred = probs.argmax(-1)
    logp = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
    return {
        "consistent": (pred[:, :-1] == pred[:, 1:]).sum(1),
        "cec": -(probs[:, 1:] * logp[:, :-1]).mean(-1).sum(1),
        "flips": (pred[:, 1:] != (pred[:, :1] if noise else pred[:, :-1])).sum(1),
    }


def sequence(x: torch.Tensor, name: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frames (B, T, C, H, W) of the perturbation `name` made on the fly from pixels x (B, C, H, W)."""
    if name == "translate":
        t = FRAMES["translate"]
        if t >= min(x.shape[-2:]):
            raise SurgeonError(f"translate needs images larger than {t} px")
        m = t - 1
        pad = F.pad(x, (m, m, 0, 0), mode="reflect")
        w = x.shape[-1]
        return torch.stack([pad[..., m - s:m - s + w] for s in range(t)], 1)  # frame s: shifted right by s px
    return torch.stack([corrupt(x, name, s, generator) for s in range(6)], 1)


def _check(names: Sequence[str], on_the_fly: bool) -> list[str]:
    names = checks.distinct("perturbations", names)
    if not names:
        raise SurgeonError("no perturbation asked for; e.g. perturbations=translate,gaussian_noise")
    known = ON_THE_FLY if on_the_fly else CIFAR_P
    bad = [n for n in names if n not in known]
    if bad:
        where = "made on the fly" if on_the_fly else "of CIFAR-10-P"
        raise SurgeonError(f"unknown perturbation {bad[0]!r} {where}; choose from {', '.join(known)}")
    return names


def check_perturbations(perturbations: Sequence[str] | None = None, cifar_p: str | os.PathLike | None = None) -> list[str]:
    """The perturbation types `perturbation_stability` will measure, checked before any work
    (unknown names, a missing CIFAR-10-P folder or file); default: translate and three noises
    made on the fly, or every file of `cifar_p`."""
    if cifar_p is not None:
        return list(_cifar_p(cifar_p, perturbations))
    return _check(perturbations if perturbations is not None else ["translate", *NOISE[:3]], True)


def _cifar_p(path: str | os.PathLike, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    root = check_folder(path, "CIFAR-10-P folder", "point cifar_p= at the extracted release")
    present = sorted(p.stem for p in root.glob("*.npy") if p.stem in CIFAR_P)
    names = _check(names if names is not None else present or ["(none)"], False)
    missing = [f"{n}.npy" for n in names if n not in present]
    if missing:
        raise SurgeonError(f"{str(root)!r} lacks {', '.join(missing)}; re-extract the archive or choose among the files "
                           f"present: perturbations={','.join(present) or '(none)'}")
    arrays = {n: _npy(root / f"{n}.npy") for n in names}
    for n, a in arrays.items():
        if a.dtype != np.uint8 or a.ndim != 5 or a.shape[-1] != 3 or a.shape[1] < 2:
            raise SurgeonError(f"{str(root / f'{n}.npy')!r} holds {a.dtype} of shape {a.shape}, expected uint8 "
                               "(N, frames >= 2, H, W, 3); re-extract the archive")
    return arrays


class _Sums:
    """On-device sums per type; read back once."""

    def __init__(self):
        self.sums: dict[str, dict[str, torch.Tensor]] = {}
        self.pairs: dict[str, int] = {}

    def add(self, name: str, probs: torch.Tensor) -> None:
        part = {k: v.double().sum() for k, v in stability_metrics(probs, name in NOISE).items()}
        if name not in self.sums:
            self.sums[name], self.pairs[name] = part, 0
        else:
            for k, v in part.items():
                self.sums[name][k] += v
        self.pairs[name] += probs.shape[0] * (probs.shape[1] - 1)

    def compute(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, s in self.sums.items():
            n = self.pairs[name]
            out[name] = {"consistency": float(s["consistent"]) / n, "cec": float(s["cec"]) / n,
                         "flip_probability": float(s["flips"]) / n}
        return out


def _frame_probs(model: nn.Module, frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: Sequence[int] | None,
                 mc_dropout: int) -> torch.Tensor:
    """p_t for frames (B, T, C, H, W) of pixels: resized to `size`, normalised, one forward of B T."""
    b, t = frames.shape[:2]
    x = frames.flatten(0, 1)
    if size is not None and tuple(x.shape[-2:]) != tuple(size[-2:]):
        x = F.interpolate(x, size=tuple(size[-2:]), mode="bilinear", align_corners=False, antialias=True)
    x = (x - mean) / std
    probs = mc_dropout_probs(model, x, mc_dropout) if mc_dropout else logits_of(model(x)).float().softmax(-1)
    return probs.view(b, t, -1)


def _sequences(model: nn.Module, data: Iterable[Any] | None, cifar_p: str | os.PathLike | None,
               perturbations: Sequence[str] | None, seed: int) -> tuple[dict[str, Any], str, dict[str, int], tuple]:
    """Where the sequences come from: the CIFAR-10-P arrays (pixels: the model's own mean / std)
    or the data's batches (made on the fly; their declared normalisation); the source's name, the
    frames per type, and (mean, std)."""
    if cifar_p is not None:
        arrays = _cifar_p(cifar_p, perturbations)
        frames = {n: int(a.shape[1]) for n, a in arrays.items()}
        return arrays, f"CIFAR-10-P files in {cifar_p}", frames, model_normalisation(model)
    names = check_perturbations(perturbations)
    frames = {n: FRAMES.get(n, 6) for n in names}
    return {}, f"made on the fly (seed {seed})", frames, pixel_normalisation(model, data)


@dataclass(frozen=True)
class PerturbationSource:
    """Where the perturbation sequences come from:

    - ``cifar_p``: None (made on the fly from the data's batches) or a CIFAR-10-P folder of
      ``<type>.npy`` files, read memory-mapped;
    - ``batch_size``: images per batch read from the files (each makes T frames), in [1, 10^6];
    - ``input_size``: (C, H, W) the frames are resized to; default: the CIFAR-10-P frames to the
      model's own size (`surgeon.model.sizes.input_size_of`), the frames made from data as they are.

    Checked on construction (`batch_size`: the range of `surgeon.core.checks.ARGS`)."""

    cifar_p: str | os.PathLike | None = None
    batch_size: int = 32
    input_size: Sequence[int] | None = None

    def __post_init__(self) -> None:
        checks.args(batch_size=self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"cifar_p": None if self.cifar_p is None else str(self.cifar_p), "batch_size": self.batch_size,
                "input_size": None if self.input_size is None else list(self.input_size)}


def perturbation_stability(model: nn.Module, data: Iterable[Any] | None = None, perturbations: Sequence[str] | None = None,
                           *, source: PerturbationSource | None = None, mc_dropout: int = 0, batches: int | None = None,
                           seed: int = 0, progress: bool = False, **old: Any) -> StabilityResult:
    """Stability of the predictions of `model` along perturbation sequences (module docstring).

    Args:
        data: labelled batches normalised for the model (`surgeon.data.loader`), for sequences made
            on the fly (labels unused); not needed with ``source.cifar_p``.
        perturbations: types; default ``translate`` and every noise corruption made on the fly, or
            every CIFAR-10-P file present.
        source: a `PerturbationSource`: the CIFAR-10-P folder (None: made on the fly), its batch
            size, the size the frames are resized to.
        mc_dropout: p_t is the mean softmax over this many stochastic passes (0: one pass).
        batches: per type, stop after this many batches.
        seed: of the noise of the sequences made on the fly, restarted for each type.
        old: ``cifar_p=``, ``batch_size=``, ``input_size=`` of 0.1 (deprecated: give ``source=``).
    """
    source = options_from(PerturbationSource, source, old, function="perturbation_stability", keyword="source")
    cifar_p, batch_size, input_size = source.cifar_p, source.batch_size, source.input_size
    if (data is None) == (cifar_p is None):
        raise SurgeonError("give either data (sequences made on the fly) or cifar_p (the CIFAR-10-P files), one of them")
    checks.args(batches=batches, mc_dropout=mc_dropout, seed=seed)
    check_mc_dropout(model, mc_dropout)
    device = model_device(model)
    # the loader's batches are sized for the model already; the files' frames are resized to it
    size = input_size_of(model, input_size) if cifar_p is not None or input_size is not None else None
    arrays, source, frames, (m, s) = _sequences(model, data, cifar_p, perturbations, seed)
    names = list(frames)
    mean = torch.tensor(m, device=device).view(1, -1, 1, 1)
    std = torch.tensor(s, device=device).view(1, -1, 1, 1)
    sums, samples, interrupted = _Sums(), 0, False
    try:
        with restored_modes(model, "eval"), torch.no_grad(), \
                progress_bar(progress, len(names), "perturbations") as advance:
            for name in names:
                stream = _file_batches(arrays[name], batch_size, device) if cifar_p is not None else \
                    _made_batches(data, name, mean, std, seed, device)
                n = 0
                for k, seq in enumerate(stream):
                    if batches is not None and k >= batches:
                        break
                    sums.add(name, _frame_probs(model, seq, mean, std, size, mc_dropout))
                    n += seq.shape[0]
                samples = max(samples, n)
                advance()
    except KeyboardInterrupt:
        if not sums.sums:
            raise
        interrupted = True
        warnings.warn("interrupted: the last perturbation type covers part of the data", stacklevel=2)
    done = sums.compute()
    return StabilityResult(display_name(model), source, [n for n in names if n in done],
                           {n: frames[n] for n in done}, done, samples, interrupted)


def _file_batches(array: np.ndarray, batch_size: int, device: torch.device):
    """(B, T, 3, H, W) pixels in [0, 1] from a memory-mapped (N, T, H, W, 3) uint8 array."""
    for i in range(0, array.shape[0], batch_size):
        chunk = torch.from_numpy(np.array(array[i:i + batch_size])).to(device)  # one batch read from the map
        yield chunk.permute(0, 1, 4, 2, 3).float() / 255


def _made_batches(data: Iterable[Any], name: str, mean: torch.Tensor, std: torch.Tensor, seed: int,
                  device: torch.device):
    """Sequences of `name` made from the clean batches of `data` (normalised: taken back to pixels)."""
    g = torch.Generator(device=device).manual_seed(seed)
    for batch in data:
        if batch is None:
            continue
        x = (batch[0].to(device) * std + mean).clamp(0, 1)
        yield sequence(x, name, g)
