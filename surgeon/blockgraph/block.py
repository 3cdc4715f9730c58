"""`Block`: one block of the graph, as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Block:
    """One block of the graph.

    Attributes:
        address: ``stem``, ``c2.b3`` (block 3 of stage c2, counted from 0) or ``head``.
        path: the block's main module path (``layer2.3``; the attention / MLP module for a
            transformer half; ``conv1+bn1+act1+maxpool`` for a group of layers).
        members: the module paths that make up the block, in call order.
        kind: one of `KINDS`.
        stage: ``c1``..``cN``, or None for the stem and head.
        tap: ``(module path, "in" | "out")``: the module input or output that carries the block's
            output (a transformer's attention half ends where ``norm2`` reads its input).
        in_shape / out_shape: tensor shapes at batch size 1.
        layout: ``NCHW``, ``NHWC``, ``NLC`` (tokens), ``BTNC`` (tokens in windows, NesT) or None
            (no spatial map).
        grid: the (H, W) of the feature map, or None.
        prefix_tokens: class / distillation / register tokens before the patch tokens.
        params: number of parameters.
        flops: floating-point operations for one sample (2 per multiply-accumulate).
        downsamples: True when the block lowers the spatial resolution.
        depth: normalised depth i / (L - 1) over all blocks.
        reads: ``(module path, "in" | "out")``: where a value the block reads besides the previous
            block's output can be tapped (a MobileViT block's fusion reads the block's input;
            CrossViT's cross-attention reads the other stream), or where its input comes from
            when that is not the previous block's output (CrossViT's second stream); None in a
            chain.
    """

    address: str
    path: str
    members: tuple[str, ...]
    kind: str
    stage: str | None
    tap: tuple[str, str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layout: str | None
    grid: tuple[int, int] | None
    prefix_tokens: int
    params: int
    flops: int
    downsamples: bool
    depth: float = 0.0
    reads: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
