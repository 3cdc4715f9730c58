"""The rest of the paper's toolbox on the shared digits models (examples/digits_models.py: a
ResNet-18 and a ViT-Ti with 4 px patches trained on scikit-learn's digits at 32 px, offline):

- docs/attack_fgsm.png, docs/attack_pgd.png: accuracy against the attack budget eps, one curve per
  model (FGSM on the 360 test images; PGD with 5 steps of 2/255 and a random start, on 120 of them);
- docs/stability.png: flip probability per perturbation sequence made on the fly (translation by
  1 px per frame, noises of growing severity) of 120 test images, one bar per model;
- docs/trajectory.png: the optimisation trajectories in weight space (Fig. 1b) from the snapshots
  kept every epoch while the models trained;
- docs/locality.png: test accuracy of the ViT with its attention restricted to k x k token
  neighbourhoods (`surgeon.localize`, no retraining), against k.

It also prints the ensemble of the two models and their latency.

    python examples/toolbox.py
    python examples/toolbox.py --models ResNet-18      # without training the ViT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from digits_models import CACHE, MODELS, SIZE, trained

import surgeon
from surgeon.viz import plot_attack, plot_stability, plot_trajectories, save_figure
from surgeon.training.loop import run_dir_for

DOCS = Path(__file__).resolve().parent.parent / "docs"
EPS = [0.002, 0.005, 0.01, 0.02, 0.05]
VIT = "ViT-Ti (patch 4)"


def attacks(models: dict, out_dir: Path) -> None:
    for attack in ("fgsm", "pgd"):
        results = []
        for label, model in models.items():
            test = surgeon.data.loader("digits", model, batch_size=120, input_size=SIZE)
            res = surgeon.adversarial_robustness(model, test, surgeon.evaluation.Attack(attack, steps=5),
                                                 EPS if attack == "fgsm" else EPS[:4],
                                                 batches=None if attack == "fgsm" else 1, progress=True)
            res.model = label
            print(f"{label} {attack}: clean {res.clean['acc']:.3f}, per eps {[round(a, 3) for a in res.accuracy]}")
            results.append(res)
        print(f"wrote {save_figure(plot_attack(results).figure, out_dir / f'attack_{attack}.png', overwrite=True)}")


def stability(models: dict, out_dir: Path) -> None:
    results = []
    for label, model in models.items():
        test = surgeon.data.loader("digits", model, batch_size=120, input_size=SIZE)
        res = surgeon.perturbation_stability(model, test, ["translate", "gaussian_noise", "shot_noise", "brightness",
                                                           "gaussian_blur"], batches=1, progress=True)
        res.model = label
        print(f"{label}: mean flip probability {res.mean_flip_probability:.3f}")
        results.append(res)
    print(f"wrote {save_figure(plot_stability(results).figure, out_dir / 'stability.png', overwrite=True)}")


def trajectories(labels: list[str], out_dir: Path) -> None:
    runs = [run_dir_for(CACHE / f"{MODELS[label][0]}_digits.safetensors") for label in labels]
    results = [surgeon.trajectory(r) for r in runs]
    for label, r in zip(labels, results):
        print(f"{label}: r {[round(v, 1) for v in r.radii]}, angle {[round(v, 1) for v in r.angles]}")
    print(f"wrote {save_figure(plot_trajectories(results, labels), out_dir / 'trajectory.png', overwrite=True)}")


def locality(vit, out_dir: Path) -> None:
    kernels = [1, 3, 5, 7, 15]  # 15 = 2 * 8 - 1: the whole 8 x 8 grid, the model itself
    accs = []
    for k in kernels:
        local = surgeon.localize(vit, kernel=k, input_size=SIZE)
        test = surgeon.data.loader("digits", local, batch_size=120, input_size=SIZE)
        accs.append(surgeon.evaluate(local, test).metrics["acc"])
    print(f"ViT accuracy with k x k local attention, k = {kernels}: {[round(a, 3) for a in accs]}")
    fig, ax = plt.subplots(figsize=(4.4, 3.3), layout="constrained")
    ax.plot(kernels, [100 * a for a in accs], marker="o", color="C1")
    ax.set_xticks(kernels, [*map(str, kernels[:-1]), "15 (global)"])
    ax.set_xlabel("attention kernel k (tokens)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title("ViT-Ti trained global, evaluated local (no retraining)", loc="left", fontsize=9)
    print(f"wrote {save_figure(fig, out_dir / 'locality.png', overwrite=True)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DOCS)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated labels of examples/digits_models.py")
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    labels = [m.strip() for m in args.models.split(",")]
    models = {label: trained(label)[0] for label in labels}
    attacks(models, args.out_dir)
    stability(models, args.out_dir)
    trajectories(labels, args.out_dir)
    if VIT in models:
        locality(models[VIT], args.out_dir)
    ens = surgeon.ensemble(list(models.values()), input_size=SIZE)  # of one model: the model itself
    test = surgeon.data.loader("digits", ens, batch_size=120, input_size=SIZE)
    print(f"ensemble of {len(models)}: acc {surgeon.evaluate(ens, test).metrics['acc']:.3f}")
    for label, model in [*models.items(), ("ensemble", ens)]:
        row = surgeon.latency(model, batch_size=64, input_size=SIZE, repeats=5).rows[-1]
        print(f"{label}: {row.ms_mean:.1f} ms per batch of 64 ({row.images_per_s:.0f} images/s)")


if __name__ == "__main__":
    main()
