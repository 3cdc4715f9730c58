"""The paper's feature-map analyses on ResNet-50 and ViT-Ti, on the built-in photographs:
Fourier (Fig. 2a spectra, Fig. 8 high-frequency Delta log amplitude against depth) and feature-map
variance (Fig. 9); and ResNet-50 against its AlterNet (`surgeon alternate --stages c2,c3`), where
each MSA lowers the high-frequency amplitude even untrained (docs/probe_alternet.png).

    python examples/probes.py                                  # random init: docs/probe_*.png
    python examples/probes.py --resnet-weights resnet50.safetensors --vit-weights vit_ti.safetensors \\
        --data ~/imagenet/val --batches 16 --out-dir figures/  # the paper's comparison

Without weight files both models are random-initialised (this project cannot download weights),
and the figures show what an untrained network does, not the paper's findings: timm zero-inits the
last BatchNorm of every ResNet block, so untrained blocks are identities after the first of each
stage, and their curves are flat within a stage. With ImageNet weights (timm's resnet50 and
vit_tiny_patch16_224 checkpoints, or the paper's), the same script reproduces Fig. 2a, 8 and 9.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import surgeon
from surgeon.viz import probe_figure, save_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resnet-weights", type=Path, help="ResNet-50 weights (.safetensors, .pth)")
    p.add_argument("--vit-weights", type=Path, help="ViT-Ti (vit_tiny_patch16_224) weights")
    p.add_argument("--data", default="samples", help="samples (built-in photos), a folder, cifar10:ROOT, ...")
    p.add_argument("--batches", type=int, default=None, help="batches of 32 to use (default: all)")
    p.add_argument("--out-dir", type=Path, default=DOCS)
    args = p.parse_args()

    results = []
    for name, weights in (("resnet50", args.resnet_weights), ("vit_tiny_patch16_224", args.vit_weights)):
        model = surgeon.load_model(name, weights=weights)
        loader = surgeon.data.loader(args.data, model, batch_size=32)
        res = surgeon.probe(model, loader, ("fourier", "variance"), batches=args.batches, progress=True)
        res.model = f"{name} ({'trained' if weights else 'random init'})"
        results.append(res)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for kind in ("fourier", "variance"):
        path = save_figure(probe_figure(results, kind), args.out_dir / f"probe_{kind}.png", overwrite=True)
        print(f"wrote {path}")

    alternet = surgeon.alternate(surgeon.load_model("resnet50", weights=args.resnet_weights), "c2,c3")
    loader = surgeon.data.loader(args.data, alternet, batch_size=32)
    res = surgeon.probe(alternet, loader, "fourier", batches=args.batches, progress=True)
    res.model = "resnet50 + alternate --stages c2,c3"
    path = save_figure(probe_figure([results[0], res], "fourier"), args.out_dir / "probe_alternet.png", overwrite=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
