"""The two small models the examples share, trained once with `surgeon.train` on scikit-learn's
digits (1,797 8x8 handwritten digits, upscaled to 32 px: the one labelled real dataset that needs
no download) and cached under examples/.cache/ with their training logs.

- ResNet-18 with the `digits` recipe (the paper's strong recipe cut to CPU size: AdamW, 1 warmup
  + 9 cosine epochs, lr 1e-3 at batch 64, clipping 5, padded crop, label smoothing 0.1);
- ViT-Ti with 4 px patches (64 tokens), the same recipe at lr 5e-4 for 1 + 14 epochs.

Delete examples/.cache/ to train them again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

import surgeon
from surgeon.training.loop import run_dir_for

CACHE = Path(__file__).resolve().parent / ".cache"
SIZE = (3, 32, 32)
MODELS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {  # label: (name, constructor args, recipe overrides)
    "ResNet-18": ("resnet18", {}, {}),
    "ViT-Ti (patch 4)": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, {"lr": 5e-4, "epochs": 14}),
}


def trained(label: str) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The model `label` of `MODELS` trained on digits (from the cache when there), and its
    per-epoch log (training loss, test accuracy, NLL, ECE, ...)."""
    name, kwargs, overrides = MODELS[label]
    out = CACHE / f"{name}_digits.safetensors"
    if not out.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        surgeon.train(name, "digits", recipe=surgeon.training.recipe_with("digits", **overrides), out=out,
                      run=surgeon.parallel.Run(overwrite=True, progress=True, snapshots=1),  # snapshots every epoch:
                      **kwargs)  # examples/toolbox.py's trajectories (Fig. 1b)
    log = run_dir_for(out) / "log.jsonl"
    return surgeon.load(out), [json.loads(line) for line in log.read_text().splitlines()]
