"""Training: recipes and the resumable training loop.

`recipe` (`Recipe`, the presets `RECIPES`, `training_recipe`, the lr schedule `lr_at`),
`recipe_check` (validating recipe files), `sampling` (seeded per-sample data, batches sharded per
process, `fixed_numerics`), `state` (one run's state), `setup` (model, data loaders, optimiser,
DDP), `checkpoints` (the run folder: checkpoint, logs, snapshots) and `loop` (`train`: the paper's
training recipe, checkpoints every epoch, resume). Imports the layers below it.
"""

from surgeon.training import (checkpoints, loop, recipe, recipe_check, sampling, setup,  # noqa: F401  (each module is
                              state)  # an attribute of the package)
from surgeon.training.loop import *  # noqa: F401,F403  (surgeon 0.1's module surgeon.training: its names)
from surgeon.training.recipe import *  # noqa: F401,F403
from surgeon.training.sampling import *  # noqa: F401,F403
from surgeon.training.setup import *  # noqa: F401,F403

__all__ = [*loop.__all__, *recipe.__all__, *sampling.__all__, *setup.__all__]


def __getattr__(name: str):
    if name == "PRESETS":  # surgeon 0.1's name of the training recipes
        from surgeon import _compat

        return _compat.moved("surgeon.training.PRESETS", "training.recipe:RECIPES")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
