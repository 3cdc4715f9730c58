"""Figures in the paper's style: blocks on the x axis, stages shaded, one colour per model.

`plots` (block graphs, probe spectra and depth curves, Hessian spectra and densities, loss
landscapes, `save_figure`) and `evaluation` (lesions, reliability, robustness, searches, attacks,
trajectories, stability). Every figure function is re-exported here (``surgeon.viz.plot_lesions``).
This layer sits below the analyses: a figure reads a result by its fields, and each result's
``plot()`` draws itself with the function here. Imports `surgeon.blockgraph`, `surgeon.parallel`
and `surgeon.core`.
"""

from surgeon.viz import evaluation, plots  # noqa: F401
from surgeon.viz.evaluation import *  # noqa: F401,F403
from surgeon.viz.plots import *  # noqa: F401,F403
