"""The paper's lesion study on a ResNet and a ViT trained on digits: each block in turn becomes the
identity and the accuracy drop and NLL increase are plotted against depth, MSA blocks shaded
(docs/lesions.png); plus the reliability diagrams of the two intact models (docs/reliability.png).

    python examples/lesions.py                      # trains both models on digits (CPU: minutes)
    python examples/lesions.py --epochs 3 --out-dir figures/

Digits (scikit-learn's 8x8 handwritten digits, upscaled to 32 px) is the one labelled dataset that
needs no download; the models are small (ResNet-18; ViT-Ti with 4 px patches, whose 12 transformer
blocks split into 24 MSA / MLP halves). The figures show the method, not the paper's ImageNet
numbers: with CIFAR-100 or ImageNet models, pass them to `surgeon lesion-study` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import surgeon
from surgeon.plots import plot_lesions, plot_reliability, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"
SIZE = (3, 32, 32)
MODELS = {
    "ResNet-18": ("resnet18", {}),
    "ViT-Ti (patch 4)": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=9, help="training epochs per model (the digits recipe's default)")
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()

    results = []
    for label, (name, kwargs) in MODELS.items():
        model = surgeon.load_model(name, num_classes=10, **kwargs)
        run = surgeon.train(model, "digits", recipe="digits", epochs=args.epochs, input_size=SIZE, progress=True)
        test = surgeon.data.loader("digits", run.model, batch_size=128, train=False, input_size=SIZE)
        res = surgeon.lesion_study(run.model, test, "*", input_size=SIZE, progress=True)
        res.model = label
        worst = min(res.rows, key=lambda r: r.delta["acc"])
        print(f"{label}: test acc {100 * res.intact.metrics['acc']:.1f}%, NLL {res.intact.metrics['nll']:.3f}; "
              f"removing {worst.address} ({worst.kind}) costs {-100 * worst.delta['acc']:.1f} points")
        results.append(res)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_figure(plot_lesions(results), args.out_dir / 'lesions.png')}")
    fig = plot_reliability([r.intact for r in results], [r.model for r in results])
    print(f"wrote {save_figure(fig, args.out_dir / 'reliability.png')}")


if __name__ == "__main__":
    main()
