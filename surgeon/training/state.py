"""The state of one training run (`_Run`): what it was set up with and where it stands, shared by
the set-up (`surgeon.training.setup`), the checkpoints (`surgeon.training.checkpoints`) and the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from surgeon.training.recipe import Recipe
from surgeon.training.sampling import SeededItems, ShardedBatches


def _fresh_sums() -> dict[str, float]:
    """An epoch's running sums: loss x images, correct predictions, images, seconds."""
    return {"loss": 0.0, "correct": 0.0, "n": 0.0, "seconds": 0.0}


@dataclass(eq=False)
class _Run:
    """One training run's state, shared by the steps of `train`: what it was set up with (recipe,
    model, data, optimiser; fields set by `_data` and `_optimisation`) and where it stands (the
    next epoch, the finished steps of it, their running sums, the history of finished epochs)."""

    r: Recipe
    net: nn.Module  # the model, unwrapped
    device: torch.device
    seed: int
    rank: int
    world: int
    target: Path | None  # the output surgeon file
    run_dir: Path | None
    snapshots: int
    size: tuple[int, ...] = field(init=False)  # the training input size (C, H, W)
    items: SeededItems = field(init=False)
    sampler: ShardedBatches = field(init=False)
    loader: DataLoader = field(init=False)
    val_loader: DataLoader | None = field(init=False)
    steps: int = field(init=False)  # steps per epoch
    mix: Any = field(init=False)
    criterion: nn.Module = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    amp: bool = field(init=False)
    amp_dtype: torch.dtype = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    wrapped: nn.Module = field(init=False)  # what the forward pass runs: `net`, or its DDP wrapper
    fingerprint: str = field(init=False)
    epoch: int = 0
    step: int = 0
    partial: dict[str, float] = field(default_factory=_fresh_sums)
    history: list[dict[str, Any]] = field(default_factory=list)
    saved: int | None = None  # the epoch of the checkpoint on disk
    writer: Any = None  # TensorBoard
    name: str = ""

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None
