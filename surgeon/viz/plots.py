"""Figures in the paper's style.

Depth plots follow the paper (Fig. 8, Fig. 9): normalised depth on the x axis, MSA blocks shaded
grey and downsampling blocks shaded blue, Conv / MLP blocks left white. Spectra follow Fig. 2a:
Delta log amplitude against frequency 0..pi, one line per block, coloured by depth.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from surgeon.parallel import distributed
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import Block, BlockGraph
from surgeon.core.files import atomic_path, check_output
from surgeon.analysis.curvature import DensityResult, SpectrumResult, density_on_grid
from surgeon.analysis.landscapes import LandscapeResult
from surgeon.analysis.probes import ProbeResult, format_omega

__all__ = ["KIND_COLORS", "plot_blocks", "plot_spectra", "plot_depth", "probe_figure", "save_figure",
           "figure_formats", "plot_spectrum", "plot_density", "plot_landscape", "spectrum_figure"]

KIND_COLORS = {
    "stem": "#7f7f7f",
    "conv": "#2ca02c",
    "msa": "#9467bd",
    "mlp": "#17becf",
    "downsample": "#bcbd22",
    "head": "#d62728",
    "other": "#c7c7c7",
}


def plot_blocks(g: BlockGraph, value: str = "flops", ax: Axes | None = None, title: str | None = None) -> Axes:
    """Bar chart of one block attribute (``flops`` or ``params``) along depth, coloured by kind,
    with stages labelled and alternate stages shaded."""
    if value not in ("flops", "params"):
        raise ValueError(f"value must be 'flops' or 'params', not {value!r}")
    ax = ax or plt.subplots(figsize=(10, 3))[1]
    heights = [getattr(b, value) / (1e9 if value == "flops" else 1e6) for b in g.blocks]
    ax.bar(range(len(g.blocks)), heights, color=[KIND_COLORS[b.kind] for b in g.blocks], width=0.85)
    index = {id(b): i for i, b in enumerate(g.blocks)}
    for k, (name, blocks) in enumerate(g.stages.items()):
        lo, hi = index[id(blocks[0])] - 0.5, index[id(blocks[-1])] + 0.5
        if k % 2 == 0:
            ax.axvspan(lo, hi, color="0.93", zorder=0)
        ax.text((lo + hi) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.6, len(g.blocks) - 0.4)
    ax.set_ylim(0, max(heights, default=1) * 1.3)  # headroom for the legend
    ax.set_xticks([])
    ax.set_xlabel("block (depth)")
    ax.set_ylabel("GFLOPs" if value == "flops" else "M params")
    kinds = [k for k in KIND_COLORS if any(b.kind == k for b in g.blocks)]
    ax.legend(handles=[Patch(color=KIND_COLORS[k], label=k) for k in kinds], fontsize=7, ncol=len(kinds),
              loc="upper left", frameon=False)
    if title:
        ax.set_title(title, loc="left", fontsize=10, pad=14)
    return ax


SHADES = {"msa": ("0.85", "MSA"), "downsample": ("#b4d3ee", "downsampling")}  # the paper's Fig. 8 / 9
_DEPTH_COLORMAP = "plasma"


def _shade(ax: Axes, blocks: Sequence[Block], spacing: float) -> list[Patch]:
    """Shade MSA and downsampling blocks over their share of the depth axis; legend handles."""
    seen = {}
    for b in blocks:
        kind = "downsample" if b.downsamples and b.kind != "msa" else b.kind
        if kind in SHADES:
            color, label = SHADES[kind]
            ax.axvspan(b.depth - spacing / 2, b.depth + spacing / 2, color=color, lw=0, zorder=0)
            seen[kind] = Patch(facecolor=color, edgecolor="0.45", lw=0.6, label=label)  # an outline: pale swatches show
    return list(seen.values())


def plot_spectra(res: ProbeResult, ax: Axes | None = None, colorbar: bool = True) -> Axes:
    """Fig. 2a: Delta log amplitude against frequency (0..pi) for every probed block, coloured
    from the first (dark) to the last (bright) block by normalised depth."""
    ax = ax or plt.subplots(figsize=(4, 3.2))[1]
    cmap = ListedColormap(plt.get_cmap(_DEPTH_COLORMAP)(np.linspace(0, 0.9, 256)))  # no pale yellow
    blocks, _ = res.series("fourier", lambda r: r.high)
    for b in blocks:
        r = res.values[b.address]["fourier"]
        ax.plot(r.freq, r.dlogamp, color=cmap(b.depth), lw=1.2)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0.0\u03c0", "0.5\u03c0", "1.0\u03c0"])
    ax.set_xlabel(_frequency_label([res.values[b.address]["fourier"] for b in blocks]))
    ax.set_ylabel("\u0394 Log amplitude")
    ax.set_title(res.model, loc="left", fontsize=10)
    if colorbar:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        ax.figure.colorbar(sm, ax=ax, label="Normalized depth", ticks=[0, 0.5, 1], fraction=0.05, pad=0.02)
    return ax


def _frequency_label(results: Sequence[Any]) -> str:
    """The spectra's x label: true frequency with ``exact``, else the notebook's even spread, with
    the true frequency of its last entry (pi/2 for 4x4 maps, 3pi/4 for 8x8)."""
    if results and all(r.exact for r in results):
        return "Frequency (true, 2\u03c0k/N)"
    lasts = sorted({format_omega(r.high_omega) for r in results if not r.exact}, key=len)
    return "Frequency (entries 0..N/2-1 spread over 0..\u03c0" + (f"; last at {', '.join(lasts)})" if lasts else ")")


def _high_label(res: ProbeResult) -> str:
    """Fig. 8's y label: the Delta log amplitude of the last entry, at pi only when exact."""
    results = [res.values[b.address]["fourier"] for b in res.blocks if "fourier" in res.values[b.address]]
    if results and all(r.exact and r.high_omega == 1 for r in results):
        return "\u0394 Log amplitude at \u03c0"
    return "\u0394 Log amplitude, last diagonal entry"


