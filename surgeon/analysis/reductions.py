"""The probes: reductions of block outputs, read as maps (`surgeon.analysis.maps`), into on-device
accumulators, one probe per quantity, registered in `PROBES`. `probe` (`surgeon.analysis.probes`) runs them.

Fourier (Park & Kim, Sec. 2.2, Fig. 2a): per sample and channel A = log(|FFT2(x)| + 1e-6), averaged
over batch and channels, read on the diagonal from DC towards the highest frequency; entry k is the
frequency (2 pi k / H, 2 pi k / W); Delta log amplitude = A(k) - A(0). Two conventions:
- default (the paper's notebook, so figures reproduce the paper): k = 0 .. ceil(min(H, W) / 2) - 1,
  plotted evenly on 0..pi (`freq`), so the last entry, drawn and reported "at pi", truly lies at
  2 pi (ceil(N / 2) - 1) / N: pi / 2 for 4x4 maps, 3 pi / 4 for 8x8, DC for 2x2;
- ``exact=True``: k = 0 .. floor(min(H, W) / 2), plotted at the true frequency, so for even N the
  last entry is the Nyquist entry N / 2, at pi.
Either way every result carries the true frequency of each entry (`omega`, `omega_w`, in units of
pi). Blocks whose maps have fewer than 2 positions per side (1x1 maps: no frequency above 0) are
not measured and are listed in `ProbeResult.unmeasured` with the reason.
Only the diagonal is needed: for a square N x N map the coefficient
F(k, k) = sum_m s_m exp(-2 pi i k m / N), where s_m is the sum of x over the positions with
(h + w) mod N = m. One scatter-add and a length-N DFT per map replace the 2-D FFT.

Variance (Fig. 9): the unbiased variance over the spatial positions of each (sample, channel)
map, averaged over batch and channels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from surgeon.parallel import distributed
from surgeon.core.errors import SurgeonError
from surgeon.core.registry import Registry
from surgeon.model.runtime import accumulator_dtype
from surgeon.core.tables import Tabular, quantity_rows
from surgeon.analysis.maps import Geometry

__all__ = ["PROBES", "list_probes", "Probe", "Fourier", "Variance", "Stats", "Norm", "FourierResult", "ActivationStats"]


class Probe:
    """A reduction of block outputs into on-device accumulators.

    Subclasses set `name` and `spatial` (whether they need a feature map), allocate their
    accumulators in `_start`, reduce one float chunk in `update` with in-place ops (no host sync)
    and turn the accumulators into host values in `result`. `shared` holds intermediates of the
    chunk that one probe computed and another may reuse (``"sums"``: the per-map spatial sums).
    A configured instance is a template: `bind` copies it for one block.
    """

    name: ClassVar[str]
    spatial: ClassVar[bool] = True

    def bind(self, geom: Geometry, device: torch.device) -> Probe:
        p = copy.copy(self)
        p.geom, p.count = geom, 0
        p.acc = p._start(geom, device, accumulator_dtype(device))
        return p

    def unmeasurable(self, geom: Geometry) -> str | None:
        """Why this probe cannot measure the block `geom` reads, or None: a spatial probe needs a
        feature map with at least 2 positions per side."""
        if not self.spatial or geom.layout is not None:
            return None
        if geom.grid:
            return f"{geom.grid[0]}x{geom.grid[1]} map: fewer than 2 positions per side"
        return f"no spatial map: output {tuple(geom.block.out_shape or ())}"

    def _start(self, geom: Geometry, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def update(self, maps: torch.Tensor, shared: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.count, {k: v.clone() for k, v in self.acc.items()}

    def restore(self, snap: tuple[int, dict[str, torch.Tensor]]) -> None:
        self.count, acc = snap
        for k, v in acc.items():
            self.acc[k].copy_(v)

    def _maps_in_chunk(self, maps: torch.Tensor) -> int:
        """Number of (sample, channel) maps in a (b, C, P) / (b, P, C) chunk."""
        return maps.numel() // maps.shape[self.geom.pos_dim]


#: The probes `probe` knows by name (``probes=("fourier", "norm")``, ``surgeon probe --probes``).
PROBES: Registry[type[Probe]] = Registry("probe")


def list_probes() -> list[str]:
    """The names `probe` takes (``fourier``, ``variance``, and any registered with ``PROBES.register``)."""
    return PROBES.names()


@dataclass
class FourierResult(Tabular):
    """Fourier analysis of one block (paper Fig. 2a): the mean log amplitude on the diagonal
    `logamp`, `dlogamp` = logamp - logamp[0], at the plotted positions `freq` (0..1, times pi) and
    the true frequencies (2 pi k / H, 2 pi k / W) of the entries, `omega` and `omega_w` (times pi).
    `exact` says which convention: False (the notebook's) spreads entries 0..ceil(N/2)-1 evenly over
    0..pi, so `freq` is not the true frequency; True keeps entries 0..floor(N/2) at `freq` = `omega`.
    With ``full=True`` also the centred mean log-amplitude `map` and its average over rings of
    equal |f| (`radial`)."""

    freq: np.ndarray
    logamp: np.ndarray
    dlogamp: np.ndarray
    map: np.ndarray | None = None
    radial: np.ndarray | None = None
    omega: np.ndarray | None = None
    omega_w: np.ndarray | None = None
    exact: bool = False

    @property
    def high(self) -> float:
        """Delta log amplitude at the last (highest) diagonal entry: the quantity of Fig. 8, drawn
        "at pi"; its true frequency is `high_omega` (pi only with ``exact`` and an even side)."""
        return float(self.dlogamp[-1])

    @property
    def high_omega(self) -> float:
        """True frequency (row axis, times pi) of the entry `high` reads: 2 k / H for the last k."""
        return float(self.omega[-1]) if self.omega is not None else float(self.freq[-1])

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, bool) else None if v is None else np.asarray(v).tolist())
                for k, v in self.__dict__.items()}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per diagonal entry and quantity (logamp, dlogamp): `frequency` where it is
        plotted, `omega` / `omega_w` its true frequency (times pi) along rows / columns."""
        true_h = self.freq if self.omega is None else self.omega
        true_w = true_h if self.omega_w is None else self.omega_w
        return [{"frequency": float(f), "omega": float(true_h[i]), "omega_w": float(true_w[i]),
                 "quantity": q, "value": float(getattr(self, q)[i])}
                for i, f in enumerate(self.freq) for q in ("logamp", "dlogamp")]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), x="omega", title="Fourier: log amplitude by frequency")


