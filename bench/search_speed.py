"""Cost of the build-up engine: a whole search against the trainings it runs.

Runs ``recipes/digits_buildup.toml`` end to end (`surgeon.run_search` into a fresh folder: spec
validation, base model and block graphs, candidate construction, the trainings, the results file,
outcome files, best model and chart) and reads, from each (candidate, seed) outcome file, the
seconds its training took inside the engine (model build + `surgeon.train`, timed around the
evaluator). The engine's overhead is wall time minus the sum of those trainings, as a fraction
of that sum (target: < 5%). With --workers N > 1 the trainings overlap and the script reports the
speed-up over their sum instead.

    python bench/search_speed.py --threads 1
    python bench/search_speed.py --workers 2 --out bench/out/search_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import surgeon

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "recipes" / "digits_buildup.toml", help="search spec")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="append the figures as one JSON line to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    run_search = surgeon.run_search  # imported before the clock: `import surgeon` is lazy (one-time module imports)
    run = surgeon.parallel.Run(executor=surgeon.parallel.executor("local", workers=args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "search"
        t0 = time.perf_counter()
        result = run_search(args.spec, folder, run=run)
        wall = time.perf_counter() - t0
        trainings = {p.relative_to(folder / "candidates").as_posix(): json.loads(p.read_text())["seconds"]
                     for p in sorted((folder / "candidates").glob("*/seed*.json"))}
    total = sum(trainings.values())
    for name, seconds in trainings.items():
        print(f"  {name:<32} {seconds:8.2f} s")
    row = {"spec": args.spec.name, "workers": args.workers, "threads": torch.get_num_threads(),
           "candidates": len(result.records), "trainings": len(trainings), "wall_s": round(wall, 2),
           "training_s": round(total, 2)}
    if args.workers == 1:
        row["overhead"] = round((wall - total) / total, 4)
        print(f"wall {wall:.2f} s, trainings {total:.2f} s: engine overhead {wall - total:.2f} s "
              f"= {100 * row['overhead']:.1f}% (target < 5%)")
    else:
        row["speedup"] = round(total / wall, 2)
        print(f"wall {wall:.2f} s, trainings {total:.2f} s in sum: {row['speedup']:.2f}x with {args.workers} workers")
    print("decisions:", ", ".join(f"{r['id']} {'accepted' if r['accepted'] else 'rejected'}" for r in result.records))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
