"""Small semidefinite programs in clarabel's native conic form (no modelling layer).

A problem over ``x`` in ``R^N``::

    minimise  c^T x   s.t.   G x = h,   x_i >= 0 (i in nonneg),
                             F_j(x) = F_j0 + sum_i x_i F_ji  >=  0   (PSD, each j).

Clarabel solves ``min q^T x s.t. A x + s = b, s in K``; with ``s = svec(F(x))`` an LMI is the
block ``A = -[svec(F_1) .. svec(F_N)], b = svec(F_0)`` of the cone ``PSDTriangleConeT(k)``.
Clarabel's ``svec`` (the scaled triangle): the upper triangle of ``X`` read column by column,
``X_00, X_01, X_11, X_02, X_12, X_22, ...``, off-diagonal entries times ``sqrt 2``, so that
``svec(X) . svec(Y) = trace(X Y)`` (:func:`svec`, :func:`smat`; ``tests/test_sdp.py`` checks
the packing against SDPs with known optima).

Why by hand rather than through cvxpy: the LMIs of :mod:`lyactl.analysis.rates` have a few
dozen scalars, and ``import cvxpy`` alone costs about a second, several times a whole
``lyactl rate`` call; ``import clarabel`` costs milliseconds. cvxpy stays the independent
check of this packing in the tests, and the modelling layer of
:func:`lyactl.analysis.common_lyapunov.common_lyapunov_sdp` (imported by :func:`import_cvxpy`).

clarabel (extra ``sdp``) is imported lazily in :func:`import_clarabel` only; cvxpy (optional,
not in the extra) in :func:`import_cvxpy` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

__all__ = [
    "AffineLMI",
    "SdpSolution",
    "svec",
    "smat",
    "sym_basis",
    "solve_sdp",
    "import_clarabel",
    "import_cvxpy",
]

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, eq=False)
class AffineLMI:
    """``F(x) = F0 + sum_i x_i Fs[i] >= 0``: ``F0`` (k, k) and ``Fs`` (N, k, k), symmetric."""

    F0: np.ndarray
    Fs: np.ndarray

    def __post_init__(self) -> None:
        F0, Fs = np.asarray(self.F0, dtype=np.float64), np.asarray(self.Fs, dtype=np.float64)
        k = F0.shape[0] if F0.ndim == 2 else -1
        if F0.shape != (k, k) or Fs.ndim != 3 or Fs.shape[1:] != (k, k):
            raise ShapeError(bad_arg("F0, Fs", "shapes (k, k) and (N, k, k)", (F0.shape, Fs.shape)))
        object.__setattr__(self, "F0", F0)
        object.__setattr__(self, "Fs", Fs)

    def at(self, x: np.ndarray) -> np.ndarray:
        """``F(x)`` (k, k)."""
        return self.F0 + np.tensordot(np.asarray(x, dtype=np.float64), self.Fs, axes=1)


@dataclass(frozen=True, eq=False)
class SdpSolution:
    """``status``: "solved", "infeasible" (primal infeasibility certified, exactly or almost)
    or clarabel's status name otherwise; ``x`` the last iterate (None if not finite)."""

    status: str
    x: np.ndarray | None


