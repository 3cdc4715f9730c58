"""Figures in the paper's style.

Depth plots follow the paper (Fig. 8, Fig. 9): normalised depth on the x axis, MSA blocks shaded
grey and downsampling blocks shaded blue, Conv / MLP blocks left white. Spectra follow Fig. 2a:
Delta log amplitude against frequency 0..pi, one line per block, coloured by depth. The figures of
evaluations (lesions, reliability, robustness, searches, attacks) are in `surgeon.viz.evaluation`.
This layer sits below the analyses: a figure reads a result by its fields, so every result's
``plot()`` can draw itself here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
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
from surgeon.core.numerics import density_on_grid
from surgeon.core.text import format_omega

if TYPE_CHECKING:  # figures read results by their fields; the analyses sit above this layer
    from surgeon.analysis.curvature import DensityResult, SpectrumResult
    from surgeon.analysis.landscapes import LandscapeResult
    from surgeon.analysis.probes import ProbeResult

__all__ = ["as_list", "figure_of", "plot_rows", "KIND_COLORS", "plot_blocks", "plot_spectra", "plot_depth", "probe_figure", "save_figure",
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


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150, overwrite: bool = False) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names; the figure is closed. An
    existing file is refused unless `overwrite` (the policy of every surgeon writer,
    `surgeon.core.files.check_output`)."""
    target = check_output(path, overwrite=overwrite, suffixes=figure_formats())
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


def as_list(results: Any) -> list[Any]:
    """One result or a sequence of them, as a list (figures take either)."""
    return list(results) if isinstance(results, (list, tuple)) else [results]


def figure_of(drawn: Axes | Figure) -> Figure:
    """The Figure of what a figure function drew (functions that take ``ax=`` return the Axes)."""
    return drawn if isinstance(drawn, Figure) else drawn.figure


def plot_rows(rows: Sequence[dict[str, Any]], x: str | None = None, title: str = "") -> Figure:
    """The generic figure of a result's tidy rows: one panel per quantity, its values against the
    column `x` (epoch, batch size, ...) or against the row order when `x` is None. Results with a
    figure of the paper use that instead."""
    quantities = list(dict.fromkeys(r["quantity"] for r in rows if _is_number(r.get("value"))))
    if not quantities:  # an honest empty figure, not an error: e.g. a comparison with nothing measured yet
        fig, ax = plt.subplots(figsize=(3.4, 2.8), layout="constrained")
        ax.text(0.5, 0.5, "no numeric value measured", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xticks=[], yticks=[])
        return fig
    fig, axes = plt.subplots(1, len(quantities), figsize=(3.4 * len(quantities), 2.8), squeeze=False,
                             layout="constrained")
    for ax, q in zip(axes[0], quantities):
        mine = [r for r in rows if r["quantity"] == q and _is_number(r.get("value"))]
        xs = [r[x] for r in mine] if x else list(range(len(mine)))
        ax.plot(xs, [r["value"] for r in mine], "o-", ms=3)
        ax.set(title=q, xlabel=x or "row")
    if title:
        fig.suptitle(title)
    return fig


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