_DEPTH_QUANTITIES = {
    "fourier": ("\u0394 Log amplitude at \u03c0", lambda r: r.high),
    "variance": ("Feature map variance", float),
    "stats": ("Std of activations", lambda r: r.std),
    "norm": ("Activation norm ‖x‖₂", float),
}


def plot_depth(res: ProbeResult, probe: str = "fourier", ax: Axes | None = None, color: str = "C0") -> Axes:
    """Fig. 8 (``fourier``: Delta log amplitude at pi) or Fig. 9 (``variance``) against normalised
    depth, MSA and downsampling blocks shaded; ``stats`` plots the activations' std."""
    label, value = _DEPTH_QUANTITIES[probe]
    ax = ax or plt.subplots(figsize=(4, 3.2))[1]
    blocks, y = res.series(probe, value)
    if probe == "fourier":
        label = _high_label(res)
    depth = np.array([b.depth for b in blocks])
    spacing = 1 / max(len(res.graph.blocks) - 1, 1)
    handles = _shade(ax, blocks, spacing)
    ax.plot(depth, y, marker="o", ms=3, lw=1.2, color=color)
    if probe != "fourier" and len(y) and np.nanmin(y) > 0 and np.nanmax(y) / np.nanmin(y) > 100:
        ax.set_yscale("log")
    ax.set_xlim(-spacing, 1 + spacing)
    ax.set_xlabel("Normalized depth")
    ax.set_ylabel(label)
    ax.set_title(res.model, loc="left", fontsize=10)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)
    return ax


