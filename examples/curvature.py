"""The paper's curvature analyses on two small models trained here, on scikit-learn's digits
(offline, a minute each on a CPU): a ResNet-18 and a ViT-Ti with 4 px patches, both at 32 px.

- docs/hessian_spectrum.png: top-5 Hessian eigenvalues of 4 augmented mini-batches each, pooled
  (the paper's Fig. 1c / Fig. 4 "max eigenvalue spectrum"), with the SLQ density of one batch;
- docs/landscape.png: the loss landscape of each model on filter-normalised directions (Fig. 1a).

    python examples/curvature.py [--batches 4] [--grid 9]     # about 15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import surgeon
from surgeon.plots import plot_density, plot_landscape, plot_spectrum, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"
SIZE = (3, 32, 32)


def train(model: nn.Module, epochs: int, lr: float) -> float:
    """AdamW, one warmup epoch then cosine decay, on the digits train split; returns test accuracy."""
    torch.manual_seed(0)
    loader = surgeon.data.loader("digits", model, batch_size=64, train=True, shuffle=True, input_size=SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, len(loader))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, (epochs - 1) * len(loader))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], [len(loader)])
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    model.eval()
    test = surgeon.data.loader("digits", model, batch_size=360, input_size=SIZE)
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    return hits / len(test.dataset)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()
    models = {  # name: (model, epochs, peak learning rate)
        "resnet18": (surgeon.load_model("resnet18", num_classes=10), 6, 1e-3),
        "vit_tiny (4 px patches)": (surgeon.load_model("vit_tiny_patch16_224", num_classes=10, img_size=32,
                                                        patch_size=4), 15, 5e-4),
    }
    spectra, densities, landscapes = [], [], []
    for name, (model, epochs, lr) in models.items():
        acc = train(model, epochs, lr)
        label = f"{name}, test acc {100 * acc:.1f}%"
        print(label)
        aug = surgeon.data.loader("digits", model, batch_size=64, train=True, shuffle=True, seed=1,
                                  transform=surgeon.data.train_transform(model, input_size=SIZE))
        batches = list(surgeon.data.mixed(aug, 10))[: args.batches]
        spec = surgeon.hessian_spectrum(model, batches, k=5, batches=args.batches, progress=True)
        spec.model = label
        spectra.append(spec)
        densities.append((label, surgeon.hessian_density(model, batches[0], vectors=2, steps=30)))
        clean = surgeon.data.loader("digits", model, batch_size=128, train=True, input_size=SIZE)
        land = surgeon.landscape(model, clean, grid=args.grid, batches=1, progress=True)
        land.model = label
        landscapes.append(land)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    plot_spectrum(spectra, axes[0])
    for label, d in densities:
        plot_density(d, axes[1], label=label)
    print(f"wrote {save_figure(fig, args.out_dir / 'hessian_spectrum.png')}")
    fig = plt.figure(figsize=(10, 8.4), layout="constrained")
    for sub, land in zip(fig.subfigures(2, 1), landscapes):
        plot_landscape(land, sub)
    print(f"wrote {save_figure(fig, args.out_dir / 'landscape.png')}")


if __name__ == "__main__":
    main()
