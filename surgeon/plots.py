"""Figures in the paper's style.

Depth plots follow the paper (Fig. 8, Fig. 9): normalised depth on the x axis, MSA blocks shaded
grey and downsampling blocks shaded blue, Conv / MLP blocks left white. Spectra follow Fig. 2a:
Delta log amplitude against frequency 0..pi, one line per block, coloured by depth.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: surgeon never needs a screen
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .errors import SurgeonError  # noqa: E402
from .graph import Block, BlockGraph  # noqa: E402
from .io import atomic_path, check_output  # noqa: E402
from .probes import ProbeResults  # noqa: E402

__all__ = ["KIND_COLORS", "plot_blocks", "plot_spectra", "plot_depth", "probe_figure", "save_figure",
           "figure_formats"]

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


SHADES = {"msa": ("0.85", "MSA"), "downsample": ("#cfe2f3", "downsampling")}  # the paper's Fig. 8 / 9
_DEPTH_COLORMAP = "plasma"


def _shade(ax: Axes, blocks: Sequence[Block], spacing: float) -> list[Patch]:
    """Shade MSA and downsampling blocks over their share of the depth axis; legend handles."""
    seen = {}
    for b in blocks:
        kind = "downsample" if b.downsamples and b.kind != "msa" else b.kind
        if kind in SHADES:
            color, label = SHADES[kind]
            ax.axvspan(b.depth - spacing / 2, b.depth + spacing / 2, color=color, lw=0, zorder=0)
            seen[kind] = Patch(color=color, label=label)
    return list(seen.values())


def plot_spectra(res: ProbeResults, ax: Axes | None = None, colorbar: bool = True) -> Axes:
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
    ax.set_xlabel("Frequency")
    ax.set_ylabel("\u0394 Log amplitude")
    ax.set_title(res.model, loc="left", fontsize=10)
    if colorbar:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        ax.figure.colorbar(sm, ax=ax, label="Normalized depth", ticks=[0, 0.5, 1], fraction=0.05, pad=0.02)
    return ax


_DEPTH_QUANTITIES = {
    "fourier": ("\u0394 Log amplitude at \u03c0", lambda r: r.high),
    "variance": ("Feature map variance", float),
    "stats": ("Std of activations", lambda r: r.std),
}


def plot_depth(res: ProbeResults, probe: str = "fourier", ax: Axes | None = None, color: str = "C0") -> Axes:
    """Fig. 8 (``fourier``: Delta log amplitude at pi) or Fig. 9 (``variance``) against normalised
    depth, MSA and downsampling blocks shaded; ``stats`` plots the activations' std."""
    label, value = _DEPTH_QUANTITIES[probe]
    ax = ax or plt.subplots(figsize=(4, 3.2))[1]
    blocks, y = res.series(probe, value)
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


def probe_figure(results: Sequence[ProbeResults], probe: str) -> Figure:
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
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:].lower(), dpi=dpi)
    finally:
        plt.close(fig)
    return target
