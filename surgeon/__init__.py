"""surgeon: model surgery and instrumentation for vision networks.

Block graphs of any timm / torchvision classifier, surgery passes (AlterNet), streaming probes and
curvature analyses from "How Do Vision Transformers Work?" (Park & Kim, ICLR 2022).

Names are loaded on first use (PEP 562), so ``import surgeon`` (and ``surgeon --help``) does not
import torch. To export a name, add it to `_EXPORTS` below: ``"name": "submodule"`` (the same name
there) or ``"name": "submodule:attribute"``. Submodules (``surgeon.data``, ``surgeon.plots``, ...)
load on first attribute access too.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .version import __version__

_EXPORTS: dict[str, str] = {
    "SurgeonError": "errors",
    "KINDS": "graph", "Block": "graph", "BlockGraph": "graph", "feature_info_mismatch": "graph", "graph": "graph",
    "create_feature_extractor": "graph",
    "load": "models", "load_weights": "io", "read_cfg": "io", "read_state_dict": "io",
    "save": "io", "SurgeonCfg": "provenance", "Registry": "registry",
    "default_input_size": "models", "input_size_of": "models", "resolve_input_size": "models", "load_model": "models",
    "PRESETS": "passes", "ALTERNETS": "passes", "alternate": "passes", "cifar_stem": "passes", "insert": "passes", "remove": "passes",
    "replace": "passes",
    "hessian_density": "curvature", "hessian_eigs": "curvature", "hessian_spectrum": "curvature",
    "hessian_trace": "curvature",
    "landscape": "landscapes",
    "executor": "executors",
    "Evaluation": "evaluation", "evaluate": "evaluation",
    "LesionResult": "lesions", "LesionRow": "lesions", "lesion_study": "lesions",
    "RECIPES": "training", "Recipe": "training", "TrainResult": "training", "train": "training",
    "training_recipe": "training",
    "PROBES": "probes", "Fourier": "probes", "ProbeResults": "probes", "ProbeSession": "probes", "Stats": "probes",
    "Variance": "probes", "probe": "probes",
    "CorruptionResult": "robustness", "FrequencyNoiseResult": "robustness",
    "corruption_robustness": "robustness", "frequency_noise_robustness": "robustness",
    "Candidate": "search", "SearchResult": "search", "run_search": "search", "search_spec": "search",
    "search_report": "search",
    "AdversarialResult": "adversarial", "adversarial_robustness": "adversarial",
    "Ensemble": "ensemble", "ensemble": "ensemble",
    "LatencyResult": "latency", "latency": "latency",
    "localize": "locality",
    "TrajectoryResult": "trajectory", "trajectory": "trajectory",
    "StabilityResult": "stability", "perturbation_stability": "stability",
    "to_pandas": "tables",
    "logits_of": "outputs", "LogitsOf": "outputs",
    "Comparison": "compare", "compare": "compare", "read_comparison": "compare",
}

#: renamed names (not in ``__all__``): the submodule's own ``__getattr__`` warns and points to the new one
_DEPRECATED: dict[str, str] = {"read_recipe": "io", "search_recipe": "search", "SearchRecipe": "search"}

#: submodules listed in ``__all__`` (every submodule also loads on attribute access)
_SUBMODULES = ("data", "layers", "passes")

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name in _DEPRECATED:  # not kept: every use warns
        return getattr(importlib.import_module(f".{_DEPRECATED[name]}", __name__), name)
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
    elif not name.startswith("_"):
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's module type: loading a submodule binds it on the package, which must not hide
    an exported name it shares (``surgeon.graph`` is the function, not the package ``surgeon/graph/``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _EXPORTS:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
