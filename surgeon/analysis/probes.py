"""Streaming probes: the paper's Fourier analysis (Fig. 2a, Fig. 8), feature-map variance (Fig. 9)
and activation statistics for the blocks of any model, computed while the data streams through.

    res = surgeon.probe(model, loader, probes=("fourier", "variance"), blocks="*")
    res["c2.b-1"]["fourier"].dlogamp    # Delta log amplitude over the diagonal entries, plotted on 0..pi
    res["c2.b-1"]["fourier"].omega      # the true frequency of each entry (times pi)
    res["c2.b-1"]["variance"]           # mean feature-map variance (a float)

A forward hook sits on each selected block only (on the module output, or input, that carries the
block's output: its graph `tap`). Inside the hook the activation is read as spatial maps in its own
layout (NCHW; NHWC for ConvNeXt / Swin; tokens with class / distillation / register tokens dropped
and the patch grid restored; NesT's windows), in chunks of a few MB along the batch, and reduced on
its own device into accumulators allocated once. Nothing is kept and nothing is copied to the host
until the end; per-sample quantities are summed, so N batches give the same result as one batch
of all the data. The model comes back exactly as it was: hooks removed, train/eval flags restored
(it runs in eval mode under no_grad), also on error or KeyboardInterrupt.

The probes themselves (Fourier, variance, statistics, norm: what each computes, and the paper's
conventions) are `surgeon.analysis.reductions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from surgeon.core import checks
from surgeon.parallel import distributed
from surgeon.core.text import format_omega
from surgeon.core.errors import SurgeonError
from surgeon.blockgraph import Block, BlockGraph, graph
from surgeon.blockgraph.fx import tensor_leaves
from surgeon.core.jsonio import dumps
from surgeon.core.progress import progress as progress_bar
from surgeon.model.runtime import BatchLoop, display_name, model_device, restored_modes
from surgeon.core.tables import Tabular
from surgeon.analysis.maps import Geometry
from surgeon.analysis.reductions import Fourier, Probe, Stats, _merge_stats, _resolve


__all__ = ["ProbeResult", "ProbeSession", "probe", "format_omega"]


CHUNK_BYTES = 16 << 20  # an activation is reduced in chunks of at most this many float32 bytes


@dataclass
class Unmeasured:
    """A selected block that probe `probe` could not measure, and why (e.g. "1x1 map: no frequency
    above 0"). Listed in `ProbeResult.unmeasured`, never dropped silently."""

    block: Block
    probe: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        b = self.block
        return {"address": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "depth": b.depth,
                "layout": b.layout, "grid": b.grid, "probe": self.probe, "reason": self.reason}


@dataclass
class ProbeResult(Tabular):
    """Probe values per block address, with the block metadata (kind, depth, ...).

    ``res["c2.b-1"]`` accepts any address that names one block (negative indices, module paths)
    and returns ``{probe name: value}``. `blocks` are the measured blocks; `unmeasured` lists each
    selected block a probe could not measure (1x1 maps, outputs without a map) with the reason.
    """

    model: str
    graph: BlockGraph
    blocks: list[Block]
    values: dict[str, dict[str, Any]]
    batches: int
    samples: int
    interrupted: bool = False
    probes: list[str] = field(default_factory=list)
    unmeasured: list[Unmeasured] = field(default_factory=list)

    def __getitem__(self, address: str) -> dict[str, Any]:
        b = self.graph[address] if address not in self.values else None
        key = address if b is None else b.address
        if key not in self.values:
            why = "; ".join(f"{u.probe}: {u.reason}" for u in self.unmeasured if u.block.address == key)
            if why:
                raise SurgeonError(f"block {key} was not measured ({why}); measured: {', '.join(self.values) or 'none'}")
            raise SurgeonError(f"block {key} was not probed; probed: {', '.join(self.values) or 'none'}")
        return self.values[key]

    def series(self, name: str, value: Callable[[Any], float] = float) -> tuple[list[Block], np.ndarray]:
        """The probed blocks that have probe `name`, and `value(result)` for each."""
        blocks = [b for b in self.blocks if name in self.values[b.address]]
        return blocks, np.array([value(self.values[b.address][name]) for b in blocks], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return v.to_dict() if hasattr(v, "to_dict") else v

        return {
            "model": self.model,
            "input_size": list(self.graph.input_size),
            "batches": self.batches,
            "samples": self.samples,
            "interrupted": self.interrupted,
            "probes": self.probes,
            "blocks": [
                {"address": b.address, "path": b.path, "kind": b.kind, "stage": b.stage, "depth": b.depth,
                 "downsamples": b.downsamples, "layout": b.layout, "grid": b.grid,
                 **{k: plain(v) for k, v in self.values[b.address].items()}}
                for b in self.blocks
            ],
            "unmeasured": [u.to_dict() for u in self.unmeasured],
        }

    def to_json(self, **kwargs: Any) -> str:
        return dumps(self.to_dict(), **kwargs)

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: model x block x probe quantity (x frequency for the Fourier probe: `frequency`
        where it is plotted, `omega` its true frequency), then one row per block a probe could not
        measure (quantity "not measured", no value, its `reason`)."""
        rows = []
        for b in self.blocks:
            ids = {"model": self.model, "block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage,
                   "depth": b.depth}
            for name, v in self.values[b.address].items():
                sub = v.tidy() if hasattr(v, "tidy") else [{"quantity": name, "value": v}]
                rows += [{**ids, "probe": name, **r} for r in sub]
        for u in self.unmeasured:  # listed, with the reason, never dropped
            b = u.block
            rows.append({"model": self.model, "block": b.address, "path": b.path, "kind": b.kind, "stage": b.stage,
                         "depth": b.depth, "probe": u.probe, "quantity": "not measured", "value": None,
                         "reason": u.reason})
        return rows

    def unmeasured_note(self) -> str | None:
        """One line naming the blocks a probe could not measure and why, or None."""
        if not self.unmeasured:
            return None
        groups: dict[tuple[str, str], list[str]] = {}
        for u in self.unmeasured:
            groups.setdefault((u.probe, u.reason), []).append(u.block.address)
        parts = [f"{probe} not measured on {', '.join(addrs)} ({reason})" for (probe, reason), addrs in groups.items()]
        return f"{self.model}: " + "; ".join(parts)

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon.viz import plots

        measured = self.probes or list(dict.fromkeys(k for v in self.values.values() for k in v))
        return plots.probe_figure([self], next((p for p in ("fourier", "variance") if p in measured), measured[0]))


class _Tap:
    """The probes of one block, fed by one hook."""

    def __init__(self, block: Block, probes: list[Probe], device: torch.device):
        self.block = block
        self.geom = Geometry(block, device)
        self.reasons = {p.name: r for p in probes if (r := p.unmeasurable(self.geom)) is not None}
        usable = [p for p in probes if p.name not in self.reasons]
        usable.sort(key=lambda p: not isinstance(p, Fourier))  # its sums serve the others
        self.probes = [p.bind(self.geom, device) for p in usable]

    def consume(self, value: Any) -> None:
        x = value if isinstance(value, torch.Tensor) else tensor_leaves(value)[0]
        maps = self.geom.maps(x)
        rows = max(1, CHUNK_BYTES // max(1, 4 * maps[0].numel()))
        for chunk in maps.split(rows):
            if chunk.dtype not in (torch.float32, torch.float64):
                chunk = chunk.float()
            shared: dict[str, torch.Tensor] = {}
            for p in self.probes:
                p.update(chunk, shared)

    def hook_output(self, module: nn.Module, args: Any, output: Any) -> None:
        self.consume(output)

    def hook_input(self, module: nn.Module, args: Any) -> None:
        self.consume(args)


def _is_nnsight(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "nnsight"


def _unwrap(model: Any) -> nn.Module:
    """The torch module inside an ``nnsight.NNsight`` wrapper (`_module`; `_model` before 0.5)."""
    if not _is_nnsight(model):
        return model
    for attr in ("_module", "_model"):
        try:
            return getattr(model, attr)
        except AttributeError:
            continue
    raise SurgeonError("cannot find the module inside this nnsight wrapper; pass the model itself")


@contextmanager
def _class_forwards(model: nn.Module) -> Iterator[None]:
    """Hide the `forward` instance attributes nnsight puts on every module (they trace badly),
    so the block graph is built from the class forwards; put them back afterwards."""
    hidden = {m: m.__dict__.pop("forward") for m in model.modules()
              if _is_nnsight(m.__dict__.get("forward"))}
    try:
        yield
    finally:
        for m, f in hidden.items():
            m.__dict__["forward"] = f


class ProbeSession:
    """Hooks for `probes` on the `blocks` of `model`, as a context manager.

        with ProbeSession(model, ("fourier", "variance"), "c*.b-1") as s:
            for x, _ in loader:
                s.step(x)
        res = s.results()

    On entry the model is put in eval mode with hooks on the selected blocks; on exit (normal,
    error or KeyboardInterrupt) the hooks are removed and every module's train/eval flag is
    restored. `step` runs one batch under no_grad and commits it; a batch cut short by an
    exception is rolled back, so results always cover whole batches. `forward` replaces the
    model call (e.g. a `torch.compile`d model, compiled after entering so the hooks are in it).

    `model` may also be an ``nnsight.NNsight`` wrapper: the probes then read the block outputs
    through its trace (``envoy.output`` / ``envoy.input``) instead of hooks of their own.
    """

    def __init__(self, model: nn.Module, probes: str | Probe | Iterable[str | Probe] = ("fourier", "variance"),
                 blocks: str | Sequence[str] = "*", *, input_size: Sequence[int] | None = None,
                 block_graph: BlockGraph | None = None):
        self.nnsight = model if _is_nnsight(model) else None
        self.model = _unwrap(model)
        self.probe_specs = _resolve(probes)
        with _class_forwards(self.model):
            self.graph = block_graph or graph(self.model, input_size=input_size)
        self.blocks = self.graph.select(blocks)
        self.device = model_device(self.model)
        taps = [_Tap(b, self.probe_specs, self.device) for b in self.blocks]
        self.taps = [t for t in taps if t.probes]
        self.unmeasured = [Unmeasured(t.block, name, reason) for t in taps for name, reason in t.reasons.items()]
        if not self.taps:
            raise SurgeonError(f"no selected block has a feature map for {', '.join(p.name for p in self.probe_specs)}; "
                               f"select blocks with spatial outputs (e.g. blocks='c*') or use the stats probe")
        self.forward: Callable[[torch.Tensor], Any] = self.model
        self.batches = self.samples = 0
        self._handles: list[Any] = []
        self._modes = contextlib.ExitStack()

    def __enter__(self) -> ProbeSession:
        self._modes.enter_context(restored_modes(self.model, "eval"))
        try:
            if self.nnsight is None:
                for t in self.taps:
                    path, side = t.block.tap
                    mod = self.model.get_submodule(path)
                    self._handles.append(mod.register_forward_hook(t.hook_output) if side == "out"
                                         else mod.register_forward_pre_hook(t.hook_input))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._modes.close()

    def _snapshots(self) -> list[list[tuple[int, dict[str, torch.Tensor]]]]:
        return [[p.snapshot() for p in t.probes] for t in self.taps]

    def step(self, x: torch.Tensor) -> None:
        """Run one batch through the model (or its nnsight trace) and commit its contributions."""
        snap = self._snapshots()
        x = x.to(self.device, non_blocking=True)
        try:
            with torch.no_grad():
                if self.nnsight is not None:
                    self._trace(x)
                else:
                    self.forward(x)
        except BaseException:
            for t, tsnap in zip(self.taps, snap):
                for p, s in zip(t.probes, tsnap):
                    p.restore(s)
            raise
        self.batches += 1
        self.samples += x.shape[0]

    def _trace(self, x: torch.Tensor) -> None:
        with self.nnsight.trace(x):
            for t in self.taps:  # graph order is call order, as nnsight requires
                path, side = t.block.tap
                envoy = self.nnsight
                for part in filter(None, path.split(".")):
                    envoy = getattr(envoy, part)
                t.consume(envoy.output if side == "out" else envoy.input)

    def results(self, interrupted: bool = False) -> ProbeResult:
        values = {t.block.address: {p.name: p.result() for p in t.probes} for t in self.taps}
        return ProbeResult(display_name(self.model), self.graph, [t.block for t in self.taps], values, self.batches, self.samples,
                            interrupted, [p.name for p in self.probe_specs], self.unmeasured)


def _images(batch: Any) -> torch.Tensor | None:
    if batch is None or isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise SurgeonError(f"data must yield image tensors or (images, labels) batches, not {type(batch).__name__}")


def _first(data: Iterable[Any]) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    it = (x for x in map(_images, data) if x is not None)
    try:
        x0 = next(it)
    except StopIteration:
        raise SurgeonError("the data yielded no images; check data=") from None
    if x0.dim() != 4:
        raise SurgeonError(f"images must be batches (B, C, H, W), got shape {tuple(x0.shape)}")

    def chain() -> Iterator[torch.Tensor]:
        yield x0
        yield from it

    return x0, chain()


def probe(model: nn.Module, data: Iterable[Any] | torch.Tensor,
          probes: str | Probe | Iterable[str | Probe] = ("fourier", "variance"), blocks: str | Sequence[str] = "*",
          *, batches: int | None = None, compile: bool = False, progress: bool = False) -> ProbeResult:
    """Run `data` through `model` and reduce every selected block's output with `probes`.

    Args:
        model: any classifier (or an ``nnsight.NNsight`` wrapper of one); left exactly as it was.
        data: a batch tensor (B, C, H, W), or an iterable of them or of ``(images, labels)``.
        probes: names from `PROBES` (``fourier``, ``variance``, ``stats``) or configured probes
            such as ``Fourier(full=True)``.
        blocks: a block selection (see `BlockGraph.select`); blocks without a feature map get
            only the probes that need none.
        batches: stop after this many batches.
        compile: run the model through ``torch.compile`` with the probes inside.
        progress: show a progress bar (rich).

    Returns:
        `ProbeResult`; if interrupted (Ctrl-C), the results of the whole batches done so far,
        with ``interrupted=True`` and a warning.
    """
    checks.args(batches=batches)
    if batches is not None and batches < 1:
        raise SurgeonError(f"batches={batches} must be at least 1")
    stream = [data] if isinstance(data, torch.Tensor) else data
    if distributed.active():  # under torchrun: this rank's rows of a tensor, its batches of a stream
        stream = [distributed.shard_batches(data)] if isinstance(data, torch.Tensor) else distributed.shard_batches(data)
        if batches is not None:
            batches = -(-(batches - distributed.rank()) // distributed.world())
            if batches < 1:
                raise SurgeonError(f"batches= below the {distributed.world()} processes; give one batch per process at least")
    x0, xs = _first(stream)
    session = ProbeSession(model, probes, blocks, input_size=tuple(x0.shape[1:]))
    total = batches if batches is not None else (len(stream) if hasattr(stream, "__len__") else None)
    loop = BatchLoop("results cover", limit=batches)
    with session, progress_bar(progress, total, "probing") as advance:
        if compile:
            session.forward = torch.compile(session.model)
        loop.run(xs, session.step, advance=advance)  # step rolls a failed batch back itself
    if distributed.active():
        _all_reduce(session)
    return session.results(loop.interrupted)


def _all_reduce(session: ProbeSession) -> None:
    """Under torchrun: every probe's accumulators summed over the ranks once (the stats probe's
    moments merged by Chan et al.'s formula), and the batch / sample counts."""
    for t in session.taps:
        for p in t.probes:
            if isinstance(p, Stats):
                _merge_stats(p)
            else:
                distributed.all_reduce_sums(p.acc)
                p.count = int(distributed.total(p.count))
    session.batches = int(distributed.total(session.batches))
    session.samples = int(distributed.total(session.samples))
