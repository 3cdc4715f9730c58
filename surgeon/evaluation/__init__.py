"""Evaluation: what a model gets right, and how robustly, without changing it.

`metrics` (accuracy, NLL, ECE), `evaluate` (`evaluate`), `robustness` (corruptions and
frequency-band noise, Fig. 8), `adversarial` (FGSM / PGD), `stability` (perturbation
stability), `latency`. Imports the layers below it.
"""

from surgeon.evaluation import metrics, evaluate, robustness, adversarial, stability, latency  # noqa: F401  (each module is an attribute of the package)
from surgeon.evaluation.evaluate import *  # noqa: F401,F403  (surgeon 0.1's module surgeon.evaluation: its names)
from surgeon.evaluation.evaluate import __all__  # noqa: F401
