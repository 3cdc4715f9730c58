"""surgeon: model surgery and instrumentation for vision networks.

Block graphs of any timm / torchvision classifier, surgery passes (AlterNet), streaming probes and
curvature analyses from "How Do Vision Transformers Work?" (Park & Kim, ICLR 2022).
"""

from .errors import SurgeonError
from .graph import KINDS, Block, BlockGraph, feature_info_mismatch, graph
from . import data, layers, passes
from .io import load, load_weights, read_recipe, read_state_dict, save
from .models import default_input_size, load_model
from .passes import PRESETS, alternate, cifar_stem, insert, remove, replace
from .curvature import hessian_density, hessian_eigs, hessian_spectrum, hessian_trace
from .landscapes import landscape
from .evaluation import Evaluation, evaluate
from .lesions import LesionResult, LesionRow, lesion_study
from .training import PRESETS as RECIPES, Recipe, TrainResult, train, training_recipe
from .probes import PROBES, Fourier, ProbeResults, ProbeSession, Stats, Variance, probe
from .robustness import CorruptionResult, FrequencyNoiseResult, corruption_robustness, frequency_noise_robustness

__version__ = "0.1.0"

__all__ = [
    "corruption_robustness",
    "frequency_noise_robustness",
    "CorruptionResult",
    "FrequencyNoiseResult",
    "KINDS",
    "PRESETS",
    "alternate",
    "cifar_stem",
    "data",
    "evaluate",
    "lesion_study",
    "LesionResult",
    "LesionRow",
    "RECIPES",
    "Recipe",
    "TrainResult",
    "train",
    "training_recipe",
    "Evaluation",
    "hessian_eigs",
    "hessian_trace",
    "hessian_density",
    "hessian_spectrum",
    "landscape",
    "probe",
    "PROBES",
    "Fourier",
    "Variance",
    "Stats",
    "ProbeResults",
    "ProbeSession",
    "insert",
    "layers",
    "passes",
    "load",
    "read_recipe",
    "remove",
    "replace",
    "save",
    "Block",
    "BlockGraph",
    "SurgeonError",
    "default_input_size",
    "feature_info_mismatch",
    "graph",
    "load_model",
    "load_weights",
    "read_state_dict",
]

from .search import Candidate, SearchResult, run_search, search_recipe, search_report

__all__ += ["Candidate", "SearchResult", "run_search", "search_recipe", "search_report"]
