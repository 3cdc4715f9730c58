"""Framework cost of `surgeon.train` and `surgeon.evaluate` against bare hand-written loops.

Training: the same model, data, transform, optimiser (AdamW), loss (label smoothing), gradient
clipping and schedule, one epoch each, alternating between the two to share the machine's state;
images per second over the epoch (data loading included), and the whole call's wall time for
surgeon (setup, checkpoint and log writing included). Evaluation: `surgeon.evaluate` (every
metric of the paper) against a loop that only runs the forward passes.

    python bench/train_speed.py --model resnet18 --repeat 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import surgeon
from surgeon.training.recipe import lr_at, training_recipe

SIZE = (3, 32, 32)


def bare_epoch(model: nn.Module, r, seed: int) -> float:
    """One epoch of a plain PyTorch loop; returns images per second."""
    ds = surgeon.data.dataset("digits", train=True)
    ds.transform = surgeon.data.train_transform(model, input_size=SIZE, auto_augment=r.auto_augment,
                                                hflip=r.hflip, padding=r.padding)
    loader = DataLoader(ds, batch_size=r.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
    steps = len(loader)
    model.train()
    n, t0 = 0, time.perf_counter()
    for step, (x, y) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = lr_at(r, step, steps)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), r.clip_grad)
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def surgeon_epoch(name: str, seed: int, out: Path) -> tuple[float, float, int]:
    """One epoch of surgeon.train (checkpoint + logs written); (images/s in the epoch, wall s, images)."""
    t0 = time.perf_counter()
    run = surgeon.train(name, "digits", recipe=training_recipe("digits", epochs=0), val="none", seed=seed, out=out,
                        run=surgeon.parallel.Run(overwrite=True))  # the warmup epoch alone: recipe_with refuses epochs=0
    row = run.history[-1]
    return row["images_per_s"], time.perf_counter() - t0, row["images_per_s"] * row["seconds"]


def bare_eval(model: nn.Module, loader) -> float:
    model.eval()
    n, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def surgeon_eval(model: nn.Module, loader) -> float:
    t0 = time.perf_counter()
    ev = surgeon.evaluate(model, loader)
    return ev.samples / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = training_recipe("digits", epochs=0)
    tmp = Path(tempfile.mkdtemp())
    bare, ours, walls = [], [], []
    for i in range(args.repeat):
        torch.manual_seed(i)
        bare.append(bare_epoch(surgeon.load_model(args.model, num_classes=10), r, i))
        ips, wall, n = surgeon_epoch(args.model, i, tmp / "m.safetensors")
        ours.append(ips)
        walls.append(n / wall)
        print(f"round {i}: bare {bare[-1]:.1f} img/s, surgeon {ours[-1]:.1f} img/s in the epoch, "
              f"{walls[-1]:.1f} img/s over the whole call")
    b, s, w = statistics.median(bare), statistics.median(ours), statistics.median(walls)
    print(f"train {args.model} 32px batch {r.batch_size}: surgeon/bare throughput {s / b:.3f}x "
          f"(whole call incl. setup, checkpoint, logs: {w / b:.3f}x)")

    model = surgeon.load_model(args.model, num_classes=10)
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=128)
    batches = list(loader)  # decoded once: both loops read the same tensors
    fb, fs = [], []
    for _ in range(args.repeat):
        fb.append(bare_eval(model, batches))
        fs.append(surgeon_eval(model, batches))
    b, s = statistics.median(fb), statistics.median(fs)
    print(f"eval {args.model} 32px batch 128: bare {b:.1f} img/s, surgeon.evaluate (all metrics) {s:.1f} img/s: "
          f"{s / b:.3f}x")


if __name__ == "__main__":
    main()
