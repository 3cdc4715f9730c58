"""What the streaming probes add to a forward, op by op: torch profiler self-CPU time of one probed
step minus one plain forward, per aten op (issue #22, item 3). With ``--in-hooks N``: the time
spent inside the probes' hooks over N steps (median) against the plain forward's (median of N,
interleaved), a steadier figure than the difference of two noisy forwards.

    python bench/probe_profile.py --model resnet50 --batch-size 8
    python bench/probe_profile.py --model resnet50 --batch-size 16 --in-hooks 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import surgeon
from surgeon.analysis.probes import ProbeSession, _Tap


def per_op(prof) -> dict[str, tuple[int, float]]:
    return {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}


def in_hooks(m: torch.nn.Module, x: torch.Tensor, steps: int) -> str:
    """Median time inside the taps' `consume` per probed step, against the median plain forward."""
    spent: list[float] = []
    consume = _Tap.consume

    def timed(tap: _Tap, value) -> None:
        t = time.perf_counter()
        consume(tap, value)
        spent.append(time.perf_counter() - t)

    plain, hooks = [], []
    g = surgeon.graph(m)
    with torch.no_grad():
        m(x)
    _Tap.consume = timed
    try:
        for _ in range(steps + 1):  # the first round warms up
            t = time.perf_counter()
            with torch.no_grad():
                m(x)
            plain.append(time.perf_counter() - t)
            with ProbeSession(m, ("fourier", "variance"), "*", block_graph=g) as s:
                spent.clear()
                s.step(x)
                hooks.append(sum(spent))
    finally:
        _Tap.consume = consume
    plain, hooks = plain[1:], hooks[1:]
    p, h = statistics.median(plain) * 1e3, statistics.median(hooks) * 1e3
    return f"plain forward {p:.1f} ms, inside the probes' hooks {h:.1f} ms a step: {h / p:.1%} of the forward"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--in-hooks", type=int, metavar="N", help="time inside the hooks over N steps instead")
    args = p.parse_args()
    if args.in_hooks is not None and args.in_hooks < 1:
        p.error(f"--in-hooks={args.in_hooks} is out of range; give an integer >= 1")
    torch.set_num_threads(args.threads)
    m = timm.create_model(args.model).eval()
    x = torch.randn(args.batch_size, *surgeon.graph(m).input_size)
    if args.in_hooks:
        print(f"{args.model} batch {args.batch_size}: {in_hooks(m, x, args.in_hooks)}")
        return
    with torch.no_grad():
        m(x)
        with profile(activities=[ProfilerActivity.CPU]) as plain:
            m(x)
    with ProbeSession(m, ("fourier", "variance"), "*") as s:
        s.step(x)
        with profile(activities=[ProfilerActivity.CPU]) as probed:
            s.step(x)
    a, b = per_op(plain), per_op(probed)
    rows = sorted(((b.get(k, (0, 0))[1] - a.get(k, (0, 0))[1], k, b.get(k, (0, 0))[0] - a.get(k, (0, 0))[0])
                   for k in set(a) | set(b)), reverse=True)
    print(f"{args.model} batch {args.batch_size}: plain forward {sum(t for _, t in a.values()) / 1e3:.1f} ms of aten "
          f"self time; the probed step adds {sum(r[0] for r in rows) / 1e3:.1f} ms")
    for extra, key, calls in rows[:8]:
        print(f"  {key:40s} +{extra / 1e3:7.2f} ms  +{calls} calls")


if __name__ == "__main__":
    main()
