"""Evaluation: what a model gets right, and how robustly, without changing it.

`metrics` (accuracy, NLL, ECE), `evaluate` (`evaluate`), `robustness` (corruptions, Fig. 8),
`frequency_noise` (frequency-band noise, Fig. 2b), `pixels` (corrupting normalised batches in
pixels), `cells` (a grid of evaluations, in order or as executor tasks), `adversarial` (FGSM /
PGD), `stability` (perturbation stability), `latency`. Imports the layers below it.

Options objects (frozen dataclasses, range-checked on construction): `Attack` (the attack's
settings of `surgeon.adversarial_robustness`, `pgd`), `CorruptionSource` (where the corrupted
images of `surgeon.corruption_robustness` come from), `PerturbationSource` (where the sequences of
`surgeon.perturbation_stability` come from); how a sweep runs is `surgeon.parallel.Run`.
"""

from surgeon.evaluation import (metrics, evaluate, pixels, cells, robustness, frequency_noise,  # noqa: F401  (each module is an
                                adversarial, stability, latency)  # attribute of the package)
from surgeon.evaluation.evaluate import *  # noqa: F401,F403  (surgeon 0.1's module surgeon.evaluation: its names)
from surgeon.evaluation.evaluate import __all__  # noqa: F401
from surgeon.evaluation.adversarial import Attack  # noqa: F401  (options objects of the evaluations)
from surgeon.evaluation.robustness import CorruptionSource  # noqa: F401
from surgeon.evaluation.stability import PerturbationSource  # noqa: F401
