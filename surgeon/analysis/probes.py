"""Streaming probes: the paper's Fourier analysis (Fig. 2a, Fig. 8), feature-map variance (Fig. 9)
and activation statistics for the blocks of any model, computed while the data streams through.

    res = surgeon.probe(model, loader, probes=("fourier", "variance"), blocks="*")
    res["c2.b-1"]["fourier"].dlogamp    # Delta log amplitude over the diagonal entries, plotted on 0..pi
    res["c2.b-1"]["fourier"].omega      # the true frequency of each entry (times pi)
    res["c2.b-1"]["variance"]           # mean feature-map variance (a float)

A forward hook sits on each selected block only (on the module output, or input, that carries the
block's output: its graph `tap`). Inside the hook the activation is read as spatial maps in its own
layout (NCHW; NHWC for ConvNeXt / Swin; tokens with class / distillation / register tokens dropped
and the patch grid restored; NesT's windows), in chunks of a few MB along the batch, and reduced on
its own device into accumulators allocated once. Nothing is kept and nothing is copied to the host
until the end; per-sample quantities are summed, so N batches give the same result as one batch
of all the data. The model comes back exactly as it was: hooks removed, train/eval flags restored
(it runs in eval mode under no_grad), also on error or KeyboardInterrupt.

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

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from surgeon.core import checks
from surgeon.parallel import distributed
from surgeon.core.text import format_omega
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import Block, BlockGraph, graph
from surgeon.blockgraph.fx import tensor_leaves
from surgeon.core.jsonio import dumps
from surgeon.core.progress import progress as progress_bar
from surgeon.core.registry import Registry
from surgeon.model.runtime import BatchLoop, accumulator_dtype, display_name, model_device, restored_modes
from surgeon.core.tables import Tabular, quantity_rows

__all__ = ["PROBES", "list_probes", "Probe", "Fourier", "Variance", "Stats", "Norm", "FourierResult", "ActivationStats",
           "ProbeResult", "ProbeSession", "probe", "format_omega"]

CHUNK_BYTES = 16 << 20  # an activation is reduced in chunks of at most this many float32 bytes


# ----------------------------------------------------------------------------------------------
# Where a block output's spatial positions are


class Geometry:
    """How to read one block output as maps: a view (B, C, P) (``pos_dim`` 2) or (B, P, C)
    (``pos_dim`` 1) over its P = H * W spatial positions, and each position's (row, col)."""

    def __init__(self, block: Block, device: torch.device):
        self.block = block
        self.layout = block.layout if block.grid and min(block.grid) >= 2 else None
        self.grid = block.grid
        self.pos_dim = 2 if self.layout == "NCHW" else 1
        if self.layout is None:
            return
        h, w = block.grid
        if self.layout == "BTNC":  # NesT: T windows of N tokens, windows and tokens row-major
            t, n = block.out_shape[1], block.out_shape[2]
            side = math.isqrt(n)
            t_idx, n_idx = torch.arange(t * n).div(n, rounding_mode="floor"), torch.arange(t * n) % n
            rows = t_idx.div(w // side, rounding_mode="floor") * side + n_idx.div(side, rounding_mode="floor")
            cols = (t_idx % (w // side)) * side + n_idx % side
        else:
            pos = torch.arange(h * w)
            rows, cols = pos.div(w, rounding_mode="floor"), pos % w
        self.rows, self.cols = rows.to(device), cols.to(device)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (one block output) as a (B, C, P) or (B, P, C) view; unchanged without a grid."""
        if self.layout is None:
            return x
        if self.layout == "NCHW":
            m = x.flatten(2)
        elif self.layout == "NLC":
            m = x[:, self.block.prefix_tokens:]
        else:
            m = x.flatten(1, 2)
        if m.dim() != 3 or m.shape[self.pos_dim] != self.rows.numel():
            raise SurgeonError(
                f"block {self.block.address} gave shape {tuple(x.shape)}, not the {self.layout} layout with a "
                f"{self.grid[0]}x{self.grid[1]} grid seen when the graph was built; keep every input the same size"
            )
        return m

    def unflatten(self, m: torch.Tensor) -> torch.Tensor:
        """A (b, C, P) / (b, P, C) chunk as (b, C, H, W) / (b, H, W, C), positions row-major."""
        h, w = self.grid
        if self.layout == "BTNC":
            m = m.new_empty(m.shape).index_copy_(1, self.rows * w + self.cols, m)
        return m.unflatten(self.pos_dim, (h, w))


# ----------------------------------------------------------------------------------------------
# Probes


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
class Unmeasured:
    """A selected block that probe `probe` could not measure, and why (e.g. "1x1 map: no frequency
    above 0"). Listed in `ProbeResult.unmeasured`, never dropped silently."""

    block: Block
    probe: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        b = self.block
        return {"address": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "depth": b.depth,
                "layout": b.layout, "grid": b.grid, "probe": self.probe, "reason": self.reason}


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


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class ProbeResult(Tabular):
    """Probe values per block address, with the block metadata (kind, depth, ...).

    ``res["c2.b-1"]`` accepts any address that names one block (negative indices, module paths)
    and returns ``{probe name: value}``. `blocks` are the measured blocks; `unmeasured` lists each
    selected block a probe could not measure (1x1 maps, outputs without a map) with the reason.
    """

    model: str
    graph: BlockGraph
    blocks: list[Block]
    values: dict[str, dict[str, Any]]
    batches: int
    samples: int
    interrupted: bool = False
    probes: list[str] = field(default_factory=list)
    unmeasured: list[Unmeasured] = field(default_factory=list)

    def __getitem__(self, address: str) -> dict[str, Any]:
        b = self.graph[address] if address not in self.values else None
        key = address if b is None else b.address
        if key not in self.values:
            why = "; ".join(f"{u.probe}: {u.reason}" for u in self.unmeasured if u.block.address == key)
            if why:
                raise SurgeonError(f"block {key} was not measured ({why}); measured: {', '.join(self.values) or 'none'}")
            raise SurgeonError(f"block {key} was not probed; probed: {', '.join(self.values) or 'none'}")
        return self.values[key]

    def series(self, name: str, value: Callable[[Any], float] = float) -> tuple[list[Block], np.ndarray]:
        """The probed blocks that have probe `name`, and `value(result)` for each."""
        blocks = [b for b in self.blocks if name in self.values[b.address]]
        return blocks, np.array([value(self.values[b.address][name]) for b in blocks], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return v.to_dict() if hasattr(v, "to_dict") else v

        return {
            "model": self.model,
            "input_size": list(self.graph.input_size),
            "batches": self.batches,
            "samples": self.samples,
            "interrupted": self.interrupted,
            "probes": self.probes,
            "blocks": [
                {"address": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "depth": b.depth,
                 "downsamples": b.downsamples, "layout": b.layout, "grid": b.grid,
                 **{k: plain(v) for k, v in self.values[b.address].items()}}
                for b in self.blocks
            ],
            "unmeasured": [u.to_dict() for u in self.unmeasured],
        }

    def to_json(self, **kwargs: Any) -> str:
        return dumps(self.to_dict(), **kwargs)

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x block x probe quantity (x frequency for the Fourier probe: `frequency`
        where it is plotted, `omega` its true frequency), then one row per block a probe could not
        measure (quantity "not measured", no value, its `reason`)."""
        rows = []
        for b in self.blocks:
            ids = {"model": self.model, "block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage,
                   "depth": b.depth}
            for name, v in self.values[b.address].items():
                sub = v.tidy() if hasattr(v, "tidy") else [{"quantity": name, "value": v}]
                rows += [{**ids, "probe": name, **r} for r in sub]
        for u in self.unmeasured:  # listed, with the reason, never dropped
            b = u.block
            rows.append({"model": self.model, "block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage,
                         "depth": b.depth, "probe": u.probe, "quantity": "not measured", "value": None,
                         "reason": u.reason})
        return rows

    def unmeasured_note(self) -> str | None:
        """One line naming the blocks a probe could not measure and why, or None."""
        if not self.unmeasured:
            return None
        groups: dict[tuple[str, str], list[str]] = {}
        for u in self.unmeasured:
            groups.setdefault((u.probe, u.reason), []).append(u.block.address)
        parts = [f"{probe} not measured on {', '.join(addrs)} ({reason})" for (probe, reason), addrs in groups.items()]
        return f"{self.model}: " + "; ".join(parts)

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        measured = self.probes or list(dict.fromkeys(k for v in self.values.values() for k in v))
        return plots.probe_figure([self], next((p for p in ("fourier", "variance") if p in measured), measured[0]))


# ----------------------------------------------------------------------------------------------
# The engine


class _Tap:
    """The probes of one block, fed by one hook."""

    def __init__(self, block: Block, probes: list[Probe], device: torch.device):
        self.block = block
        self.geom = Geometry(block, device)
        self.reasons = {p.name: r for p in probes if (r := p.unmeasurable(self.geom)) is not None}
        usable = [p for p in probes if p.name not in self.reasons]
        usable.sort(key=lambda p: not isinstance(p, Fourier))  # its sums serve the others
        self.probes = [p.bind(self.geom, device) for p in usable]

    def consume(self, value: Any) -> None:
        x = value if isinstance(value, torch.Tensor) else tensor_leaves(value)[0]
        maps = self.geom.maps(x)
        rows = max(1, CHUNK_BYTES // max(1, 4 * maps[0].numel()))
        for chunk in maps.split(rows):
            if chunk.dtype not in (torch.float32, torch.float64):
                chunk = chunk.float()
            shared: dict[str, torch.Tensor] = {}
            for p in self.probes:
                p.update(chunk, shared)

    def hook_output(self, module: nn.Module, args: Any, output: Any) -> None:
        self.consume(output)

    def hook_input(self, module: nn.Module, args: Any) -> None:
        self.consume(args)


def _is_nnsight(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "nnsight"


def _unwrap(model: Any) -> nn.Module:
    """The torch module inside an ``nnsight.NNsight`` wrapper (`_module`; `_model` before 0.5)."""
    if not _is_nnsight(model):
        return model
    for attr in ("_module", "_model"):
        try:
            return getattr(model, attr)
        except AttributeError:
            continue
    raise SurgeonError("cannot find the module inside this nnsight wrapper; pass the model itself")


@contextmanager
def _class_forwards(model: nn.Module) -> Iterator[None]:
    """Hide the `forward` instance attributes nnsight puts on every module (they trace badly),
    so the block graph is built from the class forwards; put them back afterwards."""
    hidden = {m: m.__dict__.pop("forward") for m in model.modules()
              if _is_nnsight(m.__dict__.get("forward"))}
    try:
        yield
    finally:
        for m, f in hidden.items():
            m.__dict__["forward"] = f


class ProbeSession:
    """Hooks for `probes` on the `blocks` of `model`, as a context manager.

        with ProbeSession(model, ("fourier", "variance"), "c*.b-1") as s:
            for x, _ in loader:
                s.step(x)
        res = s.results()

    On entry the model is put in eval mode with hooks on the selected blocks; on exit (normal,
    error or KeyboardInterrupt) the hooks are removed and every module's train/eval flag is
    restored. `step` runs one batch under no_grad and commits it; a batch cut short by an
    exception is rolled back, so results always cover whole batches. `forward` replaces the
    model call (e.g. a `torch.compile`d model, compiled after entering so the hooks are in it).

    `model` may also be an ``nnsight.NNsight`` wrapper: the probes then read the block outputs
    through its trace (``envoy.output`` / ``envoy.input``) instead of hooks of their own.
    """

    def __init__(self, model: nn.Module, probes: str | Probe | Iterable[str | Probe] = ("fourier", "variance"),
                 blocks: str | Sequence[str] = "*", *, input_size: Sequence[int] | None = None,
                 block_graph: BlockGraph | None = None):
        self.nnsight = model if _is_nnsight(model) else None
        self.model = _unwrap(model)
        self.probe_specs = _resolve(probes)
        with _class_forwards(self.model):
            self.graph = block_graph or graph(self.model, input_size=input_size)
        self.blocks = self.graph.select(blocks)
        self.device = model_device(self.model)
        taps = [_Tap(b, self.probe_specs, self.device) for b in self.blocks]
        self.taps = [t for t in taps if t.probes]
        self.unmeasured = [Unmeasured(t.block, name, reason) for t in taps for name, reason in t.reasons.items()]
        if not self.taps:
            raise SurgeonError(f"no selected block has a feature map for {', '.join(p.name for p in self.probe_specs)}; "
                               f"select blocks with spatial outputs (e.g. blocks='c*') or use the stats probe")
        self.forward: Callable[[torch.Tensor], Any] = self.model
        self.batches = self.samples = 0
        self._handles: list[Any] = []
        self._modes = contextlib.ExitStack()

    def __enter__(self) -> ProbeSession:
        self._modes.enter_context(restored_modes(self.model, "eval"))
        try:
            if self.nnsight is None:
                for t in self.taps:
                    path, side = t.block.tap
                    mod = self.model.get_submodule(path)
                    self._handles.append(mod.register_forward_hook(t.hook_output) if side == "out"
                                         else mod.register_forward_pre_hook(t.hook_input))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._modes.close()

    def _snapshots(self) -> list[list[tuple[int, dict[str, torch.Tensor]]]]:
        return [[p.snapshot() for p in t.probes] for t in self.taps]

    def step(self, x: torch.Tensor) -> None:
        """Run one batch through the model (or its nnsight trace) and commit its contributions."""
        snap = self._snapshots()
        x = x.to(self.device, non_blocking=True)
        try:
            with torch.no_grad():
                if self.nnsight is not None:
                    self._trace(x)
                else:
                    self.forward(x)
        except BaseException:
            for t, tsnap in zip(self.taps, snap):
                for p, s in zip(t.probes, tsnap):
                    p.restore(s)
            raise
        self.batches += 1
        self.samples += x.shape[0]

    def _trace(self, x: torch.Tensor) -> None:
        with self.nnsight.trace(x):
            for t in self.taps:  # graph order is call order, as nnsight requires
                path, side = t.block.tap
                envoy = self.nnsight
                for part in filter(None, path.split(".")):
                    envoy = getattr(envoy, part)
                t.consume(envoy.output if side == "out" else envoy.input)

    def results(self, interrupted: bool = False) -> ProbeResult:
        values = {t.block.address: {p.name: p.result() for p in t.probes} for t in self.taps}
        return ProbeResult(display_name(self.model), self.graph, [t.block for t in self.taps], values, self.batches, self.samples,
                            interrupted, [p.name for p in self.probe_specs], self.unmeasured)


def _images(batch: Any) -> torch.Tensor | None:
    if batch is None or isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise SurgeonError(f"data must yield image tensors or (images, labels) batches, not {type(batch).__name__}")


def _first(data: Iterable[Any]) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    it = (x for x in map(_images, data) if x is not None)
    try:
        x0 = next(it)
    except StopIteration:
        raise SurgeonError("the data yielded no images; check data=") from None
    if x0.dim() != 4:
        raise SurgeonError(f"images must be batches (B, C, H, W), got shape {tuple(x0.shape)}")

    def chain() -> Iterator[torch.Tensor]:
        yield x0
        yield from it

    return x0, chain()


def probe(model: nn.Module, data: Iterable[Any] | torch.Tensor,
          probes: str | Probe | Iterable[str | Probe] = ("fourier", "variance"), blocks: str | Sequence[str] = "*",
          *, batches: int | None = None, compile: bool = False, progress: bool = False) -> ProbeResult:
    """Run `data` through `model` and reduce every selected block's output with `probes`.

    Args:
        model: any classifier (or an ``nnsight.NNsight`` wrapper of one); left exactly as it was.
        data: a batch tensor (B, C, H, W), or an iterable of them or of ``(images, labels)``.
        probes: names from `PROBES` (``fourier``, ``variance``, ``stats``) or configured probes
            such as ``Fourier(full=True)``.
        blocks: a block selection (see `BlockGraph.select`); blocks without a feature map get
            only the probes that need none.
        batches: stop after this many batches.
        compile: run the model through ``torch.compile`` with the probes inside.
        progress: show a progress bar (rich).

    Returns:
        `ProbeResult`; if interrupted (Ctrl-C), the results of the whole batches done so far,
        with ``interrupted=True`` and a warning.
    """
    checks.args(batches=batches)
    if batches is not None and batches < 1:
        raise SurgeonError(f"batches={batches} must be at least 1")
    stream = [data] if isinstance(data, torch.Tensor) else data
    if distributed.active():  # under torchrun: this rank's rows of a tensor, its batches of a stream
        stream = [distributed.shard_batches(data)] if isinstance(data, torch.Tensor) else distributed.shard_batches(data)
        if batches is not None:
            batches = -(-(batches - distributed.rank()) // distributed.world())
            if batches < 1:
                raise SurgeonError(f"batches= below the {distributed.world()} processes; give one batch per process at least")
    x0, xs = _first(stream)
    session = ProbeSession(model, probes, blocks, input_size=tuple(x0.shape[1:]))
    total = batches if batches is not None else (len(stream) if hasattr(stream, "__len__") else None)
    loop = BatchLoop("results cover", limit=batches)
    with session, progress_bar(progress, total, "probing") as advance:
        if compile:
            session.forward = torch.compile(session.model)
        loop.run(xs, session.step, advance=advance)  # step rolls a failed batch back itself
    if distributed.active():
        _all_reduce(session)
    return session.results(loop.interrupted)


def _all_reduce(session: ProbeSession) -> None:
    """Under torchrun: every probe's accumulators summed over the ranks once (the stats probe's
    moments merged by Chan et al.'s formula), and the batch / sample counts."""
    for t in session.taps:
        for p in t.probes:
            if isinstance(p, Stats):
                _merge_stats(p)
            else:
                distributed.all_reduce_sums(p.acc)
                p.count = int(distributed.total(p.count))
    session.batches = int(distributed.total(session.batches))
    session.samples = int(distributed.total(session.samples))


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
