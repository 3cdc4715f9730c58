"""The README's comparison figures and claims table: three small models trained on scikit-learn's
digits (1,797 8x8 handwritten digits upscaled to 32 px, the one labelled dataset that needs no
download) with the project's `digits` recipe, then compared by `surgeon compare --quick`.

    python examples/compare_digits.py            # trains (cached), compares, writes docs/compare-digits/
    python examples/compare_digits.py --retrain  # train the three models again

- ``r``: ResNet-34 (timm ``resnet34``), the `digits` recipe as it is (1 warmup + 9 cosine epochs);
- ``alternet``: the same ResNet-34 with one MSA at the end of c2 and of c3, built by
  `surgeon.alternate` (what ``surgeon alternate resnet34 --stages c2,c3 --input-size 3,32,32``
  does) and trained with the same recipe;
- ``vit``: a small ViT (timm ``vit_tiny_patch16_224`` built with 4 px patches, width 96, depth 6,
  3 heads: 8 x 8 tokens, 0.7M parameters), the same recipe with 1 warmup + 24 cosine epochs, so
  that its training costs about what the ResNets' does on a CPU.

Training runs on one torch thread; the models and their run folders are cached under
examples/.cache/compare-digits/. The comparison is the exact command the README shows, run from
that folder and timed (wall clock, both cores):

    surgeon compare r.safetensors vit.safetensors alternet.safetensors --data digits --quick --out docs/compare-digits/

The report folder is then pruned to what is committed (index.html, the PNG figures, the CSV
tables, results.json; the SVG twins and the landscape's partial files are dropped), and the
training and comparison times go to docs/compare-digits/times.json (with the 1-minute load average
before and after the comparison: on a shared machine other processes slow it down). Digits are a small, easy
dataset at a toy resolution: CIFAR or ImageNet runs of the same command need a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "examples" / ".cache" / "compare-digits"
OUT = ROOT / "docs" / "compare-digits"
SIZE = (3, 32, 32)
KEEP = (".html", ".png", ".csv", ".json")  # what the committed report keeps (no SVG twins, no partial/)

#: file stem -> (model spec, constructor arguments, recipe overrides, surgeon.alternate stages or None)
MODELS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str | None]] = {
    "r": ("resnet34", {}, {}, None),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 6, "num_heads": 3},
            {"epochs": 24}, None),
    "alternet": ("resnet34", {}, {}, "c2,c3"),
}


def train(stem: str) -> float:
    """Train the model `stem` of `MODELS` with the digits recipe into CACHE/STEM.safetensors;
    returns the seconds it took (the AlterNet is first built and saved as STEM_init.safetensors)."""
    import surgeon

    name, kwargs, overrides, stages = MODELS[stem]
    start = time.perf_counter()
    if stages is not None:
        base = surgeon.load_model(name, num_classes=10, **kwargs)
        alt = surgeon.alternate(base, stages, input_size=SIZE)
        name, kwargs = str(CACHE / f"{stem}_init.safetensors"), {}
        surgeon.save(alt, name, overwrite=True)
    surgeon.train(name, "digits", recipe=surgeon.training.recipe_with("digits", input_size=SIZE, **overrides),
                  out=CACHE / f"{stem}.safetensors", run=surgeon.parallel.Run(overwrite=True, progress=True), **kwargs)
    return time.perf_counter() - start


def compare() -> float:
    """Run the README's `surgeon compare` command from CACHE (labels: the file stems); its seconds."""
    cmd = [sys.executable, "-m", "surgeon.cli", "compare", "r.safetensors", "vit.safetensors",
           "alternet.safetensors", "--data", "digits", "--quick", "--out", str(OUT), "--force"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=CACHE, check=True)
    return time.perf_counter() - start


def prune(folder: Path) -> None:
    """Keep only the files of `KEEP` in `folder` (the report's SVGs and partial/ go)."""
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.suffix not in KEEP:
            p.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--retrain", action="store_true", help="train the three models again")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    p.add_argument("--train-only", action="store_true", help="train (or find cached) models, do not compare")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    times_file = CACHE / "train_seconds.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    for stem in MODELS:
        if args.retrain or not (CACHE / f"{stem}.safetensors").is_file():
            times[stem] = round(train(stem), 1)
            times_file.write_text(json.dumps(times, indent=1) + "\n")
    if args.train_only:
        return
    load_before = os.getloadavg()[0]
    seconds = compare()
    prune(OUT)
    record = {"train_seconds": times, "train_threads": args.threads, "compare_seconds": round(seconds, 1),
              "cpus": os.cpu_count(), "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    (OUT / "times.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"training {times} s; surgeon compare {seconds:.0f} s; report in {OUT}")


if __name__ == "__main__":
    main()
