"""One analysis across processes (torchrun; NCCL on GPUs, gloo on CPU): the one owner of rank,
world size, sharding and all-reduces, so the analyses stay single-process code.

    torchrun --nproc-per-node 8 -m surgeon.cli hessian resnet50 --data imagenet:/data --batch-size 4096
    torchrun --nproc-per-node 8 -m surgeon.cli eval resnet50 --data imagenet:/data --json eval.json

Outside torchrun (``WORLD_SIZE`` unset or 1) every function is the identity: rank 0 of 1.

- Hessians (`surgeon.hessian_eigs`, `hessian_trace`, `hessian_density`): every rank holds the
  model and a contiguous shard of the batch (`shard_rows`, sizes differing by at most one); each
  Hessian-vector product is ``sum_r (n_r / N) H_r v`` all-reduced, the Hessian of the whole
  batch's mean objective, so every rank runs the same Lanczos on the same numbers.
- Streams (`surgeon.evaluate`, `surgeon.probe`, the robustness sweeps): rank r takes the batches
  r, r + W, r + 2W, ... (`shard_batches`; a DataLoader's batch sampler is split, so a rank loads
  only its own batches; no batch is padded or repeated), and the on-device accumulators are
  summed once at the end (`all_reduce_sums`). Whole batches keep per-batch quantities (the
  paper's mean of batch-mean NLLs) exact.
- Output: rank 0 prints and writes figures and JSON (`is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from surgeon.core.errors import SurgeonError

__all__ = ["active", "all_reduce_sums", "init", "is_main", "rank", "reduce_", "shard_batches", "shard_rows", "world"]


def init() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1; NCCL when CUDA is there,
    else gloo), once; on CUDA each rank takes the GPU ``LOCAL_RANK``. Returns whether active."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def active() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or no torchrun): the process that prints and writes."""
    return rank() == 0


def shard_rows(n: int) -> slice:
    """This rank's contiguous rows of a batch of `n`: the first ``n % W`` ranks get one more."""
    w, r = world(), rank()
    if n < w:
        raise SurgeonError(f"a batch of {n} cannot be split over {w} processes; give batch_size= >= {w}")
    size, extra = divmod(n, w)
    start = r * size + min(r, extra)
    return slice(start, start + size + (r < extra))


def reduce_(t: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """``sum over ranks of weight_r * t_r``, in place (the identity on one process)."""
    if not active():
        return t
    if weight != 1.0:
        t.mul_(weight)
    device = t.device
    if dist.get_backend() == "nccl" or device.type == "cpu":
        dist.all_reduce(t)
        return t
    host = t.cpu()  # gloo reduces CPU tensors
    dist.all_reduce(host)
    return t.copy_(host)


def _batch_sampler_loader(loader: torch.utils.data.DataLoader, r: int, w: int) -> torch.utils.data.DataLoader:
    """The same loader reading only the batches r, r + w, ... of its batch sampler."""
    return torch.utils.data.DataLoader(
        loader.dataset, batch_sampler=_EveryNth(loader.batch_sampler, r, w), num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
        generator=loader.generator, persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers else None)


class _EveryNth:
    """The batches r, r + w, r + 2w, ... of a batch sampler (no padding, no repeats)."""

    def __init__(self, sampler: Iterable[Any], r: int, w: int) -> None:
        self.sampler, self.r, self.w = sampler, r, w

    def __iter__(self) -> Iterator[Any]:
        for i, b in enumerate(self.sampler):
            if i % self.w == self.r:
                yield b

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return max(0, (n - self.r + self.w - 1) // self.w)


def shard_batches(data: Any) -> Any:
    """This rank's batches of `data`: every W-th from the rank's index. A DataLoader with a batch
    sampler is rebuilt to load only those; a tensor (one batch) is split by rows; any other
    iterable is filtered as it streams. The identity outside torchrun."""
    if not active():
        return data
    r, w = rank(), world()
    if isinstance(data, torch.Tensor):
        return data[shard_rows(data.shape[0])]
    if isinstance(data, torch.utils.data.DataLoader) and data.batch_sampler is not None:
        return _batch_sampler_loader(data, r, w)
    return (b for i, b in enumerate(data) if i % w == r)


def all_reduce_sums(acc: dict[str, torch.Tensor], *, keep: Iterable[str] = (), minimum: Iterable[str] = (),
                    maximum: Iterable[str] = ()) -> None:
    """Sum the accumulators over ranks, in place; `keep` are constants, `minimum` / `maximum`
    reduce by min / max. One collective per tensor (few, small tensors)."""
    if not active():
        return
    keep, lo, hi = set(keep), set(minimum), set(maximum)
    for k, t in acc.items():
        if k in keep:
            continue
        op = dist.ReduceOp.MIN if k in lo else dist.ReduceOp.MAX if k in hi else dist.ReduceOp.SUM
        host = t if t.device.type == "cpu" or dist.get_backend() == "nccl" else t.cpu()
        dist.all_reduce(host, op=op)
        if host is not t:
            t.copy_(host)


def total(n: int | float) -> int | float:
    """``sum over ranks of n`` for a host number (counts of samples, batches)."""
    if not active():
        return n
    t = torch.tensor([float(n)], dtype=torch.float64)
    dist.all_reduce(t)
    return type(n)(t.item())


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (``[obj]`` on one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out
