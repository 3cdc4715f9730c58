"""Training: recipes and the resumable training loop.

`recipe_check` (validating recipe files) and `loop` (`train`, `Recipe`, `RECIPES`: the paper's
training recipe, checkpoints every epoch, resume). Imports the layers below it.
"""

from surgeon.training import loop, recipe_check  # noqa: F401  (each module is an attribute of the package)
from surgeon.training.loop import *  # noqa: F401,F403  (surgeon 0.1's module surgeon.training: its names)
from surgeon.training.loop import __all__  # noqa: F401


def __getattr__(name: str):
    if name == "PRESETS":  # surgeon 0.1's name of the training recipes
        from surgeon import _compat

        return _compat.moved("surgeon.training.PRESETS", "training.loop:RECIPES")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
