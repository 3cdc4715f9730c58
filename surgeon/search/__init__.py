"""Build-up searches: the paper's AlterNet design procedure (PAPER.md, "AlterNet and the build-up
rules"), automated, resumable and parallel. The rules, search specs, outputs, resume and the backends
are explained in docs/architecture.md, "Build-up search".

    result = surgeon.run_search("recipes/digits_buildup.toml", "runs/digits",
                                run=surgeon.parallel.Run(executor=surgeon.parallel.executor("local", workers=2)))
    surgeon search recipes/digits_buildup.toml --out runs/digits --workers 2

A *search spec* is the file that describes one search (a TOML file with the build-up rules, or a
Python file with its own generator); its ``[train]`` section names the *training recipe* every
candidate trains with. (surgeon 0.1 called the spec a search recipe: `search_recipe` and
`SearchRecipe` still import for one release, with a DeprecationWarning.)

Modules: `spec` (reading and validating a search spec), `rules` (`Search` and the build-up
generator), `jobs` (training one candidate on an executor), `engine` (the step loop, decisions,
resume, results.jsonl, the best model), `report` (`SearchResult`, the chart).
"""

import warnings

from surgeon.core.errors import SurgeonDeprecationWarning

from surgeon.search.engine import _shared_folder, run_search  # noqa: F401 - _shared_folder: tests/test_ray.py
from surgeon.search.jobs import Candidate, Evaluator, Job, Setup, build_model, train_candidate
from surgeon.search.spec import METRICS, SearchSpec, search_spec
from surgeon.search.report import SearchResult, read_records, search_report
from surgeon.search.rules import Search, Steps, buildup

__all__ = [
    "METRICS",
    "Candidate",
    "Evaluator",
    "Job",
    "Search",
    "SearchSpec",
    "SearchResult",
    "Setup",
    "Steps",
    "build_model",
    "buildup",
    "read_records",
    "run_search",
    "search_spec",
    "search_report",
    "train_candidate",
]


_RENAMED = {"search_recipe": "search_spec", "SearchRecipe": "SearchSpec"}


def __getattr__(name: str):
    if name in _RENAMED:
        warnings.warn(f"surgeon.search.{name} is renamed {_RENAMED[name]} (a search spec; 'recipe' means a training "
                      "recipe)", SurgeonDeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
