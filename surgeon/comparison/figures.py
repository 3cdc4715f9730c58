"""The figures of `surgeon compare`'s report, in the paper's style with the models on one axis:
blocks on the x axis with the stages of every model aligned (stage c2 of each model starts at the
same x; `aligned_positions`), alternate stages shaded, one colour per model, MSA blocks marked with
filled squares. `figures` draws them as matplotlib figures, `render` as PNG bytes; the HTML page
around them is `surgeon.comparison.report`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["aligned_positions", "figures", "render", "png_bytes", "FIGURES", "CAPTIONS"]

FIGURES = ("blocks", "fourier", "variance", "lesions", "hessian", "landscape", "frequency_noise")
CAPTIONS = {
    "blocks": "Block graphs side by side, blocks coloured by kind, stages aligned.",
    "fourier": "Delta log amplitude at pi per block (Fig. 8): lower is more low-pass.",
    "variance": "Feature-map variance per block (Fig. 9).",
    "lesions": "NLL increase when each block in turn is removed (Fig. 10).",
    "hessian": "Top-k Hessian eigenvalues per mini-batch, pooled (Fig. 1c, 4).",
    "landscape": "Loss along the first random direction through the weights, the second at 0 (Fig. 1a).",
    "frequency_noise": "Accuracy change under frequency-band noise (Fig. 2b).",
}


# ----------------------------------------------------------------------------------------------
# Aligned block positions


def _group(blocks: list[dict[str, Any]]) -> list[str]:
    """Each block's column group: its stage, ``<pre>`` before the first stage, ``<post>`` after."""
    out, seen = [], False
    for b in blocks:
        if b["stage"] is not None:
            seen = True
            out.append(b["stage"])
        else:
            out.append("<post>" if seen else "<pre>")
    return out


def aligned_positions(models: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[tuple[str, float, float]]]:
    """x position of every block of every model, stages aligned: the groups (pre-stage blocks,
    c1, c2, ..., post-stage blocks) are laid out left to right, each as wide as the model with most
    blocks in it; a model's blocks fill its group from the left. Returns one {address: x} per model
    and the spans (name, x0, x1) of the stages."""
    groups = [_group(m["blocks"]) for m in models]
    order: list[str] = ["<pre>"]
    for gs in groups:
        for g in gs:
            if g not in order and g != "<post>":
                order.append(g)
    order.append("<post>")
    width = {g: max((gs.count(g) for gs in groups), default=0) for g in order}
    start, x = {}, 0
    for g in order:
        start[g], x = x, x + width[g]
    positions = []
    for m, gs in zip(models, groups):
        used: dict[str, int] = {}
        pos = {}
        for b, g in zip(m["blocks"], gs):
            pos[b["address"]] = float(start[g] + used.get(g, 0))
            used[g] = used.get(g, 0) + 1
        positions.append(pos)
    spans = [(g, start[g] - 0.5, start[g] + width[g] - 0.5) for g in order if width[g] and not g.startswith("<")]
    return positions, spans


# ----------------------------------------------------------------------------------------------
# Figures


def _axes_style(ax: Any, spans: list[tuple[str, float, float]], xmax: float) -> None:
    for k, (name, lo, hi) in enumerate(spans):
        if k % 2 == 0:
            ax.axvspan(lo, hi, color="0.92", lw=0, zorder=0)
        ax.text((lo + hi) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.7, xmax + 0.7)
    ax.set_xticks([])
    ax.set_xlabel("block (stages aligned)")


def _colors(n: int) -> list[str]:
    return [f"C{i}" for i in range(n)]


