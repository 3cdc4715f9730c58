"""Build-up searches: the paper's AlterNet design procedure (PAPER.md, "AlterNet and the build-up
rules"), automated, resumable and parallel. The rules, recipes, outputs, resume and the backends
are explained in docs/architecture.md, "Build-up search".

    result = surgeon.run_search("recipes/digits_buildup.toml", "runs/digits", workers=2)
    surgeon search recipes/digits_buildup.toml --out runs/digits --workers 2

Modules: `recipe` (reading and validating a search recipe), `rules` (`Search` and the build-up
generator), `jobs` (training one candidate on an executor), `engine` (the step loop, decisions,
resume, results.jsonl, the best model), `report` (`SearchResult`, the chart).
"""

from .engine import _shared_folder, run_search  # noqa: F401 - _shared_folder: tests/test_ray.py
from .jobs import Candidate, Evaluator, Job, Setup, build_model, train_candidate
from .recipe import METRICS, SearchRecipe, search_recipe
from .report import SearchResult, read_records, search_report
from .rules import Search, Steps, buildup

__all__ = [
    "METRICS",
    "Candidate",
    "Evaluator",
    "Job",
    "Search",
    "SearchRecipe",
    "SearchResult",
    "Setup",
    "Steps",
    "build_model",
    "buildup",
    "read_records",
    "run_search",
    "search_recipe",
    "search_report",
    "train_candidate",
]
