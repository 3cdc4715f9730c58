"""Figures in the paper's style.

Depth plots follow the paper (Sec. 2, Fig. 8/9): blocks on the x axis in order, downsampling
blocks shaded grey and MSA blocks shaded purple.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: surgeon never needs a screen
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .graph import BlockGraph  # noqa: E402

__all__ = ["KIND_COLORS", "plot_blocks"]

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
