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
from typing import Any

from surgeon import _compat
from surgeon.core.version import __version__  # noqa: F401 - the package version, re-exported

#: The public surface (``__all__``). Naming rule (docs/architecture.md, "Names"): a function that
#: changes, makes or moves something is a verb (`load_model`, `alternate`, `save`, `train`, `compare`);
#: a function that measures something is named for the quantity it returns, as `torch.linalg` does
#: (`hessian_eigs`, `landscape`, `latency`, `graph`); `list_*` lists a registry; result types are
#: nouns ending in ``Result`` and live in `surgeon.results`.
_EXPORTS: dict[str, str] = {
    "SurgeonError": "core.errors",
    # models: by name or file, saved with their provenance record
    "load_model": "surgery.loading", "load": "surgery.loading", "save": "model.weights", "read_cfg": "model.weights",
    "list_models": "surgery.loading",
    # the block graph
    "graph": "blockgraph", "create_feature_extractor": "blockgraph",
    # surgery
    "alternate": "surgery.alternet", "replace": "surgery.passes", "remove": "surgery.passes", "insert": "surgery.passes",
    "localize": "surgery.locality", "ensemble": "surgery.ensemble", "register_pass": "surgery.passes:register",
    "list_passes": "surgery.passes",
    # evaluation
    "evaluate": "evaluation.evaluate", "corruption_robustness": "evaluation.robustness",
    "frequency_noise_robustness": "evaluation.frequency_noise", "adversarial_robustness": "evaluation.adversarial",
    "perturbation_stability": "evaluation.stability", "latency": "evaluation.latency",
    # analysis
    "probe": "analysis.probes", "list_probes": "analysis.reductions",
    "hessian_eigs": "analysis.curvature", "hessian_spectrum": "analysis.curvature",
    "hessian_trace": "analysis.curvature", "hessian_density": "analysis.curvature",
    "landscape": "analysis.landscapes", "lesion_study": "analysis.lesions", "trajectory": "analysis.trajectory",
    # training, searches, comparisons
    "train": "training.loop", "run_search": "search", "compare": "comparison.compare",
    "read_comparison": "comparison.compare",
    "logits_of": "model.outputs",
}

#: Names that left the top level: still importable for one release, with a DeprecationWarning
#: naming their new home (`surgeon._compat` owns every old name and module path).
_MOVED: dict[str, str] = {
    "KINDS": "blockgraph", "Block": "blockgraph", "BlockGraph": "blockgraph", "feature_info_mismatch": "blockgraph",
    "load_weights": "model.weights", "read_state_dict": "model.weights", "SurgeonCfg": "model.provenance",
    "Registry": "core.registry", "default_input_size": "model.sizes", "input_size_of": "model.sizes",
    "resolve_input_size": "model.sizes", "PRESETS": "surgery.alternet:ALTERNETS", "ALTERNETS": "surgery.alternet",
    "cifar_stem": "surgery.alternet", "executor": "parallel.executors", "Evaluation": "results:EvaluationResult",
    "LesionResult": "results", "LesionRow": "analysis.lesions", "RECIPES": "training.recipe", "Recipe": "training.recipe",
    "TrainResult": "results", "training_recipe": "training.recipe", "PROBES": "analysis.reductions",
    "Fourier": "analysis.reductions", "ProbeResult": "results:ProbeResult", "ProbeSession": "analysis.probes",
    "Stats": "analysis.reductions", "Variance": "analysis.reductions", "CorruptionResult": "results",
    "FrequencyNoiseResult": "results", "Candidate": "search", "SearchResult": "results", "search_spec": "search",
    "search_report": "search", "AdversarialResult": "results", "Ensemble": "surgery.ensemble",
    "LatencyResult": "results", "TrajectoryResult": "results", "StabilityResult": "results",
    "to_pandas": "core.tables", "LogitsOf": "model.outputs", "Comparison": "results:ComparisonResult",
    "read_recipe": "model.weights:_read_recipe", "search_recipe": "search:search_spec", "SearchRecipe": "search:SearchSpec",
}

#: subpackages and namespaces listed in ``__all__`` (every subpackage also loads on attribute access)
_SUBMODULES = ("results", "data", "layers")

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name in _MOVED:  # not kept: every use warns
        return _compat.moved(f"{__name__}.{name}", _MOVED[name])
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


_compat.install(sys.modules[__name__])