def probe_figure(results: Sequence[ProbeResult], probe: str) -> Figure:
    """One figure comparing models side by side: for ``fourier`` the spectra (Fig. 2a) over
    Delta log amplitude at pi against depth (Fig. 8); for ``variance`` Fig. 9; for ``stats`` the
    std of activations against depth."""
    if probe not in _DEPTH_QUANTITIES:
        raise SurgeonError(f"no figure for probe {probe!r}; figures: {', '.join(_DEPTH_QUANTITIES)}")
    rows = 2 if probe == "fourier" else 1
    n = len(results)
    fig, axes = plt.subplots(rows, n, figsize=(4.2 * n + (0.6 if rows == 2 else 0), 3.3 * rows), squeeze=False,
                             sharey="row", layout="constrained")
    for j, res in enumerate(results):
        if probe == "fourier":
            plot_spectra(res, axes[0, j], colorbar=j == n - 1)
        plot_depth(res, probe, axes[rows - 1, j], color=f"C{j}")
        if j:
            for ax in axes[:, j]:
                ax.set_ylabel("")
    return fig


def figure_formats() -> tuple[str, ...]:
    """File suffixes matplotlib can write here (``.png``, ``.svg``, ``.pdf``, ...)."""
    return tuple(f".{k}" for k in FigureCanvasBase.get_supported_filetypes())


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names; the figure is closed."""
    target = check_output(path, overwrite=True, suffixes=figure_formats())
    try:
        if not distributed.is_main():  # under torchrun rank 0 writes
            return target
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:].lower(), dpi=dpi)
    finally:
        plt.close(fig)
    return target


def plot_spectrum(results: Sequence[SpectrumResult], ax: Axes | None = None) -> Axes:
    """The paper's Hessian max-eigenvalue spectrum (Fig. 1c, Fig. 4): the top-k eigenvalues of
    every mini-batch pooled into one smoothed density per model, with a rug of the values."""
    ax = ax or plt.subplots(figsize=(5, 3.3))[1]
    pooled = np.concatenate([r.pooled for r in results])
    lo, hi = float(pooled.min()), float(pooled.max())
    pad = 0.1 * max(hi - lo, abs(hi), 1e-12)
    grid = np.linspace(lo - pad, hi + pad, 600)
    for j, r in enumerate(results):
        values = r.pooled
        _, dens, _ = density_on_grid(values[None, :], np.full((1, values.size), 1.0), grid=grid,
                                     sigma=0.02 * max(hi - lo, 1e-12))
        ax.plot(grid, dens, color=f"C{j}", lw=1.4, label=f"{r.model} ({r.eigenvalues.shape[0]} batches)")
        ax.plot(values, np.zeros_like(values), "|", color=f"C{j}", ms=10, alpha=0.6)
    ax.axvline(0, color="0.6", lw=0.8, zorder=0)
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density")
    ax.set_title(f"Hessian top-{results[0].eigenvalues.shape[1]} eigenvalues ({results[0].which})", loc="left",
                 fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_density(res: DensityResult, ax: Axes | None = None, label: str | None = None) -> Axes:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature, on a log scale."""
    ax = ax or plt.subplots(figsize=(5, 3.3))[1]
    ax.semilogy(res.grid, res.density + 1e-12, lw=1.2, label=label)
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density (SLQ)")
    if label:
        ax.legend(fontsize=7, frameon=False)
    return ax


