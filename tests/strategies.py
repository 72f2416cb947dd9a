"""Shared hypothesis strategies for lyactl tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "seeds",
    "matrix_with_radius",
    "stable_or_unstable_matrices",
    "optimizer_points",
    "random_complex",
    "stable_diagonal_systems",
    "stable_dense_systems",
    "well_conditioned_similarity",
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


# --- stable LTI systems (x+ = A x + B u, y = C x) for Gramian / balanced-truncation tests ---

def random_complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard complex Gaussian entries (real and imaginary parts N(0, 1/2))."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


@st.composite
def stable_diagonal_systems(draw, max_n: int = 6, max_io: int = 3, complex_: bool = True,
                            rho_max: float = 0.95):
    """``(lam, B, C)``: ``lam`` (N,) with ``|lam| <= rho`` (rho drawn in [0.3, rho_max]),
    complex with phases in [0, 2 pi) when ``complex_`` (B, C complex too), else real in
    ``[-rho, rho]`` with real B, C. ``B`` (N, H), ``C`` (P, N), H, P in [1, max_io]."""
    n, h, p = draw(st.integers(1, max_n)), draw(st.integers(1, max_io)), draw(st.integers(1, max_io))
    rho = draw(st.floats(0.3, rho_max))
    rng = np.random.default_rng(draw(seeds))
    if complex_:
        lam = rho * np.sqrt(rng.uniform(0, 1, n)) * np.exp(2j * np.pi * rng.uniform(0, 1, n))
        return lam, random_complex(rng, (n, h)), random_complex(rng, (p, n))
    lam = rng.uniform(-rho, rho, n)
    return lam, rng.standard_normal((n, h)), rng.standard_normal((p, n))


@st.composite
def stable_dense_systems(draw, max_n: int = 6, max_io: int = 3, rho_max: float = 0.95):
    """``(A, B, C)`` real, ``A`` (N, N) with spectral radius drawn in [0.3, rho_max]."""
    n, h, p = draw(st.integers(1, max_n)), draw(st.integers(1, max_io)), draw(st.integers(1, max_io))
    rho, seed = draw(st.floats(0.3, rho_max)), draw(seeds)
    rng = np.random.default_rng(seed + 1)
    return matrix_with_radius(n, rho, seed), rng.standard_normal((n, h)), rng.standard_normal((p, n))


def well_conditioned_similarity(n: int, seed: int, complex_: bool = False) -> np.ndarray:
    """``I + E`` with ``||E||_2 = 0.5`` (so ``cond <= 3``), real or complex."""
    rng = np.random.default_rng(seed)
    E = random_complex(rng, (n, n)) if complex_ else rng.standard_normal((n, n))
    return np.eye(n) + 0.5 * E / np.linalg.norm(E, 2)
