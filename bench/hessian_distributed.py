"""Hessian top-k on one batch: 2 gloo processes (each half the batch, products all-reduced) vs 1.

Both runs solve the same batch with the same start vector; the script checks that the eigenvalues
agree (rtol 1e-5) and reports wall time of the solve, the ratio 1 process / 2 processes and the
cost per Hessian-vector product. The single process gets as many torch threads as the two
processes together (a fair split of the cores).

    python bench/hessian_distributed.py                      # resnet10t, 32 px, batch 64, top-5
    python bench/hessian_distributed.py --model resnet18 --batch 128 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import surgeon
from surgeon.parallel import distributed


def solve(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = surgeon.load_model(args.model, num_classes=10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    surgeon.hessian_eigs(model, (x, y), k=1, solver=surgeon.analysis.Solver(max_iter=3, tol=0.5))  # warm-up
    start = time.perf_counter()
    r = surgeon.hessian_eigs(model, (x, y), k=args.k, solver=surgeon.analysis.Solver(tol=1e-4))
    seconds = time.perf_counter() - start
    return {"eigenvalues": r.eigenvalues.tolist(), "hvps": r.hvps, "seconds": seconds}


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    distributed.init()
    try:
        res = solve(args)
        if distributed.is_main():
            with open(out, "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process of the 2-process run")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        out = os.path.join(tmp, "two.json")
        mp.spawn(_rank, args=(2, port, args, out), nprocs=2, join=True)
        with open(out) as f:
            two = json.load(f)
    print(f"2 processes: {two['seconds']:.2f} s, {two['hvps']} products", flush=True)
    torch.set_num_threads(2 * args.threads)
    one = solve(args)
    np.testing.assert_allclose(two["eigenvalues"], one["eigenvalues"], rtol=1e-5)
    row = {"model": args.model, "size": args.size, "batch": args.batch, "k": args.k, "threads_total": 2 * args.threads,
           "one_s": round(one["seconds"], 3), "two_s": round(two["seconds"], 3),
           "speedup": round(one["seconds"] / two["seconds"], 3), "hvps": [one["hvps"], two["hvps"]],
           "ms_per_hvp": [round(one["seconds"] / one["hvps"] * 1e3, 1), round(two["seconds"] / two["hvps"] * 1e3, 1)],
           "eigenvalues": one["eigenvalues"]}
    print(f"{args.model} {args.size}px batch {args.batch} top-{args.k}: 1 process ({2 * args.threads} threads) "
          f"{one['seconds']:.2f} s, {one['hvps']} products, {row['ms_per_hvp'][0]} ms each; 2 gloo processes "
          f"({args.threads} thread each) {two['seconds']:.2f} s, {two['hvps']} products, {row['ms_per_hvp'][1]} ms each; "
          f"1 / 2 = {row['speedup']:.2f}x; eigenvalues agree (rtol 1e-5)")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
