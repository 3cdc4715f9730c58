"""The Hessian of the training objective as an operator: `objective` (NLL + L2 on one batch),
`selected_parameters` (the analysed parameters of the selected blocks) and `HessianOperator`
(Hessian-vector products on a fixed batch).

The objective on one mini-batch is NLL (hard labels, label smoothing, or the soft targets of
Mixup / CutMix) plus an L2 term over the analysed parameters: ``wd / 2 * ||theta||^2`` (standard,
``l2="standard"``) or the paper's ``wd * sum_p ||theta_p||`` (``l2="paper"``). The batch is fixed
for one eigen-solve. The model is analysed in eval mode (BatchNorm statistics, no dropout or
stochastic depth) with fused attention kernels off (math SDPA, timm's ``fused_attn`` False), and
everything is restored afterwards, also on error: parameters are never written, only read through
``torch.func.functional_call``.

Hessian-vector products: double backward through a gradient graph built once per batch
(``mode="double-backward"``, the default: each product is one backward pass) or torch.func
forward-over-reverse (``mode="forward-over-reverse"``: ``jvp(grad(f))``, no retained graph; it
falls back to double backward, with a warning, where an op lacks a forward-mode derivative).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from surgeon.parallel import distributed
from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.outputs import logits_of
from surgeon.blockgraph import graph
from surgeon.model.runtime import check_batch_labels, check_classifier

__all__ = ["NonFiniteLoss", "HessianOperator", "selected_parameters", "objective"]


L2_TERMS = ("standard", "paper")  # the L2 terms of `objective`
MODES = ("double-backward", "forward-over-reverse")


def objective(logits: torch.Tensor, target: torch.Tensor, params: dict[str, torch.Tensor], *, wd: float = 0.0,
              l2: str = "standard", label_smoothing: float = 0.0) -> torch.Tensor:
    """NLL + L2 on one batch. `target`: class indices (B,) or soft targets (B, K) (Mixup /
    CutMix); L2 over `params`: ``wd / 2 * sum ||p||^2`` (``standard``) or ``wd * sum ||p||``
    (``paper``)."""
    if target.dim() == 2:
        nll = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    else:
        nll = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if not wd:
        return nll
    if l2 == "standard":
        return nll + wd / 2 * sum(p.square().sum() for p in params.values())
    if l2 == "paper":
        return nll + wd * sum(torch.linalg.vector_norm(p) for p in params.values())
    raise SurgeonError(f"unknown l2 {l2!r}; use 'standard' (wd/2 ||theta||^2) or 'paper' (wd sum ||theta_p||)")


def selected_parameters(model: nn.Module, blocks: str | Sequence[str] = "*") -> dict[str, torch.Tensor]:
    """The trainable parameters of the blocks `blocks` selects (all of them for ``*``)."""
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if blocks not in ("*", "all"):
        chosen = graph(model).select(blocks)
        prefixes = tuple(m + "." for b in chosen for m in b.members)
        named = {k: p for k, p in named.items() if k.startswith(prefixes)}
        what = f"blocks {blocks!r}"
    else:
        what = "the model"
    if not named:
        raise SurgeonError(f"{what} has no trainable parameters; select blocks with weights, e.g. blocks=c4.b-1")
    return named


class NonFiniteLoss(SurgeonError):
    """The objective is NaN or infinite on a batch."""


def _shard(batch: Any) -> tuple[Any, float]:
    """This rank's rows of a (images, labels) batch and its weight n_r / N (the batch and 1.0
    outside torchrun); labels are checked on the whole batch first, so every rank agrees."""
    if not distributed.active() or not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        return batch, 1.0
    x, y = batch[0], batch[1]
    if y.dim() == 1 and bool((y < 0).any()):
        _batch(batch, y.device)  # the same refusal on every rank
    rows = distributed.shard_rows(x.shape[0])
    return (x[rows], y[rows]), (rows.stop - rows.start) / x.shape[0]


def _batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise SurgeonError("curvature needs labelled batches (images, labels); e.g. data=digits or an ImageFolder")
    x, y = batch[0], batch[1]
    if y.dim() == 1 and bool((y < 0).any()):
        raise SurgeonError("these images have no labels (label -1), and the loss needs them; use labelled data "
                           "such as data=digits, cifar10:ROOT or an ImageFolder tree")
    return x.to(device), y.to(device)


class HessianOperator:
    """``v -> H v`` for the objective on one fixed batch, over flat vectors of the selected
    parameters (in their order and dtype). Use inside `analysis_mode`.

    Attributes: ``n`` (number of parameters), ``loss`` (the objective's value, a float),
    ``calls`` (products so far), ``mode``.
    """

    def __init__(self, model: nn.Module, batch: Any, params: dict[str, torch.Tensor], *, wd: float = 0.0,
                 l2: str = "standard", label_smoothing: float = 0.0, mode: str = "double-backward"):
        if mode not in MODES:
            raise SurgeonError(f"unknown HVP mode {mode!r}; use {' or '.join(MODES)}")
        self.model, self.mode, self.calls = model, mode, 0
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.n = sum(self.sizes)
        first = next(iter(params.values()))
        self.device, self.dtype = first.device, first.dtype
        batch, self.share = _shard(batch)  # under torchrun: this rank's rows, weight n_r / N
        self.x, self.y = _batch(batch, self.device)
        self.p0 = {k: p.detach() for k, p in params.items()}
        self.rest = {k: t.detach() for k, t in (*model.named_parameters(), *model.named_buffers()) if k not in params}
        self._loss_kwargs = {"wd": wd, "l2": l2, "label_smoothing": label_smoothing}
        check_classifier(model)
        with torch.no_grad():
            check_batch_labels(logits_of(functional_call(model, {**self.rest, **self.p0}, (self.x[:1],))), self.y)
        if mode == "double-backward":
            value = self._gradient_graph()
        else:
            with torch.no_grad():
                value = self._f(self.p0)
            self._check(value)
        self.loss = self._value

    def _gradient_graph(self) -> torch.Tensor:
        """Build the gradient with its graph once; every product is then one backward through it."""
        leaves = {k: p.clone().requires_grad_() for k, p in self.p0.items()}
        with torch.enable_grad():
            value = self._f(leaves)
            self._check(value)
            self._grads = torch.autograd.grad(value, list(leaves.values()), create_graph=True)
        self._leaves = list(leaves.values())
        return value

    def _f(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = logits_of(functional_call(self.model, {**self.rest, **p}, (self.x,)))
        return objective(logits, self.y, p, **self._loss_kwargs)

    def _check(self, value: torch.Tensor) -> None:
        """Refuse a non-finite objective (of the whole batch: every rank decides alike)."""
        self._value = float(distributed.reduce_(value.detach().clone().double(), self.share))
        if not math.isfinite(self._value):
            raise NonFiniteLoss(f"the loss is {self._value} on this batch; check the weights and the data")

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(s) for k, t, s in zip(self.names, v.split(self.sizes), self.shapes)}

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """H v; under torchrun ``sum_r (n_r / N) H_r v`` over the ranks' shards (the whole batch's)."""
        return distributed.reduce_(self._product(v), self.share)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.mode == "double-backward":
            hv = torch.autograd.grad(self._grads, self._leaves, grad_outputs=list(self.unflatten(v).values()),
                                     retain_graph=True)
            return torch.cat([t.reshape(-1) for t in hv])
        try:
            _, hv = jvp(grad(self._f), (self.p0,), (self.unflatten(v),))
        except (NotImplementedError, RuntimeError) as exc:  # an op without a forward-mode derivative
            warnings.warn(f"forward-over-reverse failed ({first_line(exc)}); using double backward", stacklevel=2)
            self.mode = "double-backward"
            self._gradient_graph()
            self.calls -= 1
            return self._product(v)
        return torch.cat([hv[k].reshape(-1) for k in self.names])