@PROBES.register
class Fourier(Probe):
    """Mean log amplitude of the feature maps' 2-D Fourier transform on the diagonal (Fig. 2a, 8).

    Args:
        full: also accumulate the whole centred 2-D mean log-amplitude map (one FFT2 per map:
            slower) and report its radially averaged spectrum.
        exact: the exact spectrum: entries k = 0 .. floor(N / 2) of an N x N map (N = min(H, W)),
            each at its true frequency 2 pi k / N, so an even N ends with the Nyquist entry at pi.
            Default False: the paper notebook's entries k = 0 .. ceil(N / 2) - 1 spread evenly over
            0..pi (the last is at pi / 2 for 4x4 maps), so the paper's figures reproduce. Both
            report the true frequencies (`FourierResult.omega`).
    """

    name = "fourier"

    def __init__(self, *, full: bool = False, exact: bool = False):
        self.full, self.exact = full, exact

    def unmeasurable(self, geom: Geometry) -> str | None:
        if geom.grid and min(geom.grid) < 2:
            return f"{geom.grid[0]}x{geom.grid[1]} map: no frequency above 0"
        return super().unmeasurable(geom)

    def _start(self, geom, device, dtype):
        h, w = geom.grid
        self.k = min(h, w) // 2 + 1 if self.exact else (min(h, w) + 1) // 2
        freqs = torch.arange(self.k, device=device)
        if h == w:  # F(k, k) = DFT_k of the sums over (row + col) mod N
            self.group = (geom.rows + geom.cols) % h
            phase = 2 * math.pi / h * torch.outer(torch.arange(h, device=device), freqs)
        else:  # F(k, k) straight from the positions: phase 2 pi k (row / H + col / W)
            phase = 2 * math.pi * torch.outer(geom.rows / h + geom.cols / w, freqs)
        self.basis = torch.cat([phase.cos(), -phase.sin()], 1).float()  # [cos | -sin]: real and imaginary parts
        acc = {"logamp": torch.zeros(self.k, device=device, dtype=dtype)}
        if self.full:
            acc["map"] = torch.zeros(h, w, device=device, dtype=dtype)
        return acc

    def _diagonal_amplitude(self, maps: torch.Tensor, shared: dict[str, torch.Tensor]) -> torch.Tensor:
        """|F(k, k)| for every map in the chunk; k on `pos_dim`. Real arithmetic only."""
        d = self.geom.pos_dim
        if hasattr(self, "group"):
            shape = list(maps.shape)
            shape[d] = self.geom.grid[0]
            maps = maps.new_zeros(shape).index_add_(d, self.group, maps)
            shared["sums"] = maps.sum(d, keepdim=True)  # the anti-diagonal sums add up to the map's sum
        basis = self.basis.to(maps.dtype)
        z = maps @ basis if d == 2 else basis.T @ maps
        re, im = z.split(self.k, dim=d)
        return torch.hypot(re, im)

    def update(self, maps, shared):
        d = self.geom.pos_dim
        other = [i for i in range(maps.dim()) if i != d]
        amp = self._diagonal_amplitude(maps, shared)
        self.acc["logamp"].add_(amp.add_(1e-6).log_().sum(other))
        if self.full:
            grid = self.geom.unflatten(maps)
            dims = (2, 3) if d == 2 else (1, 2)
            full = torch.fft.fft2(grid, dim=dims).abs().add_(1e-6).log_()
            self.acc["map"].add_(full.sum([i for i in range(4) if i not in dims]))
        self.count += self._maps_in_chunk(maps)

    def result(self) -> FourierResult:
        n = max(self.count, 1)
        logamp = self.acc["logamp"].cpu().numpy() / n
        h, w = self.geom.grid
        k = np.arange(self.k)
        omega, omega_w = 2 * k / h, 2 * k / w
        freq = (2 * k / min(h, w)) if self.exact else np.linspace(0, 1, self.k)
        out = FourierResult(freq, logamp, logamp - logamp[0], omega=omega, omega_w=omega_w, exact=self.exact)
        if self.full:
            out.map = np.fft.fftshift(self.acc["map"].cpu().numpy() / n)
            out.radial = _radial_average(out.map, self.k)
        return out


