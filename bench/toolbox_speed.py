"""What the toolbox's attacks and ensembles cost (issue #15's targets).

For each model (timm, random init, eval mode) at one batch of random pixels:

1. forward + backward: the cheapest input gradient a user would write, ``torch.autograd.grad`` of
   the NLL of ``model((x - mean) / std)`` with respect to x, the parameters frozen (no weight
   gradients).
2. FGSM: ``surgeon.evaluation.adversarial.fgsm``. Target: <= 1.05 x (1).
3. PGD: ``surgeon.evaluation.adversarial.pgd`` with --steps steps. Target: <= steps x 1.05 x (1).
4. Ensemble of --members copies of the model: ``surgeon.ensemble`` forward against running the
   members one after another (``m(x)`` for each, under no_grad). Target: <= 1.02 x.

Times: --repeat rounds after one warm-up, each round timing every mode once; the ratio is the
median over rounds. Per image: the batch time / batch size.

    OMP_NUM_THREADS=1 python bench/toolbox_speed.py --threads 1
    python bench/toolbox_speed.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import surgeon
from surgeon.evaluation.adversarial import Attack, fgsm, frozen, pgd

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _plain_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model((x - m) / s), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    model = surgeon.load_model(name, num_classes=10, img_size=args.input_size[-1]).to(device).eval()
    size = args.input_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, *size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    members = [surgeon.load_model(name, num_classes=10, img_size=args.input_size[-1]).to(device).eval() for _ in range(args.members)]
    ens = surgeon.ensemble(members, input_size=size).to(device)

    def plain() -> None:
        with frozen(model):
            _plain_gradient(model, x, y)

    def one_by_one() -> None:
        with torch.no_grad():
            for m in ens.members:
                m(x)

    def together() -> None:
        with torch.no_grad():
            ens(x)

    modes = {
        "fwd+bwd": plain,
        "fgsm": lambda: fgsm(model, x, y, 0.007, normalisation=(MEAN, STD)),
        "pgd": lambda: pgd(model, x, y, 0.03, attack=Attack(steps=args.steps), normalisation=(MEAN, STD)),
        "members": one_by_one,
        "ensemble": together,
    }
    for fn in modes.values():  # warm-up
        fn()
    rounds = {k: [] for k in modes}
    for _ in range(args.repeat):
        for k, fn in modes.items():
            rounds[k].append(_timed(fn, device))
    ratio = lambda a, b: statistics.median(t / u for t, u in zip(rounds[a], rounds[b]))  # noqa: E731
    base = statistics.median(rounds["fwd+bwd"])
    return {"fwd+bwd ms/img": 1e3 * base / args.batch_size, "fgsm / fwd+bwd": ratio("fgsm", "fwd+bwd"),
            "pgd / (steps fwd+bwd)": ratio("pgd", "fwd+bwd") / args.steps,
            "ensemble / members": ratio("ensemble", "members")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,vit_tiny_patch16_224")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=lambda s: tuple(int(v) for v in s.split(",")), default=(3, 32, 32))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"batch {args.batch_size}, input {'x'.join(map(str, args.input_size))}, PGD {args.steps} steps, "
          f"{args.members} members, median of {args.repeat} rounds, {device}, {torch.get_num_threads()} threads")
    print(f"{'model':24s} {'fwd+bwd ms/img':>15s} {'fgsm/(fwd+bwd)':>15s} {'pgd/(steps fwd+bwd)':>20s} {'ens/members':>12s}")
    for name in args.models.split(","):
        r = bench(name, args, device)
        print(f"{name:24s} {r['fwd+bwd ms/img']:15.3f} {r['fgsm / fwd+bwd']:15.3f} {r['pgd / (steps fwd+bwd)']:20.3f} "
              f"{r['ensemble / members']:12.3f}")


if __name__ == "__main__":
    main()
