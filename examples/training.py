"""Learning curves of the two example models (examples/digits_models.py: a ResNet-18 and a ViT-Ti
with 4 px patches, trained with `surgeon.train` and the `digits` recipe on scikit-learn's digits
at 32 px): docs/training.png (training loss, test accuracy and test ECE per epoch).

    python examples/training.py            # about 5 minutes on 2 CPU cores (models cached after)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from digits_models import MODELS, trained

from surgeon.viz import save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for label in MODELS:
        _, history = trained(label)
        final = history[-1]
        print(f"{label}: test accuracy {final['val_acc']:.1%}, NLL {final['val_nll']:.3f}, ECE {final['val_ece']:.1%}")
        epochs = [row["epoch"] for row in history]
        for ax, key in zip(axes, ("train_loss", "val_acc", "val_ece")):
            ax.plot(epochs, [row[key] for row in history], marker="o", ms=3, label=label)
    for ax, title in zip(axes, ("training loss (label smoothing 0.1)", "test accuracy", "test ECE")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[1].legend()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_figure(fig, args.out_dir / 'training.png', overwrite=True)}")


if __name__ == "__main__":
    main()
