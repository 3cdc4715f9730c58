"""Figures and reports in the paper's style.

`plots` (one function per figure: blocks on the x axis, stages shaded) and `report` (the
self-contained HTML report of a comparison). Imports the layers below it.
"""

from surgeon.viz import plots, report  # noqa: F401  (each module is an attribute of the package)
