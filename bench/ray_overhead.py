"""Cost of running a search step on Ray: N stub jobs of S seconds on a local cluster of C CPUs.

The jobs go through `surgeon.parallel.executors.RayExecutor.map` (the path every (candidate, seed) of a
search step takes) and only sleep, so the ideal makespan is ceil(N / C) * S. Reports
makespan / ideal (target <= 1.10x) and the overhead per task in ms ((makespan - ideal) spread
over the tasks a slot runs), for a cold step (the first one: Ray starts its worker processes) and
a warm one (workers running, as for every later step of a search). Also the round trip of 200
empty tasks, the fixed cost per task when nothing overlaps it.

    python bench/ray_overhead.py                       # 8 jobs of 2 s on 2 CPUs
    python bench/ray_overhead.py --jobs 16 --seconds 1 --cpus 4
"""

from __future__ import annotations

import argparse
import json
import math
import time

import ray

from surgeon.parallel.executors import RayExecutor


def stub_job(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def empty() -> int:
    return 0


def step(ex: RayExecutor, jobs: int, seconds: float) -> float:
    start = time.perf_counter()
    outs = list(ex.map(stub_job, [(seconds,)] * jobs))
    assert len(outs) == jobs and all(o.ok for _, o in outs)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="warm steps (the best is reported)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    startup = time.perf_counter() - t0
    ideal = math.ceil(args.jobs / args.cpus) * args.seconds
    per_slot = math.ceil(args.jobs / args.cpus)
    with RayExecutor(job_cpus=1) as ex:
        cold = step(ex, args.jobs, args.seconds)
        warm = [step(ex, args.jobs, args.seconds) for _ in range(args.rounds)]
        start = time.perf_counter()
        list(ex.map(empty, [()] * 200))
        empty_ms = (time.perf_counter() - start) / 200 * 1e3
    ray.shutdown()
    best = min(warm)
    row = {"jobs": args.jobs, "seconds": args.seconds, "cpus": args.cpus, "ray": ray.__version__,
           "cluster_start_s": round(startup, 2), "ideal_s": ideal, "cold_s": round(cold, 3), "warm_s": [round(w, 3) for w in warm],
           "cold_ratio": round(cold / ideal, 3), "warm_ratio": round(best / ideal, 3),
           "overhead_ms_per_task_warm": round((best - ideal) / per_slot * 1e3, 1),
           "overhead_ms_per_task_cold": round((cold - ideal) / per_slot * 1e3, 1),
           "empty_task_round_trip_ms": round(empty_ms, 2)}
    print(f"local Ray cluster of {args.cpus} CPUs started in {startup:.1f} s (ray {ray.__version__})")
    print(f"{args.jobs} jobs of {args.seconds:g} s: ideal {ideal:.2f} s; cold step {cold:.2f} s = {cold / ideal:.3f}x, "
          f"warm step {best:.2f} s = {best / ideal:.3f}x (target <= 1.10x)")
    print(f"overhead per task: warm {row['overhead_ms_per_task_warm']} ms, cold {row['overhead_ms_per_task_cold']} ms; "
          f"empty task round trip {empty_ms:.2f} ms")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
