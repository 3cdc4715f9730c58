"""Analysis: the paper's measurements of how a model computes.

`probes` (`probe`: hooks that stream every block's output through the probes), `reductions`
(the probes: Fourier Δ log amplitude and feature-map variance per block, Figs. 2 and 9, statistics,
norm), `maps` (a block output read as spatial maps),
`curvature` (Hessian spectra, trace and density, Figs. 1, 4 and 5), `hessian` (the objective and
Hessian-vector products), `eigensolvers` (Lanczos, power iteration), `landscapes` (loss
landscapes), `lesions` (removing blocks, Fig. 10), `trajectory` (measures along training).
Imports the layers below it.
"""

from surgeon.analysis import (maps, reductions, probes, hessian, eigensolvers, curvature,  # noqa: F401  (each module
                              landscapes, lesions, trajectory)  # is an attribute of the package)
