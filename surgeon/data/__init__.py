"""Data: the built-in and folder datasets at a model's input size, and the paper's corruptions.

`datasets` (`loader`, digits / images / folders / CIFAR files, the model's transforms),
`normalisation` (`normalised`: batches that declare their normalisation; grey models on RGB data),
`sampling` (`Sampling`: which samples `loader` yields, in what order)
and `corruptions` (the CIFAR-C style corruptions, `CORRUPTIONS`). The names of `datasets` and
`normalisation` are re-exported here, so ``surgeon.data.loader`` works. Imports `surgeon.core` and `surgeon.model`.
"""

from surgeon.data import corruptions, datasets, normalisation, sampling  # noqa: F401
from surgeon.data.sampling import Sampling  # noqa: F401  (the options object of `loader`: shuffle, subset, seed)
from surgeon.data.datasets import *  # noqa: F401,F403  (surgeon.data.loader, ...)
from surgeon.data.normalisation import *  # noqa: F401,F403  (surgeon.data.normalised, ...)

__all__ = [*normalisation.__all__, *datasets.__all__]
