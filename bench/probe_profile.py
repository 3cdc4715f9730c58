"""What the streaming probes add to a forward, op by op: torch profiler self-CPU time of one probed
step minus one plain forward, per aten op (issue #22, item 3).

    python bench/probe_profile.py --model resnet50 --batch-size 8
"""

from __future__ import annotations

import argparse

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import surgeon
from surgeon.analysis.probes import ProbeSession


def per_op(prof) -> dict[str, tuple[int, float]]:
    return {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = timm.create_model(args.model).eval()
    x = torch.randn(args.batch_size, *surgeon.graph(m).input_size)
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
