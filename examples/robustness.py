"""Corruption robustness and frequency-band noise (Park & Kim, Fig. 2b) of a ResNet-18 and a ViT-Ti
with 4 px patches, the models of examples/digits_models.py (trained on scikit-learn's digits at
32 px, offline, and cached):

- docs/robustness.png: accuracy under every corruption of `surgeon.corruptions` made on the fly
  with the CIFAR-10-C constants, severities 1..5, one heat map per model;
- docs/frequency_noise.png: the accuracy change under noise of one frequency band, per band
  (Fig. 2b), one curve per model.

    python examples/robustness.py

digits are 8 x 8 images scaled to 32 px: they hold almost no high frequencies, so the curves
measure these small models on this data, not the paper's ImageNet finding (ResNet-50 loses most
at high frequency, ViT-Ti at low frequency).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from digits_models import MODELS, SIZE, trained

import surgeon
from surgeon.viz import plot_corruptions, plot_frequency_noise, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()
    corruptions, noise = [], []
    for label in MODELS:
        model, _ = trained(label)
        test = surgeon.data.loader("digits", model, batch_size=120, input_size=SIZE)
        run = surgeon.parallel.Run(progress=True)
        res = surgeon.corruption_robustness(model, test, source=surgeon.evaluation.CorruptionSource("cifar"), run=run)
        fn = surgeon.frequency_noise_robustness(model, test, run=run)
        res.model = fn.model = label
        print(f"{label}: clean acc {res.clean['acc']:.3f}, mean corrupted acc {res.mean('acc'):.3f}; "
              f"accuracy change per frequency {[round(c, 3) for c in fn.change]}")
        corruptions.append(res)
        noise.append(fn)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(corruptions), figsize=(6.2 * len(corruptions), 5.2), layout="constrained")
    for res, ax in zip(corruptions, axes):
        plot_corruptions(res, "acc", ax)
    print(f"wrote {save_figure(fig, args.out_dir / 'robustness.png', overwrite=True)}")
    print(f"wrote {save_figure(plot_frequency_noise(noise).figure, args.out_dir / 'frequency_noise.png', overwrite=True)}")


if __name__ == "__main__":
    main()
