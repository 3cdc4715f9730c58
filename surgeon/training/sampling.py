"""Determinism of training: data drawn per sample and sharded per process, fixed CPU numerics.

Every random draw is seeded from (seed, epoch, step) or (seed, epoch, sample index), so a run
interrupted and resumed gives exactly the weights of an uninterrupted one, with any number of
data-loading workers (`SeededItems`). `Recipe.batch_size` is the global batch: under DDP each of the
N processes takes a contiguous 1/N of every global batch (`ShardedBatches`), so N processes see the
batches one process would. CPU kernels reduce in an order that depends on torch's thread count:
`fixed_numerics` fixes it (a search does, per job), and on CUDA turns on deterministic kernels.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from surgeon.core.errors import SurgeonError

__all__ = ["ShardedBatches", "fixed_numerics"]


@contextmanager
def fixed_numerics(threads: int | None = None, deterministic: bool = False) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads and, when `deterministic`, torch's
    deterministic algorithms (``torch.use_deterministic_algorithms``, cuDNN deterministic without
    benchmarking, cuBLAS with a fixed workspace ``CUBLAS_WORKSPACE_CONFIG=:4096:8``); the previous
    settings are restored afterwards, also on error. CPU kernels split their reductions over the
    threads, so a training's numbers depend on the thread count unless it is fixed."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SurgeonError(f"threads = {threads!r}; give an integer >= 1")
    cudnn = torch.backends.cudnn
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic, cudnn.benchmark)
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            cudnn.deterministic, cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        cudnn.deterministic, cudnn.benchmark = before[3], before[4]
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _mix_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class SeededItems(Dataset):
    """A dataset whose item i in epoch e is drawn with python, numpy and torch (CPU) generators
    seeded from (seed, e, i): augmentation independent of workers, processes and resume point."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        s = _mix_seed(self.seed, self.epoch, i)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.random.default_generator.manual_seed(s)
        return self.base[i]


class ShardedBatches(Sampler[list[int]]):
    """Batches of one epoch: a permutation of the n items seeded from (seed, epoch), cut into global
    batches of `batch_size` (the incomplete last one dropped), of which process `rank` of `world`
    takes the contiguous slice [rank b / world, (rank + 1) b / world). Starts at batch `start`."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise SurgeonError(f"batch size {batch_size} does not split over {world} processes; "
                               f"use a multiple of {world}")
        if n < batch_size:
            raise SurgeonError(f"the training data has {n} images, fewer than one batch of {batch_size}; "
                               "lower batch_size= or use more data")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        share = self.batch // self.world
        for b in range(self.start, self.n // self.batch):
            lo = b * self.batch + self.rank * share
            yield order[lo:lo + share]
