"""What the streaming probes cost: time and peak memory of a forward with the Fourier and variance
probes on every block, against a plain forward and against the paper notebooks' way of getting the
same numbers.

For each model (timm, random init, eval mode, its own input size) at one batch:

1. plain: ``model(x)`` under ``torch.no_grad``.
2. probed: ``surgeon.analysis.probes.ProbeSession(model, ("fourier", "variance"), "*")``, timing ``session.step(x)``
   (the block graph is built once beforehand, untimed). Target: time <= 1.10x plain.
3. collect-all (the notebooks' baseline): forward hooks on the same tap modules keep every block
   output; afterwards each is read as (B, C, H, W) and reduced the naive way (``fft2``, log
   amplitude, ``fftshift``, mean over batch and channels, the diagonal from the centre; and
   ``torch.var`` over the spatial positions). Blocks without a feature map are skipped, as the
   probes skip them.

Times: --repeat rounds after one warm-up, each round running the three modes once (on copies of
the model, in rotating order); the ratio is the median over rounds of mode time / plain time. Peak memory is what one forward (plus, for
collect-all, the reductions after it) needs on top of what was allocated before it, measured in a
fresh process per mode, on its second step (the first also faults in the code of every kernel it calls): on CPU the peak resident set (VmHWM reset through /proc/self/clear_refs,
else ru_maxrss) minus the resident set before the forward, with glibc told to mmap every block over
64 KiB (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the resident set at once; on CUDA
``max_memory_allocated`` minus ``memory_allocated``. Target: probed peak close to plain, far below collect-all. The probed and
collect-all results are compared as a check that both compute the same quantities.

    python bench/probe_overhead.py --repeat 5 --threads 2
    python bench/probe_overhead.py --batch-sizes 8,16,64 --modes plain,probed --repeat 7 --threads 2
    python bench/probe_overhead.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

import surgeon

MODES = ("plain", "probed", "collect")
LABELS = {"plain": "plain", "probed": "probed", "collect": "collect-all"}
PROBED = ("fourier", "variance")
Step = Callable[[torch.Tensor], Any]


# ----------------------------------------------------------------------------------------------
# The three ways to run a batch, each a context manager with `step(x)`


class Plain:
    """The model alone, under no_grad."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> Plain:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def step(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.model(x)


def has_map(b: surgeon.blockgraph.Block) -> bool:
    return b.layout is not None and b.grid is not None and min(b.grid) >= 2


def as_nchw(a: torch.Tensor, b: surgeon.blockgraph.Block) -> torch.Tensor:
    """One block output as (B, C, H, W)."""
    if b.layout == "NCHW":
        return a
    if b.layout == "NHWC":
        return a.permute(0, 3, 1, 2)
    if b.layout == "NLC":
        return a[:, b.prefix_tokens:].reshape(a.shape[0], *b.grid, -1).permute(0, 3, 1, 2)
    raise ValueError(f"block {b.address}: layout {b.layout} is not handled by the collect-all baseline")


