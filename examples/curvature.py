"""The paper's curvature analyses on the two example models of examples/digits_models.py (a
ResNet-18 and a ViT-Ti with 4 px patches, trained with `surgeon.train` on scikit-learn's digits at
32 px, offline, and cached):

- docs/hessian_spectrum.png: top-5 Hessian eigenvalues of 4 augmented mini-batches each, pooled
  (the paper's Fig. 1c / Fig. 4 "max eigenvalue spectrum"), with the SLQ density of one batch;
- docs/landscape.png: the loss landscape of each model on filter-normalised directions (Fig. 1a).

    python examples/curvature.py [--batches 4] [--grid 9]     # about 15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from digits_models import MODELS, SIZE, trained

import surgeon
from surgeon.viz import plot_density, plot_landscape, plot_spectrum, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()
    spectra, densities, landscapes = [], [], []
    for name in MODELS:
        model, history = trained(name)
        label = f"{name}, test acc {100 * history[-1]['val_acc']:.1f}%"
        print(label)
        aug = surgeon.data.loader("digits", model, batch_size=64, train=True,
                                  sampling=surgeon.data.Sampling(shuffle=True, seed=1),
                                  transform=surgeon.data.train_transform(model, input_size=SIZE))
        batches = list(surgeon.data.mixed(aug, 10))[: args.batches]
        spec = surgeon.hessian_spectrum(model, batches, k=5, batches=args.batches,
                                        run=surgeon.parallel.Run(progress=True))
        spec.model = label
        spectra.append(spec)
        densities.append((label, surgeon.hessian_density(model, batches[0], vectors=2,
                                                         solver=surgeon.analysis.Solver(max_iter=30))))
        clean = surgeon.data.loader("digits", model, batch_size=128, train=True, input_size=SIZE)
        land = surgeon.landscape(model, clean, lattice=surgeon.analysis.Lattice(grid=args.grid), batches=1,
                                 run=surgeon.parallel.Run(progress=True))
        land.model = label
        landscapes.append(land)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    plot_spectrum(spectra, axes[0])
    for label, d in densities:
        plot_density(d, axes[1], label=label)
    print(f"wrote {save_figure(fig, args.out_dir / 'hessian_spectrum.png', overwrite=True)}")
    fig = plt.figure(figsize=(10, 8.4), layout="constrained")
    for sub, land in zip(fig.subfigures(2, 1), landscapes):
        plot_landscape(land, sub)
    print(f"wrote {save_figure(fig, args.out_dir / 'landscape.png', overwrite=True)}")


if __name__ == "__main__":
    main()
