"""Data: the built-in and folder datasets at a model's input size, and the paper's corruptions.

`datasets` (`loader`, `normalised`, digits / images / folders / CIFAR files) and `corruptions`
(the CIFAR-C style corruptions, `CORRUPTIONS`). The names of `datasets` are re-exported here, so
``surgeon.data.loader`` works. Imports `surgeon.core` and `surgeon.model`.
"""

from surgeon.data import corruptions, datasets  # noqa: F401
from surgeon.data.datasets import *  # noqa: F401,F403  (surgeon.data.loader, ...)
from surgeon.data.datasets import __all__  # noqa: F401
