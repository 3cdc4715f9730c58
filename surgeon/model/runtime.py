"""The runtime contract every analysis, training run and command keeps, written once.

- The model is left exactly as it was: `restored_modes` puts every module's train/eval flag back
  on exit (also on error or Ctrl-C); `analysis_mode` adds timm's ``fused_attn`` switches and the
  math SDPA backend (exact, twice-differentiable attention).
- One device rule: `model_device` (first parameter, else first buffer, else the CPU).
- One display name: `display_name` (the model name it was built from, else its class name).
- Ctrl-C keeps whole batches: `BatchLoop` runs a step per batch; a batch cut short (error or
  Ctrl-C) is rolled back, and Ctrl-C after at least one whole batch ends the loop with a warning
  and ``interrupted = True`` instead of losing the work.
- Labels are checked before any work: `check_labels` (a dataset's labels against the classes) and
  `check_batch_labels` (one batch's targets against the logits).
- JSON: `surgeon.jsonio` (``null`` for NaN / inf, plain numbers for numpy and torch scalars).
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from surgeon.core.errors import SurgeonError
from surgeon.model.provenance import cfg_of

__all__ = ["restored_modes", "on_meta", "analysis_mode", "model_device", "accumulator_dtype", "display_name", "BatchLoop", "check_labels",
           "check_batch_labels"]

T = TypeVar("T")


@contextmanager
def restored_modes(model: nn.Module, mode: str | None = "eval") -> Iterator[nn.Module]:
    """Inside: the model in ``eval`` (or ``train``) mode, or as it is (``None``); on exit every
    module's own train/eval flag is restored, also on error or KeyboardInterrupt."""
    modes = {m: m.training for m in model.modules()}
    try:
        if mode is not None:
            model.train(mode == "train")
        yield model
    finally:
        for m, flag in modes.items():
            m.training = flag


@contextmanager
def on_meta(model: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer of `model` for a meta tensor of the same shape, in place,
    and put the originals back afterwards, also on failure: a forward inside computes shapes
    only (no arithmetic, nothing copied). The one way surgeon runs a model for shapes (the block
    graph's recorded forward, the shape check of every pass) (torch.func.functional_call leaves modules registered under two
    names on the meta device)."""
    saved = []
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for k, t in store.items():
                if t is not None:
                    saved.append((store, k, t))
                    meta = torch.empty_like(t, device="meta")
                    store[k] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        with _NormsByShape():
            yield
    finally:
        for store, k, t in saved:
            store[k] = t


def _channels_match(channels: int, *tensors: Any) -> bool:
    return all(t is None or (isinstance(t, torch.Tensor) and t.numel() == channels) for t in tensors)


def _batch_norm_ok(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,  # noqa: ANN001
                   *_: Any, **__: Any) -> bool:
    """F.batch_norm's own checks: one statistic per channel (dim 1), and in training more than
    one value per channel."""
    return (x.dim() >= 2 and _channels_match(x.shape[1], running_mean, running_var, weight, bias)
            and (not training or x.numel() > x.shape[1]))


def _layer_norm_ok(x, normalized_shape, weight=None, bias=None, *_: Any, **__: Any) -> bool:  # noqa: ANN001
    """F.layer_norm's own check: the trailing dims equal `normalized_shape`, as do weight and bias."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return (0 < len(shape) <= x.dim() and tuple(x.shape[-len(shape):]) == shape
            and all(t is None or (isinstance(t, torch.Tensor) and tuple(t.shape) == shape) for t in (weight, bias)))


def _group_norm_ok(x, num_groups, weight=None, bias=None, *_: Any, **__: Any) -> bool:  # noqa: ANN001
    """F.group_norm's own checks: channels (dim 1) divisible by the groups, one weight per channel."""
    return (x.dim() >= 2 and isinstance(num_groups, int) and num_groups > 0 and x.shape[1] % num_groups == 0
            and _channels_match(x.shape[1], weight, bias))


_SHAPE_KEEPING = {F.batch_norm: _batch_norm_ok, F.layer_norm: _layer_norm_ok, F.group_norm: _group_norm_ok}


