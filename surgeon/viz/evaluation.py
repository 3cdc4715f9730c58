"""Figures of evaluations in the paper's style: lesions (Fig. 10), reliability diagrams, corruption
and frequency-noise robustness (Fig. 2b, Fig. 8), build-up searches, attacks, training trajectories
and perturbation stability."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from surgeon.core.errors import SurgeonError
from surgeon.viz.plots import _shade, as_list

if TYPE_CHECKING:  # figures read results by their fields; the analyses sit above this layer
    from surgeon.analysis.lesions import LesionResult
    from surgeon.evaluation.evaluate import EvaluationResult
    from surgeon.evaluation.frequency_noise import FrequencyNoiseResult
    from surgeon.evaluation.robustness import CorruptionResult

__all__ = []

# ----------------------------------------------------------------------------------------------
# Lesion studies and reliability diagrams


__all__ += ["plot_lesions", "plot_reliability"]


def plot_lesions(results: LesionResult | Sequence[LesionResult]) -> Figure:
    """The lesion study against normalised depth, one column per model side by side: the accuracy
    drop 100 (acc_intact - acc_lesioned) in percentage points (top) and the NLL increase
    NLL_lesioned - NLL_intact (bottom) when each block in turn is replaced by the identity. MSA
    blocks are shaded grey and downsampling blocks blue, as in the paper's Fig. 8 / 9; each row
    shares its y axis so that models compare directly. Blocks that could not be removed (they
    change the shape) have no point but keep their shading."""
    results = as_list(results)
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
    evaluations = as_list(evaluations)
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
    results = as_list(results)
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
