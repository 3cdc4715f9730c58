"""`create_feature_extractor`: a model that returns its block outputs as a dict, torchvision's
convention (`torchvision.models.feature_extraction.create_feature_extractor`), on any model the
block graph supports.

    fx = surgeon.create_feature_extractor(model, blocks="c*.b-1")
    feats = fx(images)            # {"c1.b2": tensor, "c2.b3": tensor, ...}, in graph order

Each output is read at its block's tap (a module's input or output, `Block.tap`) by hooks that
live only during the forward, which stops once the last requested output is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError
from surgeon.blockgraph.blockgraph import BlockGraph
from surgeon.blockgraph.build import graph as block_graph
from surgeon.blockgraph.declared import Declared


class _Done(Exception):
    """Raised by the last hook: the rest of the forward is not needed."""


class FeatureExtractor(nn.Module):
    """`model` (shared, not copied; its weights are ``model.*``) returning ``{name: block output}``."""

    def __init__(self, model: nn.Module, taps: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.model = model
        self.taps = taps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name: str, value: Any) -> None:
            if name not in seen:
                seen[name] = value[0] if isinstance(value, tuple) else value
                if len(seen) == len(self.taps):
                    raise _Done

        try:
            for name, (path, side) in self.taps.items():
                mod = self.model.get_submodule(path)
                handles.append(mod.register_forward_hook(lambda m, a, out, n=name: keep(n, out)) if side == "out"
                               else mod.register_forward_pre_hook(lambda m, a, n=name: keep(n, a)))
            self.model(x)
        except _Done:
            pass
        finally:
            for h in handles:
                h.remove()
        return {name: seen[name] for name in self.taps}


def create_feature_extractor(model: nn.Module, blocks: str | Sequence[str] | Mapping[str, str] = "c*.b-1", *,
                             input_size: Sequence[int] | None = None, graph: BlockGraph | None = None,
                             declared: Declared | None = None) -> FeatureExtractor:
    """A module returning a dict of `model`'s block outputs, keyed by block address.

    Args:
        model: any model `surgeon.graph` supports (timm, torchvision, transformers, user-written).
        blocks: a selection (``"c*.b-1"``: the last block of every stage; ``"c2.b0,head"``; a list;
            the syntax of `BlockGraph.select`), or a dict ``{address: output name}`` (torchvision's
            ``return_nodes``).
        input_size: (C, H, W) the graph is built at (default: the model's own).
        graph: a block graph of `model` already built (then `input_size` and `declared` are not used).
        declared: declared blocks (`surgeon.graph(blocks=...)`).
    """
    g = graph if graph is not None else block_graph(model, input_size=input_size, blocks=declared)
    if g.model is not model:
        raise SurgeonError("graph= is the block graph of another model; build it with surgeon.graph(model)")
    if isinstance(blocks, Mapping):
        taps = {name: g[address].tap for address, name in blocks.items()}
        if len(set(blocks.values())) != len(blocks):
            raise SurgeonError(f"output names {list(blocks.values())} repeat; give each block its own name")
    else:
        taps = {b.address: b.tap for b in g.select(blocks)}
    if not taps:
        raise SurgeonError(f"blocks={blocks!r} selects no block; valid: {g.valid_addresses()}")
    return FeatureExtractor(model, taps)
