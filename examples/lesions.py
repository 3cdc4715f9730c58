"""The paper's lesion study on a ResNet and a ViT trained on digits: each block in turn becomes the
identity and the accuracy drop and NLL increase are plotted against depth, MSA blocks shaded
(docs/lesions.png); plus the reliability diagrams of the two intact models (docs/reliability.png).

    python examples/lesions.py          # the models of examples/digits_models.py (trained once, cached)

The models are small (ResNet-18; ViT-Ti with 4 px patches, whose 12 transformer blocks split into
24 MSA / MLP halves), trained on scikit-learn's digits at 32 px, the labelled dataset that needs
no download. The figures show the method, not the paper's ImageNet
numbers: with CIFAR-100 or ImageNet models, pass them to `surgeon lesion-study` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from digits_models import MODELS, SIZE, trained

import surgeon
from surgeon.viz import plot_lesions, plot_reliability, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()

    results = []
    for label in MODELS:
        model, _ = trained(label)
        test = surgeon.data.loader("digits", model, batch_size=128, train=False, input_size=SIZE)
        res = surgeon.lesion_study(model, test, "*", input_size=SIZE, progress=True)
        res.model = label
        worst = min(res.rows, key=lambda r: r.delta["acc"])
        print(f"{label}: test acc {100 * res.intact.metrics['acc']:.1f}%, NLL {res.intact.metrics['nll']:.3f}; "
              f"removing {worst.address} ({worst.kind}) costs {-100 * worst.delta['acc']:.1f} points")
        results.append(res)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_figure(plot_lesions(results), args.out_dir / 'lesions.png', overwrite=True)}")
    fig = plot_reliability([r.intact for r in results], [r.model for r in results])
    print(f"wrote {save_figure(fig, args.out_dir / 'reliability.png', overwrite=True)}")


if __name__ == "__main__":
    main()
