"""Small numerical helpers shared by analyses and figures (numpy only)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["density_on_grid"]


def density_on_grid(nodes: np.ndarray, weights: np.ndarray, *, points: int = 400, sigma: float | None = None,
                    grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian-smoothed density of quadrature nodes / weights, averaged over start vectors."""
    lo, hi = float(nodes.min()), float(nodes.max())
    span = max(hi - lo, 1e-12)
    sigma = sigma or 0.01 * span
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, points) if grid is None else grid
    kern = np.exp(-0.5 * ((grid[:, None] - nodes.reshape(1, -1)) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    dens = kern @ weights.reshape(-1) / len(nodes)
    return grid, dens, sigma