def _blocks_figure(cmp: Any) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from surgeon.viz import KIND_COLORS

    pos, spans = aligned_positions(cmp.models)
    n = len(cmp.models)
    xmax = max((max(p.values()) for p in pos if p), default=1)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * n + 1.3), layout="constrained")
    for i, (m, p) in enumerate(zip(cmp.models, pos)):
        for b in m["blocks"]:
            ax.add_patch(plt.Rectangle((p[b["address"]] - 0.42, n - 1 - i - 0.35), 0.84, 0.7,
                                       color=KIND_COLORS.get(b["kind"], "0.7"), lw=0))
    _axes_style(ax, spans, xmax)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(range(n), [m["label"] for m in reversed(cmp.models)], fontsize=8)
    kinds = [k for k in KIND_COLORS if any(b["kind"] == k for m in cmp.models for b in m["blocks"])]
    ax.legend(handles=[Patch(color=KIND_COLORS[k], label=k) for k in kinds], fontsize=7, ncol=len(kinds),
              loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return fig


def _block_series(cmp: Any, measure: str, value: Any, ylabel: str, log: bool = False) -> Any:
    import matplotlib.pyplot as plt

    pos, spans = aligned_positions(cmp.models)
    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    xmax = max((max(p.values()) for p in pos if p), default=1)
    kinds = {}
    for i, (m, p) in enumerate(zip(cmp.models, pos)):
        r = cmp.results.get(m["label"], {}).get(measure)
        if r is None:
            continue
        pts = [(p[a], v, k) for a, v, k in value(r) if a in p and v is not None and np.isfinite(v)]
        if not pts:
            continue
        x, y, k = zip(*pts)
        ax.plot(x, y, color=f"C{i}", lw=1.3, marker="o", ms=3, label=m["label"])
        msa = [(a, b) for a, b, kind in pts if kind == "msa"]
        if msa:
            ax.scatter(*zip(*msa), marker="s", s=28, color=f"C{i}", edgecolor="k", lw=0.6, zorder=3)
            kinds["msa"] = True
    _axes_style(ax, spans, xmax)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if kinds:
        ax.scatter([], [], marker="s", s=28, color="w", edgecolor="k", lw=0.6, label="MSA block")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


def _probe_values(key: str):
    def read(r: dict[str, Any]) -> list[tuple[str, float | None, str]]:
        out = []
        for b in r["blocks"]:
            v = b.get(key)
            if key == "fourier":
                v = v["dlogamp"][-1] if v and v.get("dlogamp") else None
            out.append((b["address"], v, b["kind"]))
        return out

    return read


def _lesion_values(r: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    return [(row["address"], row["delta"].get("nll"), row["kind"]) for row in r["rows"]]


def _hessian_figure(cmp: Any) -> Any:
    import matplotlib.pyplot as plt

    from surgeon.analysis.curvature import SpectrumResult
    from surgeon.viz import plot_spectrum

    spectra = []
    for m in cmp.models:
        r = cmp.results.get(m["label"], {}).get("hessian")
        if r is not None:
            lm = r["lm"]
            spectra.append(SpectrumResult(m["label"], np.asarray(lm["eigenvalues"], float),
                                          np.asarray(lm["residuals"], float), np.asarray(lm["losses"], float),
                                          lm["which"], lm["hvps"]))
    if not spectra:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    plot_spectrum(spectra, ax)
    return fig


def _landscape_figure(cmp: Any) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    drawn = False
    for i, m in enumerate(cmp.models):
        r = cmp.results.get(m["label"], {}).get("landscape")
        if r is None:
            continue
        loss = np.array([[np.nan if v is None else v for v in row] for row in r["loss"]], float)
        profile = loss[:, loss.shape[1] // 2] if loss.ndim == 2 else loss
        ax.plot(r["coords"], profile - np.nanmin(profile), color=f"C{i}", lw=1.4, marker="o", ms=3,
                label=m["label"])
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step along direction 1 (filter-normalised)")
    ax.set_ylabel("loss - min")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _noise_figure(cmp: Any) -> Any:
    import matplotlib.pyplot as plt

    from surgeon.viz import plot_frequency_noise
    from surgeon.evaluation.frequency_noise import FrequencyNoiseResult

    res = []
    for m in cmp.models:
        r = cmp.results.get(m["label"], {}).get("frequency_noise")
        if r is not None:
            acc = [np.nan if a is None else a for a in r["accuracy"]]
            res.append(FrequencyNoiseResult(m["label"], r["frequencies"], acc, r["clean"], r["eps"], r["width"],
                                            r["samples"]))
    if not res:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    plot_frequency_noise(res, ax)
    return fig


def figures(cmp: Any) -> dict[str, Any]:
    """The report's matplotlib figures by name (`FIGURES` order), for the measures that ran."""
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"
    made = {"blocks": _blocks_figure(cmp)}
    if "fourier" in cmp.measures:
        made["fourier"] = _block_series(cmp, "fourier", _probe_values("fourier"), "\u0394 log amplitude at \u03c0")
    if "variance" in cmp.measures:
        made["variance"] = _block_series(cmp, "variance", _probe_values("variance"), "feature-map variance", log=True)
    if "lesions" in cmp.measures:
        made["lesions"] = _block_series(cmp, "lesions", _lesion_values, "NLL increase when removed")
    for name, fn in (("hessian", _hessian_figure), ("landscape", _landscape_figure),
                     ("frequency_noise", _noise_figure)):
        if name in cmp.measures:
            made[name] = fn(cmp)
    return {k: v for k, v in made.items() if v is not None}


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (110 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def render(cmp: Any) -> dict[str, bytes]:
    """Every figure as PNG bytes."""
    import matplotlib.pyplot as plt

    out = {}
    for name, fig in figures(cmp).items():
        try:
            out[name] = png_bytes(fig)
        finally:
            plt.close(fig)
    return out
