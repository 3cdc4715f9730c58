"""Top Hessian eigenvalues against what a user would pick today, on the same operator and tolerance
(issue #22, item 2), and the cost of one Hessian-vector product against one plain backward pass.

Setup: timm ``resnet10t`` and a ViT-Ti (``vit_tiny_patch16_224`` built for 32 px with 4 px patches:
64 tokens), 10 classes, random init, eval mode, one batch of 32 scikit-learn digits at 32 px,
cross-entropy; the top-3 eigenvalues of largest magnitude at relative tolerance 1e-4.

Solvers, interleaved round by round (median of --repeat rounds), each timed end to end (the
operator's set-up included):

- ``surgeon``: ``surgeon.hessian_eigs(model, batch, k=3, tol=1e-4)`` (Lanczos, full
  reorthogonalisation, on the gradient graph built once);
- ``arpack``: scipy's ``eigsh`` (ARPACK's implicitly restarted Lanczos, ``tol=1e-4``) on the very
  same operator (`surgeon.analysis.hessian.HessianOperator`, float64 vectors converted per product);
- ``curvlinops``: curvlinops 3.0's ``HessianLinearOperator(...).to_scipy()`` under ``eigsh``
  (``tol=1e-4``), run inside surgeon's analysis mode so that the model and attention kernels match.

Products are counted for all three; residuals ``||Hv - lambda v|| / |lambda|`` are computed after,
untimed, with surgeon's operator. Then: one HVP (both modes) and ``b`` HVPs batched through one
backward (``is_grads_batched``, the block-Lanczos lever) against one plain forward + backward of
the same loss (the physical yardstick), medians of --hvp-repeat.

    pip install curvlinops-for-pytorch==3.0   # the bench environment only
    python bench/hessian_solvers.py --repeat 3
    python bench/hessian_solvers.py --repeat 2 --models resnet10t --blocks c3.b-1   # a per-block Hessian
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

import surgeon
from surgeon.analysis import eigensolvers as eigsolve
from surgeon.analysis import hessian as hess
from surgeon.model.runtime import analysis_mode

K, TOL = 3, 1e-4
BLOCKS = "*"  # --blocks: the parameters every solver's operator is taken over
MODELS = {"resnet10t": {}, "vit_tiny_patch16_224": {"img_size": 32, "patch_size": 4}}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def batch_for(model: nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = surgeon.data.loader("digits", model, batch_size=size, train=True,
                                 sampling=surgeon.data.Sampling(shuffle=True, seed=0), input_size=(3, 32, 32))
    return next(iter(loader))


PRODUCT_SECONDS: list[float] = []  # per surgeon run: seconds inside its Hessian-vector products


def ours(model: nn.Module, batch: Any) -> tuple[np.ndarray, torch.Tensor, int]:
    spent: list[float] = []
    call = hess.HessianOperator.__call__

    def timed(op: hess.HessianOperator, v: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = call(op, v)
        spent.append(time.perf_counter() - start)
        return out

    hess.HessianOperator.__call__ = timed
    try:
        r = _ours(model, batch)
    finally:
        hess.HessianOperator.__call__ = call
    PRODUCT_SECONDS.append(sum(spent))
    return r


def _ours(model: nn.Module, batch: Any) -> tuple[np.ndarray, torch.Tensor, int]:
    r = surgeon.hessian_eigs(model, batch, k=K, blocks=BLOCKS, solver=surgeon.analysis.Solver(tol=TOL, vectors=True))
    return r.eigenvalues, r.eigenvectors, r.hvps


def _eigsh(op: LinearOperator, n: int, counter: dict) -> tuple[np.ndarray, torch.Tensor, int]:
    v0 = np.random.default_rng(0).standard_normal(n)
    values, vectors = eigsh(op, k=K, which="LM", tol=TOL, v0=v0)
    order = np.argsort(-np.abs(values))
    return values[order], torch.as_tensor(vectors[:, order].T.copy(), dtype=torch.float32), counter["n"]


def arpack(model: nn.Module, batch: Any) -> tuple[np.ndarray, torch.Tensor, int]:
    with analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model, BLOCKS))
        counter = {"n": 0}

        def matvec(v: np.ndarray) -> np.ndarray:
            counter["n"] += 1
            return op(torch.as_tensor(v.reshape(-1), dtype=op.dtype)).double().numpy()

        return _eigsh(LinearOperator((op.n, op.n), matvec=matvec, dtype=np.float64), op.n, counter)


def curvlinops(model: nn.Module, batch: Any) -> tuple[np.ndarray, torch.Tensor, int]:
    from curvlinops import HessianLinearOperator

    with analysis_mode(model):
        params = list(hess.selected_parameters(model, BLOCKS).values())
        lin = HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [batch],
                                    check_deterministic=False).to_scipy()
        counter = {"n": 0}

        def matvec(v: np.ndarray) -> np.ndarray:
            counter["n"] += 1
            return lin @ v

        n = sum(p.numel() for p in params)
        return _eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float32), n, counter)


SOLVERS = {"surgeon": ours, "arpack": arpack, "curvlinops": curvlinops}


def residuals(model: nn.Module, batch: Any, values: np.ndarray, vectors: torch.Tensor) -> np.ndarray:
    with analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model, BLOCKS))
        vecs = vectors.to(op.dtype)
        return eigsolve._residuals(op, vecs / vecs.norm(dim=1, keepdim=True), values)


def product_costs(model: nn.Module, batch: Any, repeat: int) -> dict[str, float]:
    """Seconds of one plain forward + backward, one HVP per mode, and b batched HVPs."""
    x, y = batch
    params = list(hess.selected_parameters(model, BLOCKS).values())

    def backward() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)

    out = {"backward_s": median_time(backward, repeat)}
    with analysis_mode(model):
        for mode in hess.MODES:
            op = hess.HessianOperator(model, batch, hess.selected_parameters(model, BLOCKS), mode=mode)
            v = torch.randn(op.n)
            out[f"{mode}_s"] = median_time(lambda: op(v), repeat)
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model, BLOCKS))
        for b in (2, 4, 8):
            vs = [torch.randn(b, *s) for s in op.shapes]
            out[f"batched{b}_s"] = median_time(lambda: torch.autograd.grad(
                op._grads, op._leaves, grad_outputs=vs, retain_graph=True, is_grads_batched=True), repeat)
    return out


def run_model(name: str, repeat: int, hvp_repeat: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **MODELS[name]).eval()
    batch = batch_for(model, 32)
    times: dict[str, list[float]] = {s: [] for s in SOLVERS}
    PRODUCT_SECONDS.clear()
    found: dict[str, Any] = {}
    for r in range(repeat):  # interleaved, rotating order: every solver sees the same machine state
        order = list(SOLVERS)[r % 3:] + list(SOLVERS)[: r % 3]
        for s in order:
            t, found[s] = timed(lambda: SOLVERS[s](model, batch))
            times[s].append(t)
    rows = {}
    for s, (values, vectors, hvps) in found.items():
        rows[s] = {"seconds": statistics.median(times[s]), "hvps": hvps, "eigenvalues": values.tolist(),
                   "residuals": residuals(model, batch, values, vectors).tolist()}
    selected = sum(p.numel() for p in hess.selected_parameters(model, BLOCKS).values())
    rows["surgeon"]["product_seconds"] = statistics.median(PRODUCT_SECONDS)
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "solvers": rows,
            "blocks": "" if BLOCKS == "*" else f"; blocks {BLOCKS}: {selected / 1e6:.2f}M",
            "costs": product_costs(model, batch, hvp_repeat)}


def report(res: dict[str, Any]) -> None:
    rows, costs = res["solvers"], res["costs"]
    base = rows["surgeon"]
    print(f"\n{res['model']} ({res['params'] / 1e6:.2f}M parameters{res['blocks']}), batch 32 at 32 px, top-{K} (LM), tol {TOL:g}, "
          f"{torch.get_num_threads()} threads")
    print("| solver | seconds | surgeon's speed-up | HVPs | max residual | eigenvalues | max rel. diff to surgeon |")
    print("|---|---|---|---|---|---|---|")
    for s, r in rows.items():
        diff = max(abs(a - b) / abs(b) for a, b in zip(r["eigenvalues"], base["eigenvalues"]))
        print(f"| {s} | {r['seconds']:.2f} | {r['seconds'] / base['seconds']:.2f}x | {r['hvps']} | "
              f"{max(r['residuals']):.1e} | {', '.join(f'{v:.5g}' for v in r['eigenvalues'])} | {diff:.1e} |")
    print(f"surgeon's run: {base['product_seconds']:.2f} s in its {base['hvps']} products, "
          f"{base['seconds'] - base['product_seconds']:.2f} s in Lanczos' own work (median of the runs)")
    b = costs["backward_s"]
    print(f"one plain forward+backward {b * 1e3:.1f} ms; one HVP: double-backward {costs['double-backward_s'] / b:.2f}x, "
          f"forward-over-reverse {costs['forward-over-reverse_s'] / b:.2f}x; batched HVPs per vector: "
          + ", ".join(f"b={n} {costs[f'batched{n}_s'] / n / b:.2f}x" for n in (2, 4, 8)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hvp-repeat", type=int, default=7)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--blocks", default="*", help="the operator over these blocks' parameters (e.g. c3.b-1)")
    p.add_argument("--out", type=Path, default=Path("bench/out/hessian_solvers.json"))
    args = p.parse_args()
    global BLOCKS
    BLOCKS = args.blocks
    if args.repeat < 1 or args.hvp_repeat < 1:
        p.error("--repeat and --hvp-repeat must be integers >= 1")
    try:
        results = [run_model(name, args.repeat, args.hvp_repeat) for name in args.models.split(",")]
    except surgeon.SurgeonError as exc:  # e.g. a --blocks selector that matches nothing
        p.error(str(exc))
    for res in results:
        report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
