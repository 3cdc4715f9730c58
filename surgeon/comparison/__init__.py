"""The paper's whole comparison for the user's models, in one report.

`compare` (`compare`, `read_comparison`: every measure on every model, resumable), `claims`
(the paper's claims, one rule each, with verdicts) and `report` (the self-contained HTML report). The top layer of the library.
"""

from surgeon.comparison import claims, compare, report  # noqa: F401  (each module is an attribute of the package)