def plot_landscape(res: LandscapeResult, fig: Figure | None = None, clip: float = 42.0) -> Figure:
    """Fig. 1a: a 2-D landscape as a contour map beside a 3-D surface, or a 1-D profile with its
    standard-error band. Values are shifted to a minimum of 0 and clipped at `clip`, as in the paper."""
    z = np.clip(res.loss - np.nanmin(res.loss), None, clip)
    c = res.coords
    if res.loss.ndim == 1:
        fig = fig or plt.figure(figsize=(5, 3.3), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(c, z, marker="o", ms=3)
        if np.isfinite(res.stderr).any():
            ax.fill_between(c, z - res.stderr, z + res.stderr, alpha=0.25, lw=0)
        ax.set_xlabel("a (direction 1)")
        ax.set_ylabel("loss - min")
        ax.set_title(res.model, loc="left", fontsize=10)
        return fig
    fig = fig or plt.figure(figsize=(10, 4.2), layout="constrained")
    a, b = np.meshgrid(c, c, indexing="ij")
    ax = fig.add_subplot(1, 2, 1)
    cs = ax.contourf(b, a, z, levels=20, cmap="viridis")
    ax.contour(b, a, z, levels=20, colors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="loss - min")
    ax.set_xlabel("b (direction 2)")
    ax.set_ylabel("a (direction 1)")
    ax.set_title(res.model, loc="left", fontsize=10)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    ax3.plot_surface(b, a, np.nan_to_num(z, nan=np.nanmax(z)), cmap="viridis", linewidth=0, antialiased=True)
    ax3.set_xlabel("b")
    ax3.set_ylabel("a")
    ax3.set_zlabel("loss - min", labelpad=2)
    ax3.set_box_aspect(None, zoom=0.82)  # room for the z label: constrained layout does not see 3-D labels
    return fig


def spectrum_figure(spectra: Sequence[SpectrumResult], densities: Sequence[DensityResult | None] = ()) -> Figure:
    """`plot_spectrum` of every model, and beside it `plot_density` of the models that have one."""
    panels = 2 if any(d is not None for d in densities) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.5), squeeze=False, layout="constrained")
    plot_spectrum(spectra, axes[0, 0])
    for spec, dens in zip(spectra, densities):
        if dens is not None:
            plot_density(dens, axes[0, 1], label=spec.model)
    return fig


# ----------------------------------------------------------------------------------------------
# Lesion studies and reliability diagrams

from surgeon.evaluation.evaluate import EvaluationResult  # noqa: E402
from surgeon.analysis.lesions import LesionResult  # noqa: E402

__all__ += ["plot_lesions", "plot_reliability"]


def plot_lesions(results: LesionResult | Sequence[LesionResult]) -> Figure:
    """The lesion study against normalised depth, one column per model side by side: the accuracy
    drop 100 (acc_intact - acc_lesioned) in percentage points (top) and the NLL increase
    NLL_lesioned - NLL_intact (bottom) when each block in turn is replaced by the identity. MSA
    blocks are shaded grey and downsampling blocks blue, as in the paper's Fig. 8 / 9; each row
    shares its y axis so that models compare directly. Blocks that could not be removed (they
    change the shape) have no point but keep their shading."""
    results = [results] if isinstance(results, LesionResult) else list(results)
    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.6), squeeze=False, sharey="row", layout="constrained")
    for j, res in enumerate(results):
        blocks = res.blocks()
        staged = [b for b in res.graph.blocks if b.stage is not None]  # skipped downsampling blocks shaded too
        depth = np.array([b.depth for b in blocks])
        spacing = 1 / max(len(res.graph.blocks) - 1, 1)
        series = (("Accuracy drop (%)", [-100 * r.delta["acc"] for r in res.rows]),
                  ("NLL increase", [r.delta["nll"] for r in res.rows]))
        for i, (label, y) in enumerate(series):
            ax = axes[i, j]
            handles = _shade(ax, staged, spacing)
            ax.axhline(0, color="0.55", lw=0.8, zorder=1)
            ax.plot(depth, y, marker="o", ms=3.5, lw=1.2, color=f"C{j}", zorder=2)
            ax.set_xlim(-spacing, 1 + spacing)
            ax.set_ylabel(label if j == 0 else "")
            if handles and i == 0:
                ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)
        m = res.intact.metrics
        axes[0, j].set_title(f"{res.model}: intact acc {100 * m['acc']:.1f}%, NLL {m['nll']:.3f}", loc="left",
                             fontsize=9)
        axes[1, j].set_xlabel("Normalized depth of the removed block")
    return fig


