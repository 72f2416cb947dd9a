"""Shared hypothesis strategies for lyactl tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "seeds",
    "matrix_with_radius",
    "stable_or_unstable_matrices",
    "optimizer_points",
]

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def matrix_with_radius(n: int, rho: float, seed: int) -> np.ndarray:
    """A random real ``(n, n)`` matrix scaled to spectral radius exactly ``rho`` (up to rounding)."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    r = float(np.max(np.abs(np.linalg.eigvals(M))))
    return M * (rho / r)


@st.composite
def stable_or_unstable_matrices(draw, max_n: int = 6, gap: float = 0.02):
    """``(A, rho)`` with ``rho`` drawn away from 1 by at least ``gap`` (stable or not)."""
    n = draw(st.integers(1, max_n))
    rho = draw(st.one_of(st.floats(0.05, 1 - gap), st.floats(1 + gap, 2.0)))
    seed = draw(seeds)
    return matrix_with_radius(n, rho, seed), rho


@st.composite
def optimizer_points(draw, wd: bool = True):
    """``(eta, lam, beta, wd)`` with ``eta*lam`` spread across [-1, 60] and ``eta*wd < 0.5``."""
    eta = draw(st.floats(1e-3, 1.0))
    h = draw(st.one_of(st.floats(-1.0, 5.0), st.floats(5.0, 60.0)))
    beta = draw(st.floats(0.0, 0.99))
    d = draw(st.floats(0.0, 0.5)) if wd else 0.0
    return eta, h / eta, beta, d / eta
