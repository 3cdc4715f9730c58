"""Loss-landscape points per second against a plain evaluation loop over the same batches
(issue #22, item 4), in one process and on a local Ray cluster.

Setup (as bench/hessian_speed.py): timm resnet18 for 10 classes at 32 px, random init, eval mode,
4 batches of 64 scikit-learn digits; a --grid x --grid landscape (``surgeon.landscape``, filter
normalised directions, NLL).

- plain: ``float(cross_entropy(model(x), y))`` over the 4 batches, once per point, under no_grad:
  what evaluating the same number of points costs without moving any weight.
- landscape: the whole ``surgeon.landscape(...)`` call (directions, resumable bookkeeping, every
  point) divided into its points.
- ray: the same call with ``executor=RayExecutor(job_cpus=1)`` on a local cluster of --cpus CPUs
  (started once, before timing; the first landscape warms the workers and is not timed), against
  the plain loop in one process with all --cpus threads.

Rounds interleave plain and landscape (median of --repeat); target: points per second of the
landscape >= 0.95x the plain loop's, on one process and on Ray.

    python bench/landscape_speed.py --repeat 3
    python bench/landscape_speed.py --repeat 3 --batches 16   # more evaluation per point

A point costs one evaluation of its batches plus one pass over the weights (theta + a d1 + b d2,
memory-bound: about 10 ms for resnet18's 11M weights here), so the ratio depends on how much a
point evaluates: the paper evaluates every point on the whole training set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
from torch import nn

import surgeon


def plain_points(model: nn.Module, frozen: list, points: int) -> float:
    """Seconds for `points` plain evaluation passes over the batches."""
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(points):
            for x, y in frozen:
                float(nn.functional.cross_entropy(model(x), y))
    return time.perf_counter() - start


STEADY: list[float] = []  # seconds per point / its own evaluation, as the result reports them (one process)


def landscape_points(model: nn.Module, frozen: list, grid: int, executor=None) -> float:
    start = time.perf_counter()
    res = surgeon.landscape(model, frozen, lattice=surgeon.analysis.Lattice(grid=grid), batches=len(frozen),
                            run=surgeon.parallel.Run(executor=executor))
    assert res.done == grid * grid
    if executor is None:
        STEADY.append(res.seconds_per_point / res.eval_seconds)
    return time.perf_counter() - start


def directions_seconds(model: nn.Module, repeat: int) -> tuple[float, float]:
    """Medians: the two directions drawn in turn, and as `landscape` draws them (side by side)."""
    from surgeon.analysis.landscapes import _moves, directions

    def serial() -> None:
        for seed in (0, 1):
            directions(model, seed=seed)

    out = []
    for fn in (serial, lambda: _moves(model, 2, "filter", 0)):
        times = []
        for _ in range(repeat + 1):  # the first warms up
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times[1:]))
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--grid", type=int, default=7)
    p.add_argument("--batches", type=int, default=4, help="batches of 64 per point (the paper: the whole training set)")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench/out/landscape_speed.json"))
    args = p.parse_args()
    for name in ("repeat", "grid", "batches", "cpus"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)} is out of range; give an integer >= 1")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    loader = surgeon.data.loader("digits", model, batch_size=64, train=True,
                                 sampling=surgeon.data.Sampling(shuffle=True, seed=0), input_size=(3, 32, 32))
    frozen = [b for b, _ in zip(loader, range(args.batches))]
    n = args.grid ** 2
    plain_points(model, frozen, 2)  # warm-up
    rows = {"plain": [], "landscape": []}
    for r in range(args.repeat):
        order = ["plain", "landscape"] if r % 2 == 0 else ["landscape", "plain"]
        for mode in order:
            t = plain_points(model, frozen, n) if mode == "plain" else landscape_points(model, frozen, args.grid)
            rows[mode].append(t)
    out = {"points": n, "plain_s": statistics.median(rows["plain"]), "landscape_s": statistics.median(rows["landscape"])}
    out["ratio"] = out["plain_s"] / out["landscape_s"]
    print(f"resnet18 32 px, {len(frozen)} batches of 64, {n} points, {torch.get_num_threads()} threads")
    print(f"one process: plain {n / out['plain_s']:.2f} points/s, landscape {n / out['landscape_s']:.2f} points/s: "
          f"{out['ratio']:.3f}x (target >= 0.95x); a point's evaluation / the whole point (the rest: moving the "
          f"weights, bookkeeping): {1 / statistics.median(STEADY):.3f}x")
    out["steady_ratio"] = 1 / statistics.median(STEADY)
    out["directions_serial_s"], out["directions_s"] = directions_seconds(model, args.repeat)
    print(f"the two directions: drawn in turn {out['directions_serial_s']:.3f} s, side by side (landscape's) "
          f"{out['directions_s']:.3f} s")
    if not args.skip_ray:
        import ray

        from surgeon.parallel.executors import RayExecutor

        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        ex = RayExecutor(job_cpus=1)
        landscape_points(model, frozen, args.grid, ex)  # warm the workers
        ray_times, plain_times = [], []
        for _ in range(args.repeat):
            ray_times.append(landscape_points(model, frozen, args.grid, ex))
            plain_times.append(plain_points(model, frozen, n))
        ray.shutdown()
        out["ray_s"], out["ray_plain_s"] = statistics.median(ray_times), statistics.median(plain_times)
        out["ray_ratio"] = out["ray_plain_s"] / out["ray_s"]
        print(f"local Ray cluster of {args.cpus} CPUs (1 CPU a task): landscape {n / out['ray_s']:.2f} points/s, "
              f"plain loop in one process {n / out['ray_plain_s']:.2f} points/s: {out['ray_ratio']:.3f}x (target >= 0.95x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
