"""`BlockGraph`: a model as stem, stages of blocks and head, addressable by `select`, and its
tables (JSON summary, tidy rows)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from surgeon.core.errors import SurgeonError
from surgeon.core.tables import Tabular
from surgeon.blockgraph.block import Block
from surgeon.blockgraph.kinds import KINDS
from surgeon.blockgraph import select as selection


@dataclass
class BlockGraph(Tabular):
    """A model as stem, stages of blocks and head. Build one with `surgeon.graph`."""

    model: nn.Module
    module: nn.Module
    method: str
    blocks: list[Block]
    input_size: tuple[int, int, int]
    fallback_reason: str | None = None
    stages: dict[str, list[Block]] = field(init=False)

    def __post_init__(self) -> None:
        self.stages = {}
        for b in self.blocks:
            if b.stage is not None:
                self.stages.setdefault(b.stage, []).append(b)

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, address: str) -> Block:
        found = self.select(address)
        if not found:
            raise SurgeonError(f"no block matches {address!r}; valid: {self.valid_addresses()}")
        if len(found) != 1:
            raise SurgeonError(f"{address!r} names {len(found)} blocks; give one, e.g. {found[0].address} "
                               "(select() returns several)")
        return found[0]

    def select(self, pattern: str | Sequence[str]) -> list[Block]:
        """Blocks matching `pattern`, in graph order.

        A pattern is a comma-separated union of terms:
        ``*`` (all), ``stem``, ``head``, a stage ``c2``, a block ``c2.b3``, the last block ``c2.b-1``,
        globs ``c*.b-1`` / ``c[23].b*``, a module path ``layer2.3`` (or a prefix ``layer2``, or a glob
        ``layer*.0``), and kind filters ``kind:msa``.

        A filter or glob that matches nothing (``kind:msa`` on a CNN) selects no block: the result
        is ``[]``. A name that does not exist (``c9``, ``layer7``, ``kind:foo``) raises a
        `SurgeonError` listing the valid addresses.
        """
        return selection.select(self.blocks, self.stages, pattern)

    def valid_addresses(self) -> str:
        """A one-line summary of the addresses this graph accepts."""
        return selection.valid_addresses(self.blocks, self.stages)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: blocks, stage summary and provenance."""
        return {
            "model": type(self.model).__name__,
            "method": self.method,
            "fallback_reason": self.fallback_reason,
            "input_size": list(self.input_size),
            "params": sum(p.numel() for p in self.model.parameters()),
            "flops": sum(b.flops for b in self.blocks),
            "stages": {
                s: {
                    "blocks": len(bs),
                    "grid": list(bs[-1].grid) if bs[-1].grid else None,
                    "kinds": {k: sum(b.kind == k for b in bs) for k in KINDS if any(b.kind == k for b in bs)},
                    "params": sum(b.params for b in bs),
                    "flops": sum(b.flops for b in bs),
                }
                for s, bs in self.stages.items()
            },
            "blocks": [b.to_dict() for b in self.blocks],
        }

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: block x quantity (params, FLOPs at `input_size`)."""
        return [{"block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "output": list(b.out_shape[1:]),
                 "quantity": q, "value": v} for b in self.blocks for q, v in (("params", b.params), ("flops", b.flops))]
