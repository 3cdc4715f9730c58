"""The paper's whole comparison for the user's models, in one report.

`compare` (`compare`, `read_comparison`: every measure on every model, resumable), `measures`
(the measures' names, sizes and runners), `claims` (the paper's claims, one rule each, with
verdicts), `report` (the self-contained HTML report) and `figures` (its figures). The top layer
of the library.
"""

from surgeon.comparison import claims, compare, figures, measures, report  # noqa: F401  (each module is an attribute of the package)
from surgeon.comparison.measures import PAPER, QUICK, Settings  # noqa: F401  (the sizes of a comparison: its options object)
