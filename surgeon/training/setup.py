"""Setting up a training run: the recipe with its overrides, the model (with the recipe's stochastic
depth), the process group under torchrun, the seeded and sharded data loaders, the optimiser,
mixed precision and the DDP wrapper.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from surgeon.data import datasets as sdata
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.model.runtime import check_labels, display_name, restored_modes
from surgeon.parallel.run import Run
from surgeon.model.sizes import input_size_of
from surgeon.surgery.loading import load_model
from surgeon.surgery.loading import load as load_file
from surgeon.training.checkpoints import _fingerprint
from surgeon.training.recipe import Recipe
from surgeon.training.sampling import SeededItems, ShardedBatches
from surgeon.training.state import _Run

__all__ = ["build_for_training", "default_val_spec"]


def build_for_training(model: str, r: Recipe, num_classes: int | None, **load_kwargs: Any) -> nn.Module:
    """A model from its name or surgeon file, with the recipe's stochastic depth where the
    constructor takes ``drop_path_rate`` (timm); others are built without and warned about."""
    is_file = model.endswith(".safetensors") and Path(model).exists() and not load_kwargs.get("weights")
    if r.drop_path > 0:
        try:
            if is_file:
                return load_file(model, drop_path_rate=r.drop_path)
            return load_model(model, num_classes=num_classes, drop_path_rate=r.drop_path, **load_kwargs)
        except (TypeError, SurgeonError) as exc:
            if "drop_path_rate" not in str(exc):
                raise
            warnings.warn(f"{model} has no stochastic depth (no drop_path_rate argument); training without it",
                          stacklevel=3)
    return load_file(model) if is_file else load_model(model, num_classes=num_classes, **load_kwargs)


def _distributed() -> tuple[int, int, torch.device | None]:
    """(rank, world size, device) under torchrun; (0, 1, None) otherwise. Initialises the process
    group (NCCL on CUDA, gloo on CPU) when torchrun started this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _param_groups(model: nn.Module, r: Recipe) -> list[dict[str, Any]]:
    """[decayed, not decayed (dim <= 1: biases, norms)], or one group with `decay_all`: the same split
    as `timm.optim.param_groups_weight_decay` (tested), kept because timm orders the groups the other
    way, drops empty ones and merges them at weight_decay 0, and optimizer states in checkpoints are
    matched to groups by position."""
    params = [p for p in model.parameters() if p.requires_grad]
    if r.decay_all:
        return [{"params": params, "weight_decay": r.weight_decay}]
    return [{"params": [p for p in params if p.dim() > 1], "weight_decay": r.weight_decay},
            {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]


def _optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, r)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum)
    return torch.optim.AdamW(groups, lr=r.lr)


def _num_outputs(model: nn.Module, input_size: Sequence[int], device: torch.device) -> int:
    with restored_modes(model, "eval"), torch.no_grad():
        return int(logits_of(model(torch.zeros(1, *input_size, device=device))).shape[-1])


def default_val_spec(data: str, val: str | None) -> str | None:
    """The validation data: `val` when given ('none' turns it off), else the test split of a named
    dataset (digits, CIFAR); a folder has no default."""
    if val is not None:
        return None if val.lower() == "none" else val
    return data if data == "digits" or data.split(":")[0] in ("cifar10", "cifar100") else None


def _build(model: nn.Module | str, r: Recipe, train_ds: Dataset, num_classes: int | None, target: Path | None,
           load_kwargs: dict[str, Any]) -> nn.Module:
    """The model to train: built from its name (classes from the data) or the module given."""
    if isinstance(model, str):
        classes = getattr(train_ds, "classes", [])
        is_file = model.endswith(".safetensors")
        net = build_for_training(model, r, num_classes or (len(classes) if classes and not is_file else None),
                                 **load_kwargs)
    else:
        net = model
    if target is not None and not provenance.has_cfg(net):
        raise SurgeonError("out= needs a model surgeon can rebuild: pass its name (or create it with "
                           "surgeon.load_model) instead of a module object")
    return net


def _data(run: _Run, train_ds: Any, val_spec: str | None, workers: int | None, download: bool) -> None:
    """The input size, the seeded and sharded training loader, the validation loader; labels checked
    against the model's outputs."""
    r, net = run.r, run.net
    run.size = input_size_of(net, r.input_size)  # the recipe's, else what the model records, else its default
    classes_out = _num_outputs(net, run.size, run.device)
    check_labels(train_ds, classes_out)
    train_ds.transform = sdata.train_transform(net, input_size=run.size, auto_augment=r.auto_augment,
                                               re_prob=r.re_prob, hflip=r.hflip, padding=r.padding)
    run.items = SeededItems(train_ds, run.seed)
    run.sampler = ShardedBatches(len(run.items), r.batch_size, run.seed, run.rank, run.world)
    n_workers = workers if workers is not None else (min(8, os.cpu_count() or 1) if len(run.items) > 5000 else 0)
    run.loader = DataLoader(run.items, batch_sampler=run.sampler, num_workers=n_workers, collate_fn=sdata._collate,
                            pin_memory=run.device.type == "cuda")
    loading = Run(workers=workers, download=download)
    run.val_loader = sdata.loader(val_spec, net, batch_size=256, input_size=run.size, run=loading) if val_spec else None
    if run.val_loader is not None:
        check_labels(run.val_loader, classes_out)
    run.steps = len(run.sampler)
    run.mix = None
    if r.mixup > 0 or r.cutmix > 0:
        run.mix = sdata.mixer(classes_out, mixup=r.mixup, cutmix=r.cutmix, prob=r.mix_prob,
                              label_smoothing=r.label_smoothing)


def _optimisation(run: _Run) -> None:
    """Loss, optimiser, mixed precision and its grad scaler, the DDP wrapper (under torchrun); the
    fingerprint a checkpoint is matched by. The lr schedule is `lr_at`, set every step."""
    r, net, device = run.r, run.net, run.device
    run.criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if run.mix else r.label_smoothing)
    run.opt = _optimizer(net, r)
    run.amp = r.amp and device.type == "cuda"
    run.amp_dtype = torch.bfloat16 if run.amp and torch.cuda.is_bf16_supported() else torch.float16
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp and run.amp_dtype == torch.float16)
    run.wrapped = net
    if run.world > 1:
        run.wrapped = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    run.fingerprint = _fingerprint(net)
    run.name = display_name(net)
