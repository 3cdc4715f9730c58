"""The paper's build-up rules: `Search`, what a candidate generator works with (the base model,
its block graph, candidates built by surgeon passes), and `buildup`, the AlterNet generator
(docs/architecture.md, "Build-up search")."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

from surgeon.core.errors import SurgeonDeprecationWarning
from collections.abc import Callable, Generator, Mapping
from typing import Any

from torch import nn

from surgeon.data import datasets as sdata
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import BlockGraph, graph
from surgeon.core.jsonio import dumps
from surgeon.model.sizes import input_size_of
from surgeon.surgery.loading import load_model
from surgeon.surgery.alternet import alternate, cifar_stem
from surgeon.surgery.passes import apply_passes
from surgeon.search.jobs import Candidate

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,80}"  # candidate names: they become folder names

Steps = Generator[list[Candidate], list[dict[str, Any]], None]


class Search:
    """What a candidate generator works with.

    Attributes:
        spec: the `SearchSpec`.
        setup: the training every candidate shares (classes from the data, input size resolved).
        base: the base model (random weights), for inspection; candidates never modify it.
        graph: its block graph at the training input size.
        stages: the stages the search may change, in model order (default: those with >= 2
            conv blocks, i.e. room for an MSA).
        best: the record of the best candidate so far (None before the first accept).
    """

    def __init__(self, spec: Any) -> None:  # a `SearchSpec` (whose module imports this one)
        self.spec = spec
        setup = spec.setup
        if setup.num_classes is None:
            classes = getattr(sdata.dataset(setup.data, train=True), "classes", None)
            setup = dataclasses.replace(setup, num_classes=len(classes) if classes else None)
        self.base = load_model(setup.model, num_classes=setup.num_classes, **setup.model_kwargs)
        size = input_size_of(self.base, setup.train.input_size)  # the training recipe's, else what the model records
        if setup.stem:
            self.base = cifar_stem(self.base, input_size=size)
        self.setup = dataclasses.replace(setup, train=dataclasses.replace(setup.train, input_size=size))
        self.input_size = size
        self.graph = graph(self.base, input_size=size)
        self.best: dict[str, Any] | None = None
        self._msa: dict[tuple[tuple[str, int], ...], Candidate] = {}  # msa() by counts: built once
        stages = self.graph.stages
        for key in ("max_msa", "heads"):
            table = getattr(spec, key)
            lacking = [k for k in table if k not in stages] if isinstance(table, dict) else []
            if lacking:
                raise SurgeonError(f"{spec.where('search', key)}: {key} names stage(s) {', '.join(lacking)} that "
                                   f"{setup.model} lacks (its stages: {', '.join(stages)})")
        if spec.stages is None:
            self.stages = tuple(s for s in stages if self.conv_blocks(s) >= 2)
        else:
            lacking = [s for s in spec.stages if s not in stages]
            if lacking:
                raise SurgeonError(f"{spec.where('search', 'stages')}: {setup.model} has no stage "
                                   f"{', '.join(lacking)} (its stages: {', '.join(stages)}; see surgeon inspect)")
            self.stages = tuple(s for s in stages if s in spec.stages)


    @property
    def recipe(self) -> Any:
        """Deprecated: the search spec is `spec` (surgeon 0.1 called it the recipe)."""
        warnings.warn("Search.recipe is renamed Search.spec", SurgeonDeprecationWarning, stacklevel=2)
        return self.spec
    def conv_blocks(self, stage: str) -> int:
        """n: the conv blocks of `stage` in the base model."""
        return sum(b.kind == "conv" for b in self.graph.stages[stage])

    def max_msa(self, stage: str) -> int:
        """The most MSAs `stage` may hold: n // 2 (m <= n / 2), capped by the spec's max_msa."""
        cap = self.spec.max_msa
        cap = cap.get(stage) if isinstance(cap, dict) else cap
        return min(self.conv_blocks(stage) // 2, cap or self.conv_blocks(stage))

    def candidate(self, name: str, edit: Callable[[BlockGraph], nn.Module] | None = None, *,
                  on: Candidate | None = None) -> Candidate:
        """The candidate `name`: the passes of `on` (default: none, the base model), then those
        `edit` applies (it takes the block graph of that model at the input size and returns the
        edited model; registered block names only, so that the candidate can be rebuilt and saved)."""
        if not re.fullmatch(_NAME, name):
            raise SurgeonError(f"candidate name {name!r}: use letters, digits and _ . + = - (it names a folder)")
        passes = [dict(p) for p in on.passes] if on is not None else []
        model = apply_passes(self.base, passes) if passes else self.base
        if edit is not None:
            known = len(provenance.cfg_of(model).passes)
            edited = edit(self.graph if model is self.base else graph(model, input_size=self.input_size))
            added = list(provenance.cfg_of(edited).passes)[known:] if isinstance(edited, nn.Module) else []
            if not added:
                raise SurgeonError(f"candidate {name}: the edit must return the model edited with surgeon passes "
                                   "(alternate, insert, replace, remove)")
            if any(p.get("pass") == "opaque" for p in added):
                raise SurgeonError(f"candidate {name}: edited with a module object or factory, which cannot be rebuilt "
                                   "in a worker or saved; use a registered block name (surgeon.layers.registered())")
            passes, model = passes + added, edited
        msa: dict[str, int] = {}
        blocks = []
        for stage, members in graph(model, input_size=self.input_size).stages.items():
            for b in members:
                if b.kind == "msa":
                    msa[stage] = msa.get(stage, 0) + 1
                    blocks.append(b.address)
        return Candidate(name, tuple(json.loads(dumps(passes))), msa, tuple(blocks))

    def msa(self, counts: Mapping[str, int]) -> Candidate:
        """The base model with `counts` MSAs per stage (`surgeon.alternate` with the spec's heads,
        window, dim_head; stochastic depth: the training recipe's drop_path); ``{}``: the baseline,
        named ``baseline``, else e.g. ``c3x1+c4x2``."""
        counts = {s: int(counts[s]) for s in self.graph.stages if counts.get(s)}
        key = tuple(counts.items())
        if key not in self._msa:
            self._msa[key] = self._alternated(counts)
        return self._msa[key]

    def _alternated(self, counts: dict[str, int]) -> Candidate:
        """`msa` without the cache."""
        if not counts:
            return self.candidate("baseline")
        r = self.spec

        def edit(g: BlockGraph) -> nn.Module:
            try:
                return alternate(g, counts, heads=r.heads, window=r.window, dim_head=r.dim_head,
                                 drop_path=self.setup.train.drop_path)
            except SurgeonError as exc:
                raise SurgeonError(f"{r.where('search')}: {exc}") from None

        return self.candidate("+".join(f"{s}x{m}" for s, m in counts.items()), edit)


def buildup(search: Search) -> Steps:
    """The paper's build-up rules (docs/architecture.md, "Build-up search"): the baseline, then one more MSA at a time
    from the last allowed stage backwards, staying in a stage while its candidates are accepted
    and m + 1 <= min(n / 2, max_msa). Every stage is checked to take an MSA before any training."""
    for stage in search.stages:
        search.msa({stage: 1})  # refuses a stage with n < 2, a window larger than its map, ...
    yield [search.msa({})]
    counts: dict[str, int] = {}
    for stage in reversed(search.stages):
        while counts.get(stage, 0) < search.max_msa(stage):
            trial = {**counts, stage: counts.get(stage, 0) + 1}
            (record,) = yield [search.msa(trial)]
            if not record["accepted"]:
                break
            counts = trial