def naive_fourier_variance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Delta log amplitude on the diagonal and mean feature-map variance, the notebooks' way."""
    h, w = x.shape[-2:]
    logamp = torch.fft.fftshift(torch.fft.fft2(x).abs().add(1e-6).log(), dim=(-2, -1)).mean(dim=(0, 1))
    k = torch.arange((min(h, w) + 1) // 2, device=x.device)
    diag = logamp[h // 2 + k, w // 2 + k]
    return diag - diag[0], torch.var(x, dim=(2, 3)).mean()


class CollectAll:
    """Hooks that keep every block output; the quantities are computed after the forward."""

    def __init__(self, model: nn.Module, blocks: list[surgeon.blockgraph.Block]):
        self.model = model
        self.blocks = [b for b in blocks if has_map(b)]
        self.acts: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> CollectAll:
        for b in self.blocks:
            path, side = b.tap
            mod = self.model.get_submodule(path)
            if side == "out":
                self.handles.append(mod.register_forward_hook(
                    lambda m, args, out, k=b.address: self._keep(k, out[0] if isinstance(out, tuple) else out)))
            else:
                self.handles.append(mod.register_forward_pre_hook(lambda m, args, k=b.address: self._keep(k, args[0])))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _keep(self, address: str, a: torch.Tensor) -> None:
        self.acts[address] = a.detach()

    def step(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.acts.clear()
        with torch.no_grad():
            self.model(x)
            out = {b.address: naive_fourier_variance(as_nchw(self.acts[b.address], b)) for b in self.blocks}
        self.acts.clear()
        return out


def runner(mode: str, model: nn.Module, g: surgeon.blockgraph.BlockGraph) -> Plain | surgeon.analysis.probes.ProbeSession | CollectAll:
    if mode == "plain":
        return Plain(model)
    if mode == "probed":
        return surgeon.analysis.probes.ProbeSession(model, PROBED, "*", block_graph=g)
    return CollectAll(model, g.blocks)


# ----------------------------------------------------------------------------------------------
# Measurements


def setup(name: str, batch: int, device: torch.device) -> tuple[nn.Module, torch.Tensor, surgeon.blockgraph.BlockGraph]:
    torch.manual_seed(0)
    model = timm.create_model(name).eval().to(device)
    g = surgeon.graph(model)
    return model, torch.randn(batch, *g.input_size, device=device), g


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(steps: dict[str, Step], x: torch.Tensor, repeat: int) -> dict[str, list[float]]:
    """Seconds per call of every step, in rounds that run each step once (the order rotating
    from round to round), so that the machine's drift hits all of them alike."""
    for step in steps.values():
        step(x)  # warm-up
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(x.device)
            t = time.perf_counter()
            steps[name](x)
            sync(x.device)
            times[name].append(time.perf_counter() - t)
    return times


def status_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_hwm() -> bool:
    """Reset VmHWM to the current resident set; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 1024


def forward_peak(step: Step, x: torch.Tensor) -> tuple[float, str]:
    """MiB that one `step(x)` needs beyond what was allocated before it, and how it was measured."""
    gc.collect()
    if x.device.type == "cuda":
        sync(x.device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(x)
        sync(x.device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20, "cuda max_memory_allocated"
    before = status_kib("VmRSS")
    if reset_hwm():
        step(x)
        return (status_kib("VmHWM") - before) / 1024, "VmHWM after clear_refs"
    step(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss"


def child(args: argparse.Namespace) -> None:
    """One mode's forward peak in this (fresh) process, printed as JSON."""
    model, x, g = setup(args.models, args.batch_size, torch.device(args.device))
    with runner(args.child, model, g) as r:
        r.step(x)  # a first step faults in the code of each kernel it calls (some MiB of libtorch, once a process)
        mib, method = forward_peak(r.step, x)
    print(json.dumps({"peak_mib": mib, "method": method}))


def peak_in_child(mode: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--models", name, "--batch-size", str(args.batch_size),
           "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    # glibc hands big blocks back to the OS only when they were mmap'd; with every block over 64 KiB
    # mmap'd, the resident set follows the live tensors and its peak is theirs, not the heap's.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def agreement(model: nn.Module, g: surgeon.blockgraph.BlockGraph, x: torch.Tensor, res: surgeon.results.ProbeResult) -> dict[str, Any]:
    """How far the probes are from the collect-all quantities (and that they are finite)."""
    with CollectAll(model, g.blocks) as c:
        naive = c.step(x)
    d_amp = d_var = 0.0
    finite = 0
    for address, (dlog, var) in naive.items():
        probed = res.values[address]
        finite += bool(np.isfinite(probed["fourier"].dlogamp).all())
        d_amp = max(d_amp, float(np.abs(probed["fourier"].dlogamp - dlog.cpu().double().numpy()).max()))
        d_var = max(d_var, abs(probed["variance"] - var.item()) / max(abs(var.item()), 1e-12))
    assert finite, "no probed block has a finite dlogamp"
    return {"blocks": len(naive), "finite_blocks": finite, "max_abs_diff_dlogamp": d_amp,
            "max_rel_diff_variance": d_var}


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    model, x, g = setup(name, args.batch_size, device)
    row: dict[str, Any] = {"model": name, "input": list(x.shape), "time_s": {}, "time_ratio": {}, "peak_mib": {}}
    modes = args.modes.split(",")
    copies = {mode: model if mode == "probed" else copy.deepcopy(model) for mode in modes}  # hooks apart
    with ExitStack() as stack:
        runners = {mode: stack.enter_context(runner(mode, copies[mode], g)) for mode in modes}
        times = interleaved_times({mode: r.step for mode, r in runners.items()}, x, args.repeat)
        probed = runners["probed"].results()
    for mode in modes:
        row["time_s"][mode] = statistics.median(times[mode])
        row["time_ratio"][mode] = statistics.median(t / p for t, p in zip(times[mode], times["plain"]))
    row["check"] = agreement(model, g, x, probed)
    for mode in modes:
        peak = peak_in_child(mode, name, args)
        row["peak_mib"][mode] = peak["peak_mib"]
        row["memory_method"] = peak["method"]
    return row


def table(row: dict[str, Any]) -> str:
    t, m = row["time_s"], row["peak_mib"]
    lines = [f"{row['model']} {'x'.join(map(str, row['input']))}, peak by {row['memory_method']}",
             "| mode | median time s | median ratio per round | peak MiB | peak ratio |", "|---|---|---|---|---|"]
    for mode in row["time_s"]:
        lines.append(f"| {LABELS[mode]} | {t[mode]:.3f} | {row['time_ratio'][mode]:.2f}x | {m[mode]:.1f} | "
                     f"{m[mode] / m['plain']:.2f}x |")
    c = row["check"]
    lines.append(f"probed vs collect-all on {c['blocks']} blocks ({c['finite_blocks']} finite): max |d dlogamp| "
                 f"{c['max_abs_diff_dlogamp']:.1e}, max rel d variance {c['max_rel_diff_variance']:.1e}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,vit_small_patch16_224")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batch-sizes", help="several batch sizes, e.g. 8,16,64 (then a summary table over them)")
    p.add_argument("--modes", default=",".join(MODES), help="modes to time, e.g. plain,probed (plain first)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=Path("bench/out/probe_overhead.json"))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return

    rows = []
    sizes = [int(s) for s in args.batch_sizes.split(",")] if args.batch_sizes else [args.batch_size]
    for name in args.models.split(","):
        for size in sizes:
            args.batch_size = size
            rows.append(measure(name, args))
            print(table(rows[-1]) + "\n", flush=True)
    print("| model | batch | probed time / plain | probed peak / plain |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['input'][0]} | {r['time_ratio']['probed']:.3f}x | "
              f"{r['peak_mib']['probed'] / r['peak_mib']['plain']:.3f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: getattr(args, k) for k in ("batch_size", "repeat", "device", "threads")}
    args.out.write_text(json.dumps({"config": {**config, "torch_threads": torch.get_num_threads()}, "models": rows},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
