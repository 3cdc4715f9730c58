"""Analysis: the paper's measurements of how a model computes.

`probes` (`probe`: hooks that stream every block's output through the probes), `reductions`
(the probes: Fourier Δ log amplitude and feature-map variance per block, Figs. 2 and 9, statistics,
norm), `maps` (a block output read as spatial maps),
`curvature` (Hessian spectra, trace and density, Figs. 1, 4 and 5), `hessian` (the objective and
Hessian-vector products), `objective` (`Objective`: the measured loss's settings, one options object
for the curvature and landscape functions), `options` (`Solver`: the eigen-solver's settings;
`Lattice`: where a landscape is evaluated), `eigensolvers` (Lanczos, power iteration), `landscapes` (loss
landscapes), `lesions` (removing blocks, Fig. 10), `trajectory` (measures along training).
Imports the layers below it.
"""

from surgeon.analysis import (maps, reductions, probes, hessian, objective, options, eigensolvers, curvature,  # noqa: F401  (each
                              landscapes, lesions, trajectory)  # module is an attribute of the package)
from surgeon.analysis.objective import Objective  # noqa: F401  (the options objects of curvature and landscapes)
from surgeon.analysis.options import Lattice, Solver  # noqa: F401
