"""The block graph: any timm / torchvision classifier as an addressable sequence of stages and blocks.

    g = surgeon.graph(model)
    g.blocks            # [Block(address='stem', ...), Block(address='c1.b0', ...), ..., Block('head')]
    g.stages["c2"]      # the blocks of stage c2
    g.select("c*.b-1")  # the last block of every stage
    g.module            # an nn.Module exactly equivalent to `model`, with blocks as FX leaves
    surgeon.graph(model, blocks=["layer1", ...])   # declared blocks, for a model no rule understands
    surgeon.create_feature_extractor(model, "c*.b-1")(x)   # {"c1.b1": tensor, ...}

How blocks are found, and which file owns each step: docs/architecture.md, "Block graph".
"""

from surgeon.blockgraph.block import Block
from surgeon.blockgraph.blockgraph import BlockGraph
from surgeon.blockgraph.build import graph
from surgeon.blockgraph.checks import feature_info_mismatch
from surgeon.blockgraph.features import FeatureExtractor, create_feature_extractor
from surgeon.blockgraph.kinds import KINDS

__all__ = ["Block", "BlockGraph", "graph", "KINDS", "feature_info_mismatch", "FeatureExtractor",
           "create_feature_extractor"]