def _triangle(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle in column-major order (clarabel's)."""
    rows, cols = np.tril_indices(k)  # (r >= c) row-major == (c <= r) column-major, transposed
    return cols, rows


def svec(X: np.ndarray) -> np.ndarray:
    """Clarabel's scaled ``svec`` of a symmetric (k, k) ``X``: length ``k (k + 1) / 2``."""
    X = np.asarray(X, dtype=np.float64)
    i, j = _triangle(X.shape[0])
    return X[i, j] * np.where(i == j, 1.0, _SQRT2)


def smat(s: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`svec`: the symmetric (k, k) matrix."""
    i, j = _triangle(k)
    s = np.asarray(s, dtype=np.float64)
    if s.shape != (i.size,):
        raise ShapeError(bad_arg("s", f"a vector of length {i.size}", s.shape))
    X = np.zeros((k, k))
    X[i, j] = s / np.where(i == j, 1.0, _SQRT2)
    X[j, i] = X[i, j]
    return X


def sym_basis(k: int) -> np.ndarray:
    """(k (k + 1) / 2, k, k): ``X = sum_t x_t basis[t]`` with ``x_t = X_ij`` (upper triangle,
    clarabel's order), i.e. ``basis[t] = e_i e_j^T + e_j e_i^T`` (``e_i e_i^T`` on the diagonal)."""
    i, j = _triangle(k)
    basis = np.zeros((i.size, k, k))
    basis[np.arange(i.size), i, j] = 1.0
    basis[np.arange(i.size), j, i] = 1.0
    return basis


def solve_sdp(n_vars: int, lmis: Sequence[AffineLMI], *, c: np.ndarray | None = None,
              nonneg: Sequence[int] = (), G: np.ndarray | None = None, h: np.ndarray | None = None,
              max_iter: int = 200) -> SdpSolution:
    """Solve the problem of the module docstring with ``clarabel.DefaultSolver``.

    Rows: the equalities (``ZeroConeT``), then ``x_i >= 0`` (``NonnegativeConeT``), then one
    ``PSDTriangleConeT(k_j)`` per LMI. ``c = None`` is a feasibility problem (``q = 0``).
    Cost: an interior-point method on ``N`` variables and ``sum k_j (k_j + 1) / 2`` cone rows.
    """
    clarabel = import_clarabel()
    from scipy import sparse

    blocks, rhs, cones = _rows(n_vars, lmis, nonneg, G, h, clarabel)
    A = sparse.csc_matrix(np.vstack(blocks))
    q = np.zeros(n_vars) if c is None else np.asarray(c, dtype=np.float64)
    settings = clarabel.DefaultSettings()
    settings.verbose, settings.max_iter = False, max_iter
    solver = clarabel.DefaultSolver(sparse.csc_matrix((n_vars, n_vars)), q, A, np.concatenate(rhs), cones,
                                    settings)
    sol = solver.solve()
    name = str(sol.status).rsplit(".", 1)[-1]
    status = {"Solved": "solved", "PrimalInfeasible": "infeasible",
              "AlmostPrimalInfeasible": "infeasible"}.get(name, name)
    x = np.asarray(sol.x, dtype=np.float64)
    return SdpSolution(status, x if x.shape == (n_vars,) and np.all(np.isfinite(x)) else None)


def _rows(n_vars: int, lmis: Sequence[AffineLMI], nonneg: Sequence[int], G: np.ndarray | None,
          h: np.ndarray | None, clarabel: Any) -> tuple[list[np.ndarray], list[np.ndarray], list[Any]]:
    """``(A blocks, b blocks, cones)`` in the row order of :func:`solve_sdp`."""
    blocks, rhs, cones = [], [], []
    if G is not None:
        G = np.atleast_2d(np.asarray(G, dtype=np.float64))
        h = np.zeros(G.shape[0]) if h is None else np.asarray(h, dtype=np.float64).reshape(-1)
        if G.shape[1] != n_vars or h.shape != (G.shape[0],):
            raise ShapeError(bad_arg("G, h", f"shapes (r, {n_vars}) and (r,)", (G.shape, h.shape)))
        blocks.append(G)
        rhs.append(h)
        cones.append(clarabel.ZeroConeT(G.shape[0]))
    if len(nonneg):
        idx = np.asarray(nonneg, dtype=int)
        if idx.min() < 0 or idx.max() >= n_vars:
            raise InvalidArgumentError(bad_arg("nonneg", f"indices in [0, {n_vars})", list(nonneg)))
        blocks.append(-np.eye(n_vars)[idx])
        rhs.append(np.zeros(idx.size))
        cones.append(clarabel.NonnegativeConeT(idx.size))
    for j, lmi in enumerate(lmis):
        if lmi.Fs.shape[0] != n_vars:
            raise ShapeError(bad_arg(f"lmis[{j}].Fs", f"{n_vars} coefficient matrices", lmi.Fs.shape[0]))
        k = lmi.F0.shape[0]
        blocks.append(-np.stack([svec(F) for F in lmi.Fs], axis=1))
        rhs.append(svec(lmi.F0))
        cones.append(clarabel.PSDTriangleConeT(k))
    if not blocks:
        raise InvalidArgumentError(bad_arg("lmis", "at least one constraint", 0))
    return blocks, rhs, cones


def import_clarabel() -> Any:
    """The one lazy import of clarabel in lyactl (extra ``sdp``); ImportError names the extra."""
    try:
        import clarabel
    except ImportError as exc:
        raise ImportError("semidefinite certificates need clarabel: pip install 'lyactl[sdp]'") from exc
    return clarabel


def import_cvxpy() -> Any:
    """The one lazy import of cvxpy in lyactl (optional: only
    :func:`lyactl.analysis.common_lyapunov.common_lyapunov_sdp` uses it); ImportError says so."""
    try:
        import cvxpy
    except ImportError as exc:
        raise ImportError("the common-Lyapunov SDP needs cvxpy: pip install cvxpy") from exc
    return cvxpy
