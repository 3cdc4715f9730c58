"""Lesion study: how much a trained model relies on each of its blocks.

The paper's lesion study (Park & Kim 2022, behind its finding that MSAs near the end of a stage
matter most) removes one block of a trained model at a time, makes it the identity, and reports
the drop in predictive performance: blocks whose removal hurts most are the ones the model
depends on.

    res = surgeon.lesion_study(model, surgeon.data.loader("digits", model, input_size=(3, 32, 32)))
    res.intact.metrics["acc"]                    # the unedited model
    res["c3.b1"].metrics["acc"], res["c3.b1"].delta["nll"]
    res.skipped                                  # {"stem": "cannot remove the stem: ...", ...}
    surgeon.plots.plot_lesions(res)

Each lesioned model is a copy made by `surgeon.passes.remove` (a conv block becomes
``nn.Identity``; a transformer half keeps its skip connection and its residual branch returns
zeros), so the model passed in is never changed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.evaluation.evaluate import EvaluationResult, evaluate
from surgeon.core.jsonio import plain
from surgeon.blockgraph import Block, BlockGraph, graph
from surgeon.surgery.passes import remove
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import display_name
from surgeon.core.tables import Tabular

__all__ = ["LesionResult", "LesionRow", "lesion_study"]


@dataclass
class LesionRow:
    """One lesioned block: where it sits, the metrics of the model without it, and for every
    metric m the change ``delta[m] = metrics[m] - intact[m]`` (so ``delta["acc"] < 0`` is
    accuracy lost and ``delta["nll"] > 0`` is NLL gained)."""

    address: str
    path: str
    kind: str
    stage: str | None
    depth: float
    metrics: dict[str, float]
    delta: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "path": self.path, "kind": self.kind, "stage": self.stage,
                "depth": self.depth, "metrics": plain(self.metrics), "delta": plain(self.delta)}


@dataclass
class LesionResult(Tabular):
    """What `lesion_study` measured: the ``intact`` model's `EvaluationResult`, one `LesionRow` per
    lesioned block in graph order, the ``skipped`` blocks of the selection with the reason, and
    ``interrupted`` when Ctrl-C stopped the study (the rows are the blocks finished before)."""

    model: str
    graph: BlockGraph = field(repr=False)
    intact: EvaluationResult
    rows: list[LesionRow]
    skipped: dict[str, str]
    interrupted: bool = False

    def __getitem__(self, address: str) -> LesionRow:
        """The row of the block `address` names (``c2.b-1`` and module paths work too)."""
        key = self.graph[address].address
        for row in self.rows:
            if row.address == key:
                return row
        reason = self.skipped.get(key, "it was not selected")
        raise SurgeonError(f"block {key} has no lesion row: {reason}")

    def blocks(self) -> list[Block]:
        """The graph's `Block` of every row, in row order (for depth plots)."""
        by_address = {b.address: b for b in self.graph.blocks}
        return [by_address[r.address] for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "input_size": list(self.graph.input_size), "intact": self.intact.to_dict(),
                "rows": [r.to_dict() for r in self.rows], "skipped": self.skipped,
                "interrupted": self.interrupted}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x lesioned block (None: the intact model) x metric, with the change."""
        intact = {"model": self.model, "block": None, "path": None, "kind": None, "depth": None}
        rows = [{**intact, "quantity": k, "value": v, "delta": 0.0} for k, v in plain(self.intact.metrics).items()]
        for r in self.rows:
            ids = {"model": self.model, "block": r.address, "path": r.path, "kind": r.kind, "depth": r.depth}
            delta = plain(r.delta)
            rows += [{**ids, "quantity": k, "value": v, "delta": delta.get(k)} for k, v in plain(r.metrics).items()]
        return rows

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.plot_lesions(self)


def lesion_study(model: nn.Module | BlockGraph, data: Iterable[Any], blocks: str = "*", *,
                 batches: int | None = None, input_size: tuple[int, int, int] | None = None,
                 progress: bool = False) -> LesionResult:
    """Evaluate `model`, then the model with each selected block in turn replaced by the identity.

    Every evaluation is `surgeon.evaluate` in eval mode on the same `data` (the same first
    `batches` batches), so each row's metrics (accuracy, NLL, ECE, ...; PAPER.md "Metrics") are
    directly comparable with ``intact``. The block graph is built once; each lesioned model is a
    fresh copy from `surgeon.passes.remove`, evaluated and dropped before the next.

    Args:
        model: a trained classifier, or its `BlockGraph` (not built again); never modified
            (weights, buffers, train/eval flags, hooks).
        data: a re-iterable source of labelled ``(images, labels)`` batches, e.g. a DataLoader.
        blocks: a block selection (`BlockGraph.select`): ``*``, ``c4``, ``kind:msa``, ... The stem,
            the head and blocks that change the feature-map shape cannot become the identity: they
            are listed in ``skipped`` with the reason.
        batches: evaluate on the first `batches` batches only.
        input_size: (C, H, W) to build the graph at; default: the given graph's, else the size
            of the data's images.
        progress: a progress bar over the evaluations.

    Raises:
        SurgeonError: data that is a one-shot iterator, an unknown block selection, or a selection
            in which no block can be lesioned (raised before any evaluation).
    """
    checks.args(batches=batches)
    if isinstance(data, Iterator):
        raise SurgeonError("a lesion study reads the data once per block: pass a re-iterable source "
                           "(a DataLoader or a list of batches), not an iterator")
    g = _graph_of(model, data, input_size)
    selected = g.select(blocks)
    with progress_bar(progress, len(selected) + 1, "lesion study") as advance:
        intact, rows, skipped, interrupted = _lesion_rows(g, selected, data, batches, advance)
    if intact is None:
        reasons = "; ".join(f"{a}: {r}" for a, r in skipped.items())
        raise SurgeonError(f"no block of the selection {blocks!r} can be lesioned ({reasons})")
    return LesionResult(display_name(g.model), g, intact, rows, skipped, interrupted)


def _graph_of(model: nn.Module | BlockGraph, data: Iterable[Any], input_size: tuple[int, int, int] | None) -> BlockGraph:
    """The block graph to lesion: the given one (rebuilt only at another `input_size`), else the
    model's at `input_size` or at the size of the data's images."""
    if isinstance(model, BlockGraph):
        if input_size is not None and tuple(input_size) != model.input_size:
            return graph(model.model, input_size=input_size)
        return model
    if input_size is None:
        first = next((b for b in data if b is not None), None)
        if first is None:
            raise SurgeonError("the data yielded no batch to evaluate; check data= (and subset=)")
        input_size = tuple(first[0].shape[1:])
    return graph(model, input_size=input_size)


def _lesion_rows(g: BlockGraph, selected: list, data: Iterable[Any], batches: int | None,
                 advance) -> tuple[EvaluationResult | None, list[LesionRow], dict[str, str], bool]:
    """The intact evaluation (once some block can be lesioned), one row per lesioned block, the
    blocks skipped with their reason, and whether Ctrl-C ended the study (whole rows kept)."""
    intact: EvaluationResult | None = None
    rows: list[LesionRow] = []
    skipped: dict[str, str] = {}
    try:
        for b in selected:
            try:
                lesioned = remove(g, b.address)
            except SurgeonError as exc:
                skipped[b.address] = str(exc)
                advance()
                continue
            if intact is None:
                intact = evaluate(g.model, data, batches=batches)
                advance()
                if intact.interrupted:
                    raise KeyboardInterrupt
            ev = evaluate(lesioned, data, batches=batches)
            del lesioned
            if ev.interrupted:  # a partial evaluation is no row
                raise KeyboardInterrupt
            rows.append(LesionRow(b.address, b.path, b.kind, b.stage, b.depth, ev.metrics,
                                  {k: v - intact.metrics[k] for k, v in ev.metrics.items()}))
            advance()
    except KeyboardInterrupt:
        if intact is None or intact.interrupted:
            raise
        warnings.warn(f"interrupted: the lesion study covers the first {len(rows)} blocks", stacklevel=3)
        return intact, rows, skipped, True
    return intact, rows, skipped, False