class _NormsByShape(TorchFunctionMode):
    """On meta tensors, a normalisation layer's output is an empty tensor like its input once
    the layer's own shape checks pass (`_SHAPE_KEEPING`), instead of the op's Python
    decomposition (BatchNorm's meta kernel is some 20 prims: six sevenths of a ResNet-50's meta
    forward). Anything else, and a call that fails a check, runs as it is (and raises as it
    would). Normalisations count no FLOPs (`surgeon.model.flops`), so the counts are unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        kwargs = kwargs or {}
        ok = _SHAPE_KEEPING.get(func)
        if ok is not None and args and isinstance(args[0], torch.Tensor) and args[0].is_meta and ok(*args, **kwargs):
            return torch.empty_like(args[0])
        return func(*args, **kwargs)


@contextmanager
def analysis_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, fused attention off (math SDPA backend, timm ``fused_attn`` False); every
    module's flags restored on exit, also on error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = {m: m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    with restored_modes(model, "eval"):
        try:
            for m in fused:
                m.fused_attn = False
            with sdpa_kernel([SDPBackend.MATH]):
                yield
        finally:
            for m, flag in fused.items():
                m.fused_attn = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else its first buffer, else the CPU."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for streaming sums, except where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def display_name(model: nn.Module) -> str:
    """The model's name in results and figures: the name it was built from (`surgeon.load_model`),
    else its class name."""
    return cfg_of(model).spec or type(model).__name__


@dataclass
class BatchLoop:
    """Run `step` on each batch, keeping whole batches when interrupted.

        loop = BatchLoop("metrics cover", limit=batches)
        loop.run(data, step, snapshot=acc.snapshot, restore=acc.restore, advance=advance)
        loop.done, loop.interrupted

    A step that raises (error or Ctrl-C) is rolled back with ``restore(snapshot())`` when given.
    Ctrl-C then ends the loop if at least one batch was done (warning: "interrupted: <what> the
    first N batches", `what` like "metrics cover") and is re-raised otherwise; errors are re-raised. `limit` stops after
    that many steps (the steps counted are those `step` does not refuse by returning False).
    """

    what: str = "results cover"
    limit: int | None = None
    done: int = 0
    interrupted: bool = False

    def run(self, items: Iterable[T], step: Callable[[T], Any], *, snapshot: Callable[[], Any] | None = None,
            restore: Callable[[Any], None] | None = None, advance: Callable[[], None] | None = None) -> BatchLoop:
        if self.limit is not None and self.done >= self.limit:
            return self
        try:
            for item in items:
                state = snapshot() if snapshot is not None else None
                try:
                    counted = step(item)
                except BaseException:
                    if restore is not None:
                        restore(state)
                    raise
                if counted is False:
                    continue
                self.done += 1
                if advance is not None:
                    advance()
                if self.limit is not None and self.done >= self.limit:
                    break  # before drawing another batch from the data
        except KeyboardInterrupt:
            if self.done == 0:
                raise
            self.interrupted = True
            warnings.warn(f"interrupted: {self.what} the first {self.done} batches", stacklevel=3)
        return self


class StepBoundaries:
    """Ctrl-C (SIGINT) and SIGTERM held until the current step ends: inside ``with StepBoundaries()
    as b``, a signal is recorded and `b.check()` (called between steps) raises KeyboardInterrupt.
    So an interrupted loop stops between two steps, never inside one (a forward that already moved
    BatchNorm's running statistics, a half-applied optimiser step), and what it keeps resumes bit
    for bit. Outside the main thread (where signals cannot be caught) it holds nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StepBoundaries:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        self.pending = signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived during the step that just ended."""
        if self.pending is not None:
            raise KeyboardInterrupt(signal.Signals(self.pending).name)

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def model_classes(model: nn.Module) -> int | None:
    """The classifier's output size from timm / torchvision conventions (``num_classes``, else the
    recorded build argument), when the model says; 0 for an encoder without a classifier."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n >= 0:
        return n
    return cfg_of(model).model_args.get("num_classes")


def check_classifier(model: nn.Module, data: Any = None) -> int | None:
    """The one check before a class-based analysis (evaluation, attacks, Hessians, landscapes,
    ensembles): refuse an encoder (``num_classes=0``: its features are no logits) and, when `data`
    declares its classes (every `surgeon.data` dataset does), a model with another class count (its
    labels would not mean the model's classes). Returns the class count (None: the model does not say)."""
    k = model_classes(model)
    if k == 0:
        raise SurgeonError("the model has no classifier (num_classes=0: an encoder, its outputs are features, "
                           "not logits); build it with num_classes=N for class-based analyses")
    names = getattr(getattr(data, "dataset", data), "classes", None) if data is not None else None
    if k is not None and names and len(names) != k:
        raise SurgeonError(f"the model has {k} classes but the data has {len(names)}: its labels would not mean "
                           f"the model's classes; build it with num_classes={len(names)} (a new head) or use "
                           "the data it was trained on")
    return k


def check_labels(data: Any, num_classes: int) -> None:
    """Refuse, before any work, a dataset whose labels cannot index `num_classes` outputs: images
    without labels (-1) or labels >= num_classes. Reads the ``labels`` of a dataset or of a
    loader's dataset when it keeps them (every `surgeon.data` dataset does); other iterables are
    checked batch by batch (`check_batch_labels`, `surgeon.metrics.Metrics`)."""
    labels = getattr(data, "labels", None)
    if labels is None:
        labels = getattr(getattr(data, "dataset", None), "labels", None)
    if labels is None or len(labels) == 0:
        return
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0:
        raise SurgeonError("the data has images without labels (e.g. the built-in samples or a flat folder); "
                           "evaluate on labelled data: digits, cifar10:ROOT, cifar100:ROOT or an ImageFolder tree")
    if hi >= num_classes:
        raise SurgeonError(f"the data has labels up to {hi} but the model has {num_classes} classes; "
                           f"build it with num_classes={hi + 1} or use the matching dataset")


def check_batch_labels(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse class labels the model's output cannot index (one host sync, once per batch)."""
    k = logits.shape[-1]
    if target.dim() == 2 and target.shape[1] != k:
        raise SurgeonError(f"soft targets have {target.shape[1]} classes, the model {k}; pass num_classes=")
    if target.dim() == 1 and int(target.max()) >= k:
        raise SurgeonError(f"label {int(target.max())} is out of range for a model with {k} classes; "
                           f"pass num_classes={int(target.max()) + 1} (or more) or other data")
