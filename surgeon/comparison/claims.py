"""The paper's claims, each checked by one documented rule on the measures of a `ComparisonResult`.

Every rule reads the plain JSON of the measures (``cmp.results[label][measure]``) and the blocks of
each model (``cmp.models``), returns the quantity it compares for each model and a verdict:
``holds``, ``does not hold`` or ``not measurable`` (with the reason). All rules live here; each has a
test on constructed data whose verdict is known (tests/test_compare.py).

Model groups used by the rules (from the block kinds of the block graph):

- *with MSAs*: any block of kind ``msa``; *without MSAs*: none (a CNN);
- *ViT*: MSA blocks and no ``conv`` block (a transformer: MSA and MLP halves).

Block-to-block changes ("what a block does") compare a block's value with the previous probed
block's, only where both have the same spatial grid and the block does not downsample (a change
of resolution changes what the frequency pi and the variance mean).

Claims that read accuracies (noise, lesions) leave out models at chance accuracy (clean accuracy
below 1.5 / classes: untrained), whose changes say nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from surgeon.core.tables import Tabular

__all__ = ["CLAIMS", "Claim", "ClaimResult", "evaluate_claims", "HOLDS", "FAILS", "UNMEASURABLE"]

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable"
CHANCE_FACTOR = 1.5  # clean accuracy below CHANCE_FACTOR / classes: the model is at chance


@dataclass
class ClaimResult(Tabular):
    """One claim checked: its sentence and figure, the rule, the measured quantity per model (None:
    not measured for that model) and the verdict with its reason."""

    id: str
    claim: str
    figure: str
    rule: str
    quantity: str
    values: dict[str, float | None]
    verdict: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "claim", "figure", "rule", "quantity", "values", "verdict",
                                              "reason")}

    def tidy(self) -> list[dict[str, Any]]:
        """One row per model: the claim, the measured quantity's value and the verdict."""
        return [{"claim": self.id, "figure": self.figure, "quantity": self.quantity, "model": label, "value": value,
                 "verdict": self.verdict} for label, value in self.values.items()]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        return plots.plot_rows(self.tidy(), title=self.id)


@dataclass
class Claim:
    """A claim of the paper and its rule: `check(cmp)` -> (values per model, verdict, reason)."""

    id: str
    claim: str
    figure: str
    quantity: str
    measures: tuple[str, ...]
    check: Callable[[Any], tuple[dict[str, float | None], str, str]] = field(repr=False)

    @property
    def rule(self) -> str:
        return " ".join((self.check.__doc__ or "").split())

    def evaluate(self, cmp: Any) -> ClaimResult:
        missing = [m for m in self.measures if m not in cmp.measures]
        if missing:
            return ClaimResult(self.id, self.claim, self.figure, self.rule, self.quantity, {}, UNMEASURABLE,
                               f"the measure {', '.join(missing)} was not run (measures=)")
        values, verdict, reason = self.check(cmp)
        return ClaimResult(self.id, self.claim, self.figure, self.rule, self.quantity, values, verdict, reason)


# ----------------------------------------------------------------------------------------------
# Reading the measures


def _kinds(model: dict[str, Any]) -> set[str]:
    return {b["kind"] for b in model["blocks"]}


def has_msa(model: dict[str, Any]) -> bool:
    return "msa" in _kinds(model)


def is_vit(model: dict[str, Any]) -> bool:
    return has_msa(model) and "conv" not in _kinds(model)


def _measured(cmp: Any, measure: str) -> list[tuple[dict[str, Any], Any]]:
    """(model, its result of `measure`) for the models where it finished."""
    return [(m, cmp.results[m["label"]][measure]) for m in cmp.models if measure in cmp.results.get(m["label"], {})]


def block_changes(probe: dict[str, Any], value: Callable[[dict[str, Any]], float | None],
                  log: bool = False) -> list[tuple[str, float]]:
    """(kind, change) for every probed block after the first: value(block) - value(previous
    block) (or log of their ratio), where both share a grid and the block does not downsample."""
    out = []
    blocks = probe["blocks"]
    for prev, b in zip(blocks, blocks[1:]):
        if b.get("downsamples") or b.get("grid") != prev.get("grid") or not b.get("grid"):
            continue
        v, p = value(b), value(prev)
        if v is None or p is None or not (math.isfinite(v) and math.isfinite(p)):
            continue
        if log:
            if v <= 0 or p <= 0:
                continue
            out.append((b["kind"], math.log(v / p)))
        else:
            out.append((b["kind"], v - p))
    return out


