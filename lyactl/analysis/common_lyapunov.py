"""A common quadratic Lyapunov function ``V = x^T P x`` for a set of update matrices.

Switching between Schur-stable matrices ``A_1..A_m`` (e.g. heavy-ball or Adam at curvatures
sampled from ``[lam_min, lam_max]``) can diverge; a ``P > 0`` with
``A_i^T P A_i - P < 0`` for every ``i`` proves that every switching sequence converges.

Verdicts:

* FAILS   -- some ``A_i`` is not Schur stable, or a product ``A_{i1}...A_{ik}`` (k <= 4, all
  sequences or a seeded sample of them) has ``rho >= 1``: that switching sequence diverges,
  so no common Lyapunov function of any kind exists.
* HOLDS   -- a candidate ``P`` passes the strict inequalities, checked exactly with
  ``eigvalsh``, with ``margin = min_i lambda_min(P - A_i^T P A_i) / lambda_max(P) > tol``.
* UNKNOWN -- neither (the search is not complete).

Search. The LMI ``P > 0, A_i^T P A_i - P < 0`` is a textbook SDP. When cvxpy is installed
(optional; imported only by :func:`lyactl.analysis.sdp.import_cvxpy`) and the cheap search
below fails, :func:`common_lyapunov_sdp` solves ``min t s.t. I <= P <= t I,
A_i^T P A_i - P <= -I`` (CLARABEL): feasible iff a common quadratic Lyapunov function exists, and
``1 / t`` bounds the margin. Without cvxpy (not a core dependency: heavy, platform-specific
wheels) only the cheap search runs: the ``dlyap`` solutions of each matrix and of their mean,
refined by projected subgradient descent on ``max_i lambda_max(A_i^T P A_i - P)`` over
``{P >= eps I, trace P = n}``. Every HOLDS, whichever route found ``P``, is re-checked exactly
with ``eigvalsh``; a failed search answers UNKNOWN, never FAILS.

Over a curvature interval. For ``A(lam) = C0 + lam C1`` (every model of
:mod:`lyactl.analysis.optimizers`) and ``P > 0``, ``F(lam) = A(lam)^T P A(lam) - P`` is a matrix
quadratic in ``lam`` with leading coefficient ``C1^T P C1 >= 0``, hence matrix-convex:
``t F(a) + (1 - t) F(b) - F(t a + (1 - t) b) = t (1 - t) (a - b)^2 C1^T P C1 >= 0``
(derived in :func:`theory.iqc.vertex_convexity`). So ``F < 0`` at the two ends implies
``F < 0`` on all of ``[lam_min, lam_max]``: a HOLDS of
:func:`common_lyapunov_over_curvature` (whose samples include both ends) certifies every
switching sequence of curvatures in the interval, not only the sampled ones
(``details["covers_interval"]``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg
from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams
from lyactl.analysis.systems import as_square_matrix, spectral_radius
from lyactl.verdict import Evidence, Verdict

__all__ = ["common_lyapunov", "common_lyapunov_over_curvature", "common_lyapunov_sdp", "decrease_margin"]


def decrease_margin(P: np.ndarray, As: Sequence[np.ndarray]) -> float:
    """``min(lambda_min(P), min_i lambda_min(P - A_i^T P A_i)) / lambda_max(P)`` (exact eigvalsh)."""
    lam_P = np.linalg.eigvalsh(P)
    worst = min(float(np.linalg.eigvalsh(P - A.T @ P @ A)[0]) for A in As)
    return min(worst, float(lam_P[0])) / float(abs(lam_P[-1]) or 1.0)


def common_lyapunov(As: Sequence[np.ndarray], *, max_product: int = 4, max_products: int = 4000,
                    iters: int = 300, tol: float = 1e-9, seed: int = 0, sdp: bool = True) -> Evidence:
    """Search a common quadratic Lyapunov function for ``As`` (see module docstring).

    ``details["P"]`` holds ``P`` (list of lists) when the verdict is HOLDS; a failing
    matrix index or product sequence is in ``details["witness"]``; ``details["search"]`` says
    which route found ``P``. ``sdp=False`` (or cvxpy absent) skips the SDP. Cost: O(m n^3)
    per subgradient iteration, plus up to ``max_products`` products of length
    <= ``max_product``, plus one SDP with m LMIs of size n when the search fails.
    """
    As = _validate(As)
    for i, A in enumerate(As):
        rho = spectral_radius(A)
        if not rho < 1 - tol:
            return Evidence(Verdict.FAILS if rho > 1 + tol else Verdict.UNKNOWN, "common-lyapunov",
                            1 - rho, ("rho(A_i) < 1",), {}, {"witness": [i], "spectral_radius": rho})
    seq, rho_k = _diverging_product(As, max_product, max_products, tol, seed)
    if seq is not None:
        return Evidence(Verdict.FAILS, "common-lyapunov", 1 - rho_k, ("rho(A_i1 ... A_ik)^(1/k) < 1",),
                        {}, {"witness": list(seq), "spectral_radius_per_step": rho_k})
    P, margin = _search(As, iters)
    search = "dlyap+subgradient"
    if not margin > tol and sdp:
        P_sdp = common_lyapunov_sdp(As)
        if P_sdp is not None and decrease_margin(P_sdp, As) > margin:
            P, margin, search = P_sdp, decrease_margin(P_sdp, As), "sdp"
    conds = ("P > 0", "A_i^T P A_i - P < 0 for all i")
    if margin > tol:
        return Evidence(Verdict.HOLDS, "common-lyapunov", margin, conds, {},
                        {"P": P.tolist(), "m": len(As), "search": search})
    return Evidence(Verdict.UNKNOWN, "common-lyapunov", margin, conds, {},
                    {"best_margin": margin, "m": len(As)})


def common_lyapunov_over_curvature(model: OptimizerModel, p: OptimizerParams, lam_min: float,
                                   lam_max: float, samples: int = 8, **kwargs: object) -> Evidence:
    """:func:`common_lyapunov` of ``model``'s update matrices at ``samples`` curvatures
    spaced evenly in ``[lam_min, lam_max]`` (both ends included)."""
    if not (math.isfinite(lam_min) and math.isfinite(lam_max) and lam_min <= lam_max):
        raise InvalidArgumentError(bad_arg("lam_min, lam_max", "finite numbers with lam_min <= lam_max",
                                           (lam_min, lam_max)))
    if not (isinstance(samples, int) and samples >= 1):
        raise InvalidArgumentError(bad_arg("samples", "an int >= 1", samples))
    lams = np.linspace(lam_min, lam_max, samples)
    ev = common_lyapunov([model.matrix(float(l), p) for l in lams], **kwargs)
    if ev.verdict is Verdict.HOLDS:  # ends sampled + convexity in lam (module docstring)
        ev = replace(ev, details={**ev.details, "covers_interval": [float(lam_min), float(lam_max)]})
    return ev


def common_lyapunov_sdp(As: Sequence[np.ndarray]) -> np.ndarray | None:
    """``P`` solving ``min t s.t. I <= P <= t I, A_i^T P A_i - P <= -I`` for all ``i``, or None
    when cvxpy is absent, the SDP is infeasible or the solver fails (the caller re-checks ``P``).

    Cost: one SDP with ``m`` LMIs of size ``n`` (interior point, about O(m n^6) per iteration).
    """
    try:
        from lyactl.analysis.sdp import import_cvxpy

        cp = import_cvxpy()
    except ImportError:
        return None
    As = _validate(As)
    n = As[0].shape[0]
    P, t = cp.Variable((n, n), symmetric=True), cp.Variable()
    cons = [P >> np.eye(n), P << t * np.eye(n)]
    cons += [(A.T @ P @ A - P + (A.T @ P @ A - P).T) / 2 << -np.eye(n) for A in As]
    problem = cp.Problem(cp.Minimize(t), cons)
    for name in (s for s in ("CLARABEL", "SCS") if s in cp.installed_solvers()):
        try:
            problem.solve(solver=name)
        except cp.error.SolverError:
            continue
        if P.value is not None and np.all(np.isfinite(P.value)):
            return (P.value + P.value.T) / 2
        if problem.status in ("infeasible", "infeasible_inaccurate"):
            return None
    return None


def _validate(As: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(As, np.ndarray) and As.ndim == 2:
        raise InvalidArgumentError(bad_arg("As", "a sequence of matrices (not one matrix)", As.shape))
    out = [as_square_matrix(A, f"As[{i}]") for i, A in enumerate(As)]
    if not out:
        raise InvalidArgumentError(bad_arg("As", "at least one matrix", 0))
    if any(A.shape != out[0].shape for A in out):
        raise ShapeError(bad_arg("As", "matrices of one shape", [A.shape for A in out]))
    return out


def _diverging_product(As, max_product, max_products, tol, seed):
    """First product (length 2..max_product) whose per-step spectral radius is >= 1."""
    m, rng = len(As), np.random.default_rng(seed)
    for k in range(2, max_product + 1):
        if m ** k <= max_products:
            seqs = itertools.product(range(m), repeat=k)
        else:
            seqs = (tuple(rng.integers(0, m, k)) for _ in range(max_products))
        for seq in seqs:
            M = As[seq[0]]
            for j in seq[1:]:
                M = As[j] @ M
            rho = spectral_radius(M) ** (1.0 / k)
            if rho > 1 + tol:
                return seq, rho
    return None, math.nan


def _search(As: list[np.ndarray], iters: int) -> tuple[np.ndarray, float]:
    """Best of the dlyap starts and their projected-subgradient refinement."""
    import control  # declared dependency; dlyap solves A X A^T - X + Q = 0, hence A.T below

    n = As[0].shape[0]
    starts = [np.eye(n)]
    for A in As + [sum(As) / len(As)]:
        try:
            P = np.asarray(control.dlyap(A.T, np.eye(n)), dtype=np.float64)
        except (ValueError, np.linalg.LinAlgError, ArithmeticError):
            continue
        if np.all(np.isfinite(P)):
            starts.append(_project((P + P.T) / 2))
    best = max(starts, key=lambda P: decrease_margin(P, As))
    best_margin = decrease_margin(best, As)
    P = best
    for k in range(1, iters + 1):
        worst, i_worst = -math.inf, 0
        for i, A in enumerate(As):  # subgradient of max_i lambda_max(A_i^T P A_i - P)
            w, V = np.linalg.eigh(A.T @ P @ A - P)
            if w[-1] > worst:
                worst, i_worst, v = w[-1], i, V[:, -1]
        A = As[i_worst]
        G = np.outer(A @ v, A @ v) - np.outer(v, v)
        P = _project(P - (0.2 * n / math.sqrt(k)) * G / (np.linalg.norm(G) or 1.0))
        margin = decrease_margin(P, As)
        if margin > best_margin:
            best, best_margin = P, margin
    return best, best_margin


def _project(P: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Onto ``{P = P^T, P >= eps I, trace P = n}`` (eigenvalue clipping, then rescaling)."""
    n = P.shape[0]
    w, V = np.linalg.eigh((P + P.T) / 2)
    w = np.maximum(w, eps * max(float(np.max(np.abs(w))), 1e-300))
    P = (V * w) @ V.T
    return n * P / np.trace(P)
