"""Cost of the headline job, measured against its baseline in one run.

1. Cold wall time (fresh Python process each time, imports included) of
       surgeon alternate resnet50 --stages c2,c3 --out alternet.safetensors
   against the baseline: ``timm.create_model('resnet50')`` plus a plain safetensors save of it.
   Target: <= 1.10x (issue #22).
2. Forward+backward throughput (images/s) of the produced AlterNet relative to the base
   ResNet-50 at the same input, with the time per block kind that explains the difference.

    python bench/alternate_speed.py --repeat 5
    python bench/alternate_speed.py --collector --repeat 5   # the collector's share, and a gc-off baseline
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BASELINE = (
    "import timm, safetensors.torch as st; m = timm.create_model('resnet50'); "
    "st.save_file(m.state_dict(), 'base.safetensors')"
)


def cold(cmd: list[str], cwd: str) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


HEADLINE = ["alternate", "resnet50", "--stages", "c2,c3", "--out", "alternet.safetensors", "--force"]


def surgeon_command() -> list[str]:
    """The console script, else the module (an uninstalled tree)."""
    script = Path(sys.executable).with_name("surgeon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "surgeon.cli"]


def interleaved(commands: list[list[str]], repeat: int) -> list[float]:
    """Median cold wall time of each command, run in turn `repeat` times (all see the same machine state)."""
    with tempfile.TemporaryDirectory() as d:
        times: list[list[float]] = [[] for _ in commands]
        for _ in range(repeat):
            for t, cmd in zip(times, commands):
                t.append(cold(cmd, d))
    return [statistics.median(t) for t in times]


def wall_times(repeat: int) -> tuple[float, float]:
    base, head = interleaved([[sys.executable, "-c", BASELINE], [*surgeon_command(), *HEADLINE]], repeat)
    return base, head


def wall_times_with_gc_off_baseline(repeat: int) -> tuple[float, float, float]:
    """Medians of the baseline, the same baseline with Python's garbage collector off from its first
    line, and the surgeon command, interleaved. `surgeon` imports torch and timm with the collector
    off and freezes them (cli/main.py); the plain baseline pays the collector during its imports."""
    base, off, head = interleaved([[sys.executable, "-c", BASELINE],
                                   [sys.executable, "-c", "import gc; gc.disable(); " + BASELINE],
                                   [*surgeon_command(), *HEADLINE]], repeat)
    return base, off, head


_COLLECTOR = """
import gc, sys, time
from surgeon.cli import main as cli_main
if sys.argv[1] == "unfrozen":
    cli_main._import_base = lambda: None  # the command as it ran before: torch and timm imported with the collector on
stats = {"n": 0, "full": 0, "s": 0.0, "t": 0.0}
def watch(phase, info):
    if phase == "start":
        stats["t"] = time.perf_counter()
    else:
        stats["n"] += 1; stats["full"] += info["generation"] == 2; stats["s"] += time.perf_counter() - stats["t"]
gc.callbacks.append(watch)
sys.argv = ["surgeon", *sys.argv[2:]]
try:
    cli_main.main()
except SystemExit:
    pass
print(stats["n"], stats["full"], stats["s"], gc.get_freeze_count(), file=sys.stderr)
"""


def collector(mode: str) -> str:
    """Python's cyclic collector during one headline run: collections, full ones, seconds, frozen objects."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", _COLLECTOR, mode, *HEADLINE], cwd=d, check=True,
                           capture_output=True, text=True)
    n, full, seconds, frozen = r.stderr.strip().splitlines()[-1].split()
    return (f"{mode}: {n} collections ({full} full) took {float(seconds):.3f} s; "
            f"{int(frozen):,} objects frozen")


def throughput(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    model.train()
    for _ in range(2):  # warm-up
        model(x).sum().backward()
    t = time.perf_counter()
    for _ in range(steps):
        model(x).sum().backward()
    return steps * x.shape[0] / (time.perf_counter() - t)


def block_times(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Forward seconds per block kind (hooks on block modules, one timed forward)."""
    import surgeon

    g = surgeon.graph(model, input_size=tuple(x.shape[1:]))
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for b in g.blocks:
        if len(b.members) != 1:
            continue
        mod = model.get_submodule(b.members[0])
        handles.append(mod.register_forward_pre_hook(lambda m, a, k=b.address: starts.__setitem__(k, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, y, k=b.address, kind=b.kind: spent.__setitem__(kind, spent.get(kind, 0.0) + time.perf_counter() - starts[k])))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--collector", action="store_true",
                   help="instead: Python's garbage collector in one run (frozen imports / as before), and the "
                        "baseline with the collector off beside the two")
    args = p.parse_args()
    if args.repeat < 1:
        p.error(f"--repeat={args.repeat} is out of range; give an integer >= 1")
    if args.collector:
        for mode in ("frozen", "unfrozen"):
            print(collector(mode))
        b, g, h = wall_times_with_gc_off_baseline(args.repeat)
        print(f"cold wall time, median of {args.repeat}: baseline {b:.2f} s, baseline with gc off {g:.2f} s, "
              f"surgeon alternate {h:.2f} s: {h / b:.3f}x the baseline, {h / g:.3f}x the gc-off baseline")
        return

    base_s, head_s = wall_times(args.repeat)
    print(f"cold wall time, median of {args.repeat}: baseline (timm.create_model + save) {base_s:.2f} s, "
          f"surgeon alternate {head_s:.2f} s, ratio {head_s / base_s:.2f}x (target <= 1.10x)")

    import surgeon

    torch.manual_seed(0)
    base = surgeon.load_model("resnet50")
    alt = surgeon.alternate(base, "c2,c3")
    x = torch.randn(args.batch, 3, args.size, args.size)
    tb, ta = throughput(base, x, args.steps), throughput(alt, x, args.steps)
    print(f"forward+backward at {args.batch}x3x{args.size}x{args.size}: ResNet-50 {tb:.1f} img/s, "
          f"AlterNet(c2,c3) {ta:.1f} img/s, ratio {ta / tb:.2f}x")
    for name, model in (("ResNet-50", base), ("AlterNet", alt)):
        t = block_times(model, x[:1])
        print(f"  forward time by block kind ({name}, batch 1): "
              + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in sorted(t.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