def _high(block: dict[str, Any]) -> float | None:
    f = block.get("fourier")
    return None if not f or not f.get("dlogamp") else f["dlogamp"][-1]


def _variance(block: dict[str, Any]) -> float | None:
    return block.get("variance")


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _at_chance(model: dict[str, Any], accuracy: float | None) -> bool:
    k = model.get("num_classes") or 0
    return accuracy is None or (k > 1 and accuracy < CHANCE_FACTOR / k)


def _compare_groups(values: dict[str, float | None], smaller: list[str], larger: list[str],
                    what: str) -> tuple[str, str]:
    """Verdict of "every model of `smaller` has a smaller value than every model of `larger`"."""
    a = [values[x] for x in smaller if values.get(x) is not None]
    b = [values[x] for x in larger if values.get(x) is not None]
    if not a or not b:
        return UNMEASURABLE, f"needs {what}"
    if max(a) < min(b):
        return HOLDS, ""
    return FAILS, f"largest {max(a):.4g} vs smallest {min(b):.4g}"


# ----------------------------------------------------------------------------------------------
# The rules


def _flat_hessian(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, the median |lambda| of its pooled top-k (largest-magnitude) Hessian eigenvalues
    over the mini-batches. Holds if every model with MSAs has a smaller median than every model
    without MSAs."""
    values = {m["label"]: float(np.median(np.abs(np.asarray(r["lm"]["eigenvalues"], float))))
              for m, r in _measured(cmp, "hessian")}
    msa = [m["label"] for m in cmp.models if has_msa(m)]
    cnn = [m["label"] for m in cmp.models if not has_msa(m)]
    verdict, reason = _compare_groups(values, msa, cnn, "a model with MSAs and one without, both measured")
    return values, verdict, reason


def _flat_landscape(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, the mean rise of the loss over the landscape grid above its centre (the trained
    weights): mean(L(a, b)) - L(0, 0). Holds if every model with MSAs has a smaller rise than
    every model without MSAs."""
    values: dict[str, float | None] = {}
    for m, r in _measured(cmp, "landscape"):
        loss = np.array([[np.nan if v is None else v for v in row] for row in r["loss"]], float)
        c = loss.shape[0] // 2
        centre = loss[(c,) * loss.ndim]
        values[m["label"]] = float(np.nanmean(loss) - centre) if np.isfinite(centre) else None
    msa = [m["label"] for m in cmp.models if has_msa(m)]
    cnn = [m["label"] for m in cmp.models if not has_msa(m)]
    verdict, reason = _compare_groups(values, msa, cnn, "a model with MSAs and one without, both measured")
    return values, verdict, reason


def _negative(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, -lambda_min / lambda_max: the most negative Hessian eigenvalue (which=SA, per
    batch, the minimum over batches) against the largest top-k eigenvalue. Holds if every ViT has
    lambda_min below -1% of lambda_max and a larger ratio than every model without MSAs."""
    values: dict[str, float | None] = {}
    for m, r in _measured(cmp, "hessian"):
        top = float(np.max(r["lm"]["eigenvalues"]))
        low = float(np.min(r["sa"]["eigenvalues"]))
        values[m["label"]] = -low / top if top > 0 else None
    vits = [m["label"] for m in cmp.models if is_vit(m) and values.get(m["label"]) is not None]
    cnn = [m["label"] for m in cmp.models if not has_msa(m)]
    if not vits:
        return values, UNMEASURABLE, "no ViT (MSA blocks and no conv block) with a measured spectrum"
    small = [v for v in vits if values[v] <= 0.01]
    if small:
        return values, FAILS, f"{small[0]} has no negative eigenvalue beyond 1% of its largest"
    verdict, reason = _compare_groups(values, cnn, vits, "a model without MSAs to compare with, measured")
    return values, verdict, reason


def _filters(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, the mean change of Delta log amplitude at pi across its MSA blocks (block
    minus previous block); the conv blocks' mean change is in the reason. Holds if, pooled over
    all models, MSA blocks lower it on average (< 0) and conv blocks raise it (> 0)."""
    values: dict[str, float | None] = {}
    msa, conv = [], []
    for m, r in _measured(cmp, "fourier"):
        ch = block_changes(r, _high)
        mine = [d for k, d in ch if k == "msa"]
        values[m["label"]] = _mean(mine) if mine else _mean([d for k, d in ch if k == "conv"])
        msa += mine
        conv += [d for k, d in ch if k == "conv"]
    if not msa or not conv:
        return values, UNMEASURABLE, "needs MSA blocks and conv blocks that keep their input's grid"
    reason = f"mean change: MSA blocks {np.mean(msa):+.3g}, conv blocks {np.mean(conv):+.3g} (values: MSA mean, else conv)"
    return values, HOLDS if np.mean(msa) < 0 < np.mean(conv) else FAILS, reason


def _variance_rule(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, the mean log ratio var(block) / var(previous block) over its MSA blocks (over its
    conv and MLP blocks when it has none). Holds if, pooled over all models, MSA blocks lower the
    feature-map variance on average (< 0) and conv and MLP blocks raise it (> 0)."""
    values: dict[str, float | None] = {}
    msa, other = [], []
    for m, r in _measured(cmp, "variance"):
        ch = block_changes(r, _variance, log=True)
        mine = [d for k, d in ch if k == "msa"]
        rest = [d for k, d in ch if k in ("conv", "mlp")]
        values[m["label"]] = _mean(mine) if mine else _mean(rest)
        msa += mine
        other += rest
    if not msa or not other:
        return values, UNMEASURABLE, "needs MSA blocks and conv / MLP blocks that keep their input's grid"
    reason = f"mean log ratio: MSA blocks {np.mean(msa):+.3g}, conv/MLP blocks {np.mean(other):+.3g}"
    return values, HOLDS if np.mean(msa) < 0 < np.mean(other) else FAILS, reason


def _noise(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, s = mean accuracy change under noise of the bands f >= 0.5 pi minus that of the
    bands f < 0.5 pi (s < 0: hurt more by high frequencies). Holds if every model without MSAs has
    s < 0 and every ViT s > 0; models at chance accuracy are left out."""
    values: dict[str, float | None] = {}
    chance = []
    for m, r in _measured(cmp, "frequency_noise"):
        if _at_chance(m, r.get("clean")):
            chance.append(m["label"])
            continue
        f = np.asarray(r["frequencies"], float)
        c = np.array([np.nan if v is None else v for v in r["change"]], float)
        hi, lo = c[f >= 0.5], c[f < 0.5]
        values[m["label"]] = float(np.nanmean(hi) - np.nanmean(lo)) if len(hi) and len(lo) else None
    cnn = [m["label"] for m in cmp.models if not has_msa(m) and values.get(m["label"]) is not None]
    vits = [m["label"] for m in cmp.models if is_vit(m) and values.get(m["label"]) is not None]
    if not cnn or not vits:
        why = f" ({', '.join(chance)} at chance accuracy)" if chance else ""
        return values, UNMEASURABLE, f"needs a ViT and a model without MSAs above chance, with bands below and above 0.5 pi{why}"
    ok = all(values[x] < 0 for x in cnn) and all(values[x] > 0 for x in vits)
    return values, HOLDS if ok else FAILS, ""


def _stage_end_msa(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model, the share of its stages ending with an MSA (the stage's last MSA block is
    followed within the stage by MLP blocks only: an AlterNet stage's last block, a transformer
    stage's last MSA-MLP pair) in which removing that MSA raises the NLL more than the median
    NLL increase of removing each other lesioned block of the stage. Holds if that is so in more
    than half of these stages, pooled over the models. Stages of conv blocks only do not count
    (the claim is about MSAs); models at chance accuracy are left out."""
    values: dict[str, float | None] = {}
    wins = total = 0
    chance = []
    for m, r in _measured(cmp, "lesions"):
        if _at_chance(m, r["intact"]["metrics"].get("acc")):
            chance.append(m["label"])
            continue
        nll = {row["address"]: row["delta"]["nll"] for row in r["rows"] if row["delta"].get("nll") is not None}
        mine = []
        for blocks in _stages(m).values():
            end = _end_msa(blocks)
            others = [nll[b["address"]] for b in blocks if b is not end and b["address"] in nll]
            if end is not None and end["address"] in nll and others:
                mine.append(nll[end["address"]] > float(np.median(others)))
        if mine:
            values[m["label"]] = float(np.mean(mine))
            wins, total = wins + sum(mine), total + len(mine)
    if not total:
        why = f" ({', '.join(chance)} at chance accuracy)" if chance else ""
        return values, UNMEASURABLE, f"no stage ending with a removable MSA and another removable block{why}"
    return values, HOLDS if wins > total / 2 else FAILS, f"{wins} of {total} stages"


def _stages(model: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The model's blocks by stage, in block order (stem and head, which have no stage, left out)."""
    stages: dict[str, list[dict[str, Any]]] = {}
    for b in model["blocks"]:
        if b["stage"] is not None:
            stages.setdefault(b["stage"], []).append(b)
    return stages


def _end_msa(blocks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stage's last MSA block if only MLP blocks follow it in the stage, else None."""
    for b in reversed(blocks):
        if b["kind"] == "msa":
            return b
        if b["kind"] != "mlp":
            return None
    return None


def _series(cmp: Any) -> tuple[dict[str, float | None], str, str]:
    """Per model with 2 or more stages, min(a, d): a is the share of its stages (of 2 or more
    probed blocks) whose variance peaks after the stage's first block (the largest value of the
    later blocks exceeds the first block's: it accumulates), d the share of its stage boundaries
    where the next stage's first block has lower variance than this stage's peak (it drops at the
    stage's end, whether at the stage's last block, e.g. an MSA there, or at the next stage's
    downsampling block). Holds if min(a, d) > 1/2 in every such model: variance that only grows
    through the network, or never builds up within a stage, does not hold."""
    values: dict[str, float | None] = {}
    for m, r in _measured(cmp, "variance"):
        stages: dict[str, list[float]] = {}
        for b in r["blocks"]:
            if b.get("stage") is not None and b.get("variance") is not None:
                stages.setdefault(b["stage"], []).append(b["variance"])
        seq = list(stages.values())
        builds = [max(s[1:]) > s[0] for s in seq if len(s) >= 2]
        drops = [b[0] < max(a) for a, b in zip(seq, seq[1:])]
        if builds and drops:
            values[m["label"]] = float(min(np.mean(builds), np.mean(drops)))
    if not values:
        return values, UNMEASURABLE, "no model with two or more probed stages (a ViT has one stage)"
    return values, HOLDS if all(v > 0.5 for v in values.values()) else FAILS, ""


CLAIMS: list[Claim] = [
    Claim("flat-hessian", "MSAs flatten the loss landscape: models with MSAs have smaller Hessian eigenvalue "
          "magnitudes than CNNs.", "Fig. 1c, 4", "median |top-k eigenvalue|", ("hessian",), _flat_hessian),
    Claim("flat-landscape", "MSAs flatten the loss landscape: the loss rises less around the weights of models "
          "with MSAs.", "Fig. 1a", "mean loss rise over the grid", ("landscape",), _flat_landscape),
    Claim("negative-eigenvalues", "ViTs have negative Hessian eigenvalues (non-convex losses) in small-data "
          "regimes, ResNets hardly any.", "Fig. 1c, 4", "-lambda_min / lambda_max", ("hessian",), _negative),
    Claim("low-pass", "MSAs are low-pass filters (they lower high-frequency amplitudes) and Convs high-pass "
          "filters.", "Fig. 2a, 8", "mean change of dlogamp(pi) across MSA (else conv) blocks", ("fourier",),
          _filters),
    Claim("noise-frequency", "Convs are vulnerable to high-frequency noise, MSAs to low-frequency noise.",
          "Fig. 2b", "acc change (f >= 0.5pi) - acc change (f < 0.5pi)", ("frequency_noise",), _noise),
    Claim("variance", "MSAs reduce feature-map variance; Convs and MLPs raise it.", "Fig. 9",
          "mean log variance ratio across MSA (else conv/MLP) blocks", ("variance",), _variance_rule),
    Claim("stage-end-msa", "MSAs at the end of a stage play a key role in prediction: removing such an MSA hurts "
          "more than removing the stage's other blocks.", "Fig. 10", "share of stages ending with an MSA whose lesion "
          "raises NLL above the stage's median", ("lesions",), _stage_end_msa),
    Claim("series-of-models", "A multi-stage network behaves like a series of small models: feature-map "
          "variance accumulates within a stage and drops at its end.", "Fig. 9, 10",
          "min(share of stages that build up, share of boundaries that drop)", ("variance",), _series),
]


def evaluate_claims(cmp: Any, claims: Sequence[Claim] | None = None) -> list[ClaimResult]:
    """Every claim of `claims` (default `CLAIMS`) checked on the comparison `cmp`."""
    return [c.evaluate(cmp) for c in (CLAIMS if claims is None else claims)]