def _radial_average(centred: np.ndarray, bins: int) -> np.ndarray:
    """Mean of a centred 2-D spectrum over rings: ring k holds the frequencies whose radius,
    in steps of the shorter side's frequency spacing, rounds to k (|f| ~ 2 pi k / min(H, W));
    `bins` rings from DC, the corners beyond them left out."""
    h, w = centred.shape
    ky = (np.arange(h) - h // 2) * min(h, w) / h
    kx = (np.arange(w) - w // 2) * min(h, w) / w
    ring = np.floor(np.hypot(ky[:, None], kx[None, :]) + 0.5).astype(int)
    keep = ring < bins
    total = np.bincount(ring[keep], centred[keep], minlength=bins)
    count = np.bincount(ring[keep], minlength=bins)
    return total / np.maximum(count, 1)


@PROBES.register
class Variance(Probe):
    """Feature-map variance (Fig. 9): unbiased variance over the spatial positions of each
    (sample, channel) map, averaged over batch and channels. Two passes per chunk (mean, then
    squared deviations) keep it exact where sum-of-squares formulas cancel."""

    name = "variance"

    def _start(self, geom, device, dtype):
        return {"sum": torch.zeros((), device=device, dtype=dtype)}

    def update(self, maps, shared):
        d, p = self.geom.pos_dim, maps.shape[self.geom.pos_dim]
        sums = shared["sums"] if "sums" in shared else maps.sum(d, keepdim=True)
        dev = maps - sums / p
        # sum of squared deviations: per-map norms where maps are rows (accurate, one pass), else square + sum
        ss = torch.linalg.vector_norm(dev, dim=d).square().sum() if d == maps.dim() - 1 else dev.square_().sum()
        self.acc["sum"].add_(ss / (p - 1))
        self.count += self._maps_in_chunk(maps)

    def result(self) -> float:
        return float(self.acc["sum"].cpu()) / max(self.count, 1)


@dataclass
class ActivationStats:
    """Statistics of all the finite values of one block's outputs, and how many were not finite."""

    mean: float
    std: float
    absmax: float
    zeros: float  # share of exact zeros among all values
    nonfinite: int  # NaN and +-Inf values
    count: int  # all values seen

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def tidy(self) -> list[dict[str, Any]]:
        return quantity_rows({}, self.to_dict())


@PROBES.register
class Stats(Probe):
    """Mean, std, max |x|, share of zeros and the number of NaN / Inf values. A NaN never stops
    the run: it is counted, and the other statistics cover the finite values."""

    name = "stats"
    spatial = False

    def _start(self, geom, device, dtype):
        return {k: torch.zeros((), device=device, dtype=dtype) for k in ("n", "mean", "m2", "absmax", "zeros")}

    def update(self, maps, shared):
        a = self.acc
        finite = torch.isfinite(maps)
        vals = torch.where(finite, maps, 0)
        n_b = finite.sum().to(a["n"].dtype)
        mean_b = vals.sum().to(a["n"].dtype) / n_b.clamp_min(1)
        m2_b = torch.where(finite, maps - mean_b.to(maps.dtype), 0).square_().sum().to(a["n"].dtype)
        n = a["n"] + n_b
        delta = mean_b - a["mean"]
        a["m2"].add_(m2_b + delta * delta * a["n"] * n_b / n.clamp_min(1))  # Chan et al.'s merge
        a["mean"].add_(delta * n_b / n.clamp_min(1))
        a["n"].copy_(n)
        a["absmax"].copy_(torch.maximum(a["absmax"], vals.abs().amax().to(a["n"].dtype)))
        a["zeros"].add_((maps == 0).sum())
        self.count += maps.numel()

    def result(self) -> ActivationStats:
        v = {k: float(t.cpu()) for k, t in self.acc.items()}
        std = math.sqrt(v["m2"] / (v["n"] - 1)) if v["n"] > 1 else float("nan")
        return ActivationStats(v["mean"], std, v["absmax"], v["zeros"] / max(self.count, 1),
                               int(self.count - v["n"]), self.count)


@PROBES.register
class Norm(Probe):
    """Per-block activation norm: the L2 norm of each sample's block output over all its values
    (channels x positions; tokens without class tokens), averaged over the samples,
    (1/N) sum_i ||x_i||_2. The worked example of docs/architecture.md ("Add a probe")."""

    name = "norm"
    spatial = False  # any block output: it needs no feature map

    def unmeasurable(self, geom: Geometry) -> str | None:
        """A block output that folds the batch into its first dimension (the graph is built at
        batch size 1; MobileViT's unfolded patches are (B * P, N, C)) has no row per sample."""
        shape = tuple(geom.block.out_shape or ())
        return f"output {shape} at batch size 1: its rows are not samples" if shape[:1] not in ((), (1,)) else None

    def _start(self, geom, device, dtype):
        return {"sum": torch.zeros((), device=device, dtype=dtype)}

    def update(self, maps, shared):
        # chunks split the batch only, so each row is one whole sample
        self.acc["sum"].add_(torch.linalg.vector_norm(maps.flatten(1), dim=1, dtype=self.acc["sum"].dtype).sum())
        self.count += maps.shape[0]

    def result(self) -> float:
        return float(self.acc["sum"].cpu()) / max(self.count, 1)


def _resolve(probes: str | Probe | Iterable[str | Probe]) -> list[Probe]:
    items = [probes] if isinstance(probes, (str, Probe)) else list(probes)
    out = []
    for p in items:
        out.append(p if isinstance(p, Probe) else PROBES.get(p)())
    if not out:
        raise SurgeonError(f"no probe given; choose from {', '.join(PROBES)}")
    return out


def _merge_stats(p: Stats) -> None:
    """The ranks' (n, mean, m2, absmax, zeros) merged in rank order."""
    parts = distributed.gather(({k: float(v) for k, v in p.acc.items()}, p.count))
    a, count = dict(parts[0][0]), parts[0][1]
    for b, c in parts[1:]:
        n = a["n"] + b["n"]
        delta = b["mean"] - a["mean"]
        a["m2"] += b["m2"] + delta * delta * a["n"] * b["n"] / max(n, 1)
        a["mean"] += delta * b["n"] / max(n, 1)
        a["n"], a["absmax"], a["zeros"] = n, max(a["absmax"], b["absmax"]), a["zeros"] + b["zeros"]
        count += c
    for k, v in a.items():
        p.acc[k].fill_(v)
    p.count = count
