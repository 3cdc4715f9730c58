"""Analysis: the paper's measurements of how a model computes.

`probes` (Fourier Δ log amplitude and feature-map variance per block, Figs. 2 and 9),
`curvature` (Hessian spectra, trace and density, Figs. 1, 4 and 5), `landscapes` (loss
landscapes), `lesions` (removing blocks, Fig. 10), `trajectory` (measures along training).
Imports the layers below it.
"""

from surgeon.analysis import probes, curvature, landscapes, lesions, trajectory  # noqa: F401  (each module is an attribute of the package)
