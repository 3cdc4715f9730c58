"""Train a ResNet-18 and a ViT-Ti (4 px patches) on scikit-learn's digits at 32 px with the
`digits` recipe (the paper's strong recipe cut to CPU size) and draw their learning curves:
docs/training.png (training loss, test accuracy and test ECE per epoch).

    python examples/training.py            # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import surgeon
from surgeon.plots import save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"
MODELS = {  # label: (model name, constructor arguments, training overrides)
    "ResNet-18": ("resnet18", {}, {}),
    "ViT-Ti, 4 px patches": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, {"lr": 5e-4, "epochs": 14}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (name, kwargs, overrides)) in enumerate(MODELS.items()):
            run = surgeon.train(name, "digits", recipe="digits", out=Path(tmp) / f"m{i}.safetensors", progress=True,
                                **kwargs, **overrides)
            epochs = [row["epoch"] for row in run.history]
            final = run.history[-1]
            print(f"{label}: test accuracy {final['val_acc']:.1%}, NLL {final['val_nll']:.3f}, ECE {final['val_ece']:.1%}")
            for ax, key in zip(axes, ("train_loss", "val_acc", "val_ece")):
                ax.plot(epochs, [row[key] for row in run.history], marker="o", ms=3, label=label)
    for ax, title in zip(axes, ("training loss (label smoothing 0.1)", "test accuracy", "test ECE")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[1].legend()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_figure(fig, args.out_dir / 'training.png')}")


if __name__ == "__main__":
    main()
