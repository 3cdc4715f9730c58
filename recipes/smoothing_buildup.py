"""A search the TOML form cannot express: spatial smoothing instead of MSAs, placed by build-up.

Spatial smoothing (Park & Kim, "Blurs Behave Like Ensembles", PAPER.md) is a parameter-free
``blur(relu(t * tanh(x / t)))`` inserted after a stage. From the last stage backwards, try the
best model so far with smoothing after the stage's last block; keep it where the mean validation
accuracy improves (by at least [search] delta), then go on to the stage before.

    surgeon search recipes/smoothing_buildup.py --out runs/smoothing
"""

from __future__ import annotations

import surgeon
from surgeon.search import Search, Steps

SETTINGS = {
    "model": {"name": "resnet18", "input_size": [3, 32, 32], "kwargs": {"channels": [32, 64, 128, 256]}},
    "data": {"train": "digits"},
    "train": {"recipe": "digits", "lr": 3e-3, "warmup_epochs": 0, "epochs": 2},
    "search": {"metric": "acc", "delta": 0.0, "repeats": [0, 1], "stages": ["c1", "c2", "c3", "c4"]},
}


def candidates(search: Search) -> Steps:
    """Baseline, then smoothing after each allowed stage from the last one backwards."""
    best = search.candidate("baseline")
    yield [best]
    placed: list[str] = []
    for stage in reversed(search.stages):
        trial = search.candidate("smooth-" + "-".join([stage, *placed]),
                                 lambda g, stage=stage: surgeon.insert(g, after=f"{stage}.b-1", module="smoothing"),
                                 on=best)
        (record,) = yield [trial]
        if record["accepted"]:
            best, placed = trial, [stage, *placed]