def plot_reliability(evaluations: EvaluationResult | Sequence[EvaluationResult], labels: Sequence[str] | None = None) -> Figure:
    """The paper's reliability diagram, one column per evaluation: per confidence bin b, the
    accuracy acc_b as a bar against the diagonal acc = confidence (perfect calibration), with the
    gap to the bin's mean confidence conf_b hatched (top); the confidence histogram n_b / N below.
    The title gives ECE = sum_b (n_b / N) |acc_b - conf_b| (PAPER.md, "Metrics")."""
    evaluations = [evaluations] if isinstance(evaluations, EvaluationResult) else list(evaluations)
    labels = list(labels) if labels is not None else [""] * len(evaluations)
    if len(labels) != len(evaluations):
        raise SurgeonError(f"{len(labels)} labels for {len(evaluations)} evaluations; give one label each")
    n = len(evaluations)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 4.6), squeeze=False, sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": (3, 1)})
    for j, (ev, label) in enumerate(zip(evaluations, labels)):
        rel = ev.reliability
        edges = np.asarray(rel["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        acc, conf = np.nan_to_num(rel["accuracy"]), np.asarray(rel["confidence"])
        filled = np.isfinite(conf)
        top, bottom = axes[0, j], axes[1, j]
        top.bar(centres, acc, width=width, color=f"C{j}", edgecolor="k", lw=0.6, label="accuracy")
        top.bar(centres[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], color="none",
                edgecolor="C3", hatch="///", lw=0.6, label="gap to confidence")
        top.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("Accuracy" if j == 0 else "")
        name = f"{label}: " if label else ""
        top.set_title(f"{name}ECE {100 * ev.metrics['ece']:.1f}%, acc {100 * ev.metrics['acc']:.1f}%", loc="left",
                      fontsize=9)
        if j == 0:
            top.legend(fontsize=7, loc="upper left", frameon=False)
        count = np.asarray(rel["count"], dtype=float)
        bottom.bar(centres, count / max(count.sum(), 1), width=width, color="0.6", edgecolor="k", lw=0.6)
        bottom.set_xlabel("Confidence")
        bottom.set_ylabel("Fraction" if j == 0 else "")
    return fig


# ----------------------------------------------------------------------------------------------
# Corruption robustness and frequency-band noise (Fig. 2b)

from surgeon.evaluation.robustness import CorruptionResult, FrequencyNoiseResult

__all__ += ["PERCENT_METRICS", "metric_text", "plot_corruptions", "plot_frequency_noise"]

PERCENT_METRICS = ("acc", "top5", "ece", "signed_ece", "acc90", "unc90", "freq90", "iou", "iou90")


def metric_text(metric: str, value: float) -> str:
    """A metric for annotations: fractions in percent (87.3), NLL and Brier as they are (0.412)."""
    if not np.isfinite(value):
        return "-"
    return f"{100 * value:.1f}" if metric in PERCENT_METRICS else f"{value:.3f}"


def plot_corruptions(result: CorruptionResult, metric: str = "acc", ax: Axes | None = None) -> Axes:
    """Heat map of `metric` over corruption (rows) x severity (columns) (PAPER.md, "Corruption
    robustness"), every cell annotated (fractions in percent). A last column holds the mean over
    severities per corruption, a last row the mean over corruptions per severity, their corner the
    mean over all cells; the title gives the clean value. Cells not measured stay blank."""
    grid = result.grid(metric)
    c, s = grid.shape
    table = np.full((c + 1, s + 1), np.nan)
    table[:c, :s] = grid
    table[:c, s] = list(result.per_corruption(metric).values())
    table[c, :s] = list(result.per_severity(metric).values())
    table[c, s] = result.mean(metric)
    ax = ax or plt.subplots(figsize=(1.6 + 0.7 * (s + 1), 1.0 + 0.36 * (c + 1)), layout="constrained")[1]
    image = ax.imshow(table * (100 if metric in PERCENT_METRICS else 1), cmap="viridis", aspect="auto")
    finite = table[np.isfinite(table)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for (i, j), v in np.ndenumerate(table):
        if np.isfinite(v):
            dark = (v - lo) / (hi - lo) < 0.55 if hi > lo else True
            ax.text(j, i, metric_text(metric, v), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black", fontweight="bold" if i == c or j == s else "normal")
    ax.axhline(c - 0.5, color="white", lw=3)
    ax.axvline(s - 0.5, color="white", lw=3)
    ax.set_xticks(range(s + 1), [str(k) for k in result.severities] + ["mean"])
    ax.set_yticks(range(c + 1), result.corruptions + ["mean"], fontsize=8)
    ax.set_xlabel("Severity")
    unit = " (%)" if metric in PERCENT_METRICS else ""
    ax.figure.colorbar(image, ax=ax, label=f"{metric}{unit}", fraction=0.05, pad=0.02)
    ax.set_title(f"{result.model}: {metric}{unit} clean {metric_text(metric, result.clean[metric])}, "
                 f"corrupted mean {metric_text(metric, result.mean(metric))}", loc="left", fontsize=9)
    return ax


def plot_frequency_noise(results: FrequencyNoiseResult | Sequence[FrequencyNoiseResult],
                         ax: Axes | None = None) -> Axes:
    """Fig. 2b: the accuracy change 100 (acc(x + band-limited noise) - acc(x)), in percentage
    points, against the band's centre frequency (in units of pi), one line per model; the paper
    finds ResNets hurt most by high-frequency noise, ViTs by low-frequency noise."""
    results = [results] if isinstance(results, FrequencyNoiseResult) else list(results)
    ax = ax or plt.subplots(figsize=(4.4, 3.3), layout="constrained")[1]
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    for j, r in enumerate(results):
        ax.plot(r.frequencies, 100 * np.asarray(r.change), marker="o", ms=4, lw=1.4, color=f"C{j}",
                label=f"{r.model} (clean {100 * r.clean:.1f}%)")
    freqs = sorted({f for r in results for f in r.frequencies})
    ax.set_xticks(freqs, [f"{f:.1f}\u03c0" for f in freqs], fontsize=8)
    ax.set_xlabel("Frequency")
    ax.set_ylabel("\u0394 Accuracy (%)")
    ax.set_title(f"Frequency-band noise, \u03b5 = {results[0].eps:g}", loc="left", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------
# Build-up searches (Fig. 11)

from collections.abc import Mapping

__all__ += ["plot_buildup"]


def plot_buildup(records: Sequence[Mapping[str, Any]], ax: Axes | None = None) -> Axes:
    """The build-up chart of a search (`surgeon.run_search`, its results.jsonl records), in the
    style of the paper's Fig. 11: the mean validation metric of each candidate in the order tried
    (error bars: the standard deviation over seeds; fractions in percent), accepted candidates
    filled and joined by the line of the best so far, rejected ones hollow, failed ones (diverged)
    as red crosses on the bottom axis. Candidates are labelled by name (MSAs per stage, e.g.
    ``c3x1+c4x2``) and annotated with their value."""
    if not records:
        raise SurgeonError("no candidate to plot: the search has not finished one yet")
    metric = str(records[0]["metric"])
    scale = 100 if metric in PERCENT_METRICS else 1
    ax = ax or plt.subplots(figsize=(max(4.5, 1.5 + 0.8 * len(records)), 3.6), layout="constrained")[1]
    best, line = None, []
    for r in records:
        if r["accepted"]:
            best = scale * r["mean"]
        line.append(np.nan if best is None else best)
    x = np.arange(len(records))
    ax.step(x, line, where="post", color="C0", lw=1.2, alpha=0.5, zorder=1, label="best so far")
    for accepted, style, label in ((True, {"color": "C0", "mfc": "C0"}, "accepted"),
                                   (False, {"color": "C3", "mfc": "white"}, "rejected")):
        chosen = [i for i, r in enumerate(records) if not r["failed"] and bool(r["accepted"]) == accepted]
        if chosen:
            ax.errorbar(chosen, [scale * records[i]["mean"] for i in chosen],
                        yerr=[scale * (records[i]["std"] or 0.0) for i in chosen], fmt="o", ms=7, capsize=3,
                        mec=style["color"], zorder=3, label=label, **style)
    failed = [i for i, r in enumerate(records) if r["failed"]]
    if failed:
        ax.plot(failed, [0.04] * len(failed), "X", color="C3", ms=9, transform=ax.get_xaxis_transform(), zorder=3,
                label="failed")
    for i, r in enumerate(records):
        if not r["failed"]:
            ax.annotate(metric_text(metric, r["mean"]), (i, scale * r["mean"]), textcoords="offset points",
                        xytext=(7, 0), ha="left", va="center", fontsize=7)
    ax.set_xticks(x, [str(r["name"]) for r in records], rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(records) - 0.4)
    ax.margins(y=0.2)
    ax.set_xlabel("Build-up step")
    ax.set_ylabel(f"{metric} (%)" if scale == 100 else metric)
    seeds = len(records[0]["runs"])
    ax.set_title(f"Build-up: validation {metric}, mean of {seeds} seed{'s' if seeds > 1 else ''}", loc="left",
                 fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return ax


# ----------------------------------------------------------------------------------------------
# The rest of the toolbox: attacks, perturbation stability, trajectories (Fig. 1b)

__all__ += ["plot_attack", "plot_trajectories"]


def plot_attack(results: Sequence[Any], ax: Axes | None = None) -> Axes:
    """Accuracy (%) against the attack budget eps (pixels in [0, 1]), one line per model, from
    `surgeon.adversarial_robustness` results; eps = 0 is the clean accuracy."""
    ax = ax or plt.subplots(figsize=(4.4, 3.3), layout="constrained")[1]
    for j, r in enumerate(results):
        eps = [0.0, *r.eps]
        ax.plot(eps, [100 * a for a in (r.clean["acc"], *r.accuracy)], marker="o", ms=4, lw=1.4, color=f"C{j}",
                label=r.model)
    r = results[0]
    what = r.attack.upper() + (f", {r.steps} steps of {r.alpha:.3g}" if r.attack == "pgd" else "")
    ax.set_xlabel("\u03b5 (pixels in [0, 1])")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(f"{what} on {r.samples} images", loc="left", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_trajectories(results: Sequence[Any], labels: Sequence[str] | None = None) -> Figure:
    """Fig. 1b: the optimisation trajectories in weight space as a polar plot, one line per run
    (`surgeon.trajectory`): radius r_t = ||theta_t - theta_0||, angle phi_t between theta_t - theta_0
    and theta_T - theta_0 (degrees), the epochs marked."""
    fig = plt.figure(figsize=(4.6, 4.0), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    for j, r in enumerate(results):
        name = labels[j] if labels else r.run
        ax.plot(np.radians(r.angles), r.radii, marker="o", ms=3, lw=1.4, color=f"C{j}", label=name)
    ax.set_thetamin(0)
    ax.set_thetamax(max(10.0, min(180.0, 1.1 * max((max(r.angles) for r in results), default=0.0))))
    ax.set_xlabel("\u2016\u03b8\u209c \u2212 \u03b8\u2080\u2016", labelpad=18)
    ax.set_title("Optimisation trajectories (angle to the final direction)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    return fig


__all__ += ["plot_stability"]


def plot_stability(results: Sequence[Any], ax: Axes | None = None) -> Axes:
    """Flip probability (%) per perturbation type, one group of bars per type and one bar per model
    (`surgeon.perturbation_stability`); the legend gives each model's mean flip probability."""
    ax = ax or plt.subplots(figsize=(5.2, 3.3), layout="constrained")[1]
    names = list(dict.fromkeys(n for r in results for n in r.perturbations))
    width = 0.8 / max(1, len(results))
    for j, r in enumerate(results):
        values = [100 * r.metrics[n]["flip_probability"] if n in r.metrics else np.nan for n in names]
        ax.bar(np.arange(len(names)) + (j - (len(results) - 1) / 2) * width, values, width, color=f"C{j}",
               label=f"{r.model} (mean {100 * r.mean_flip_probability:.1f}%)")
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Flip probability (%)")
    ax.set_title(f"Perturbation stability, {results[0].samples} images", loc="left", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return ax
