"""Every result type an analysis returns, in one namespace: ``surgeon.results.EigResult``, ...

Each mixes in `surgeon.core.tables.Tabular`, the one result interface: ``to_dict()``, ``tidy()``
(rows of plain values), ``to_pandas()``, ``save(path)`` (JSON or CSV by suffix; refuses to
overwrite without ``force=True``), ``plot()`` (a matplotlib Figure) and ``_repr_html_`` (a table
in a notebook). ``tests/test_results.py`` walks this list and checks the whole interface.
"""

from surgeon.analysis.curvature import DensityResult, SpectrumResult, TraceResult
from surgeon.analysis.eigensolvers import EigResult
from surgeon.analysis.landscapes import LandscapeResult
from surgeon.analysis.lesions import LesionResult
from surgeon.analysis.probes import ProbeResult
from surgeon.analysis.reductions import FourierResult
from surgeon.analysis.trajectory import TrajectoryResult
from surgeon.comparison.claims import ClaimResult
from surgeon.comparison.compare import ComparisonResult
from surgeon.evaluation.adversarial import AdversarialResult
from surgeon.evaluation.evaluate import EvaluationResult
from surgeon.evaluation.latency import LatencyResult
from surgeon.evaluation.frequency_noise import FrequencyNoiseResult
from surgeon.evaluation.robustness import CorruptionResult
from surgeon.evaluation.stability import StabilityResult
from surgeon.search.report import SearchResult
from surgeon.training.loop import TrainResult

__all__ = [
    "AdversarialResult", "ClaimResult", "ComparisonResult", "CorruptionResult", "DensityResult", "EigResult",
    "EvaluationResult", "FourierResult", "FrequencyNoiseResult", "LandscapeResult", "LatencyResult", "LesionResult",
    "ProbeResult", "SearchResult", "SpectrumResult", "StabilityResult", "TraceResult", "TrainResult",
    "TrajectoryResult",
]
