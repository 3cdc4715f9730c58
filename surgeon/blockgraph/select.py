"""The address and selection syntax: ``stem``, ``c2.b3``, ``c*.b-1``, module paths, ``kind:msa``,
and the one-line summary of valid addresses that errors show."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from surgeon.core.errors import SurgeonError
from surgeon.blockgraph.block import Block
from surgeon.blockgraph.kinds import KINDS


def select(blocks: list[Block], stages: dict[str, list[Block]], pattern: str | Sequence[str]) -> list[Block]:
    """Blocks matching `pattern`, in graph order (the syntax: `BlockGraph.select`)."""
    terms = [pattern] if isinstance(pattern, str) else list(pattern)
    terms = [t.strip() for term in terms for t in term.split(",") if t.strip()]
    if not terms:
        raise SurgeonError(f"empty block selection; valid: {valid_addresses(blocks, stages)}")
    chosen: set[int] = set()
    for term in terms:
        hits = _select_term(blocks, stages, term)
        if not hits and not (term.startswith("kind:") or any(ch in term for ch in "*?[")):
            raise SurgeonError(f"unknown block {term!r}; valid: {valid_addresses(blocks, stages)}")
        chosen.update(id(b) for b in hits)
    return [b for b in blocks if id(b) in chosen]


def _select_term(blocks: list[Block], stages: dict[str, list[Block]], term: str) -> list[Block]:
    if term in ("*", "all"):
        return list(blocks)
    if term.startswith("kind:"):
        kind = term[5:]
        if kind not in KINDS:
            raise SurgeonError(f"unknown kind {kind!r} in {term!r}; kinds: {', '.join(KINDS)}")
        return [b for b in blocks if b.kind == kind]
    m = re.fullmatch(r"([A-Za-z0-9_*?\[\]]+?)(?:\.b(-?\d+|\*))?", term)
    if m and (m.group(1) in ("stem", "head") and m.group(2) is None):
        return [b for b in blocks if b.address == term]
    if m and re.fullmatch(r"c[0-9*?\[\]]+", m.group(1)):
        names = [s for s in stages if fnmatch.fnmatchcase(s, m.group(1))]
        out: list[Block] = []
        for s in names:
            stage = stages[s]
            if m.group(2) in (None, "*"):
                out += stage
            else:
                i = int(m.group(2))
                if not -len(stage) <= i < len(stage):
                    raise SurgeonError(
                        f"{s} has {len(stage)} blocks, so {s}.b{i} does not exist; "
                        f"use {s}.b0..{s}.b{len(stage) - 1} or {s}.b-1 for the last"
                    )
                out.append(stage[i])
        if names or not any(ch in m.group(1) for ch in "*?["):
            return out
    # module paths: exact member, prefix, or glob
    return [
        b for b in blocks
        if term == b.path
        or any(p == term or p.startswith(term + ".") or term.startswith(p + ".") or fnmatch.fnmatchcase(p, term)
               for p in b.members)
    ]


def valid_addresses(blocks: list[Block], stages: dict[str, list[Block]]) -> str:
    """A one-line summary of the addresses a graph accepts."""
    parts = []
    for b in blocks:
        if b.stage is None:
            parts.append(b.address)
        elif b is stages[b.stage][0]:
            n = len(stages[b.stage])
            parts.append(f"{b.stage}.b0" + (f"..b{n - 1}" if n > 1 else ""))
    return ", ".join(parts) + f"; module paths like {blocks[min(1, len(blocks) - 1)].members[0]}; kind:{'|'.join(KINDS)}"
