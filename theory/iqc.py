"""The rate LMI of :mod:`lyactl.analysis.rates`, derived from the Lyapunov decrease, executable.

Each function returns ``(derived, independent_check)``; ``tests/test_theory_iqc.py`` asserts
they agree.

* :func:`lmi_from_decrease` -- expand ``V(eta+) - rho^2 V(eta) + lam_s p q + lam_o p (q - rho^2 zeta)``
  (``V = eta^T P eta``, ``eta = (xi, zeta)``, ``xi+ = A xi + B u``, ``zeta+ = q``) in sympy and read
  off its matrix on ``v = (xi, zeta, u)``; check: lyactl's numeric ``lmi_matrix`` at seeded points.
* :func:`off_by_one_lemma` -- the weighted off-by-one IQC ``S_N = sum_k rho^{-2k} p_k (q_k -
  rho^2 q_{k-1}) >= 0`` written as an exact sympy identity ``S_N = l * sum c_i I_i`` with
  coefficients ``c_i >= 0`` for ``0 < rho <= 1`` and ``I_i >= 0`` the interpolation inequalities of
  the convex, ``l``-smooth ``g = f - m |y|^2 / 2`` (``l = L - m``); check: ``S_N`` evaluated on
  random functions of ``S(m, L)`` at random points.
* :func:`vertex_convexity` -- for ``A(lam) = C0 + lam C1`` and ``P > 0``,
  ``t F(a) + (1 - t) F(b) - F(t a + (1 - t) b) = t (1 - t) (a - b)^2 C1^T P C1 >= 0`` with
  ``F = A^T P A - P`` (why two vertex LMIs certify a curvature interval); check: numpy eigenvalues.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from lyactl.analysis.lure import LureSystem
from lyactl.analysis.optimizers import OptimizerParams, heavy_ball
from lyactl.analysis.rates import RateCertificate, lmi_matrix

__all__ = ["decrease_expression", "lmi_from_decrease", "off_by_one_lemma", "vertex_convexity"]


def decrease_expression(n: int = 2) -> tuple[sp.Expr, sp.Matrix, dict[str, object]]:
    """``(expr, v, syms)``: the decrease condition as a polynomial in ``v = (xi, zeta, u)``."""
    A, B, C = sp.Matrix(n, n, sp.symbols(f"a0:{n * n}")), sp.Matrix(sp.symbols(f"b0:{n}")), \
        sp.Matrix(1, n, sp.symbols(f"c0:{n}"))
    k = n + 1
    P = sp.Matrix(k, k, lambda i, j: sp.Symbol(f"P{min(i, j)}{max(i, j)}"))
    m, L, rho, lam_s, lam_o = sp.symbols("m L rho lam_s lam_o", real=True)
    xi, zeta, u = sp.Matrix(sp.symbols(f"xi0:{n}")), sp.Symbol("zeta"), sp.Symbol("u")
    y = (C * xi)[0]
    p, q = u - m * y, L * y - u
    eta, eta_next = sp.Matrix([*xi, zeta]), sp.Matrix([*(A * xi + B * u), q])
    expr = (eta_next.T * P * eta_next)[0] - rho**2 * (eta.T * P * eta)[0] + lam_s * p * q + lam_o * p * (q - rho**2 * zeta)
    syms = {"A": A, "B": B, "C": C, "P": P, "m": m, "L": L, "rho": rho, "lam_s": lam_s, "lam_o": lam_o}
    return sp.expand(expr), sp.Matrix([*xi, zeta, u]), syms


def lmi_from_decrease(n: int = 2, n_points: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(M_derived, M_lyactl)`` at ``n_points`` seeded random data; ``M_derived`` is the
    sympy Hessian / 2 of :func:`decrease_expression` (asserted to reproduce ``expr`` exactly)."""
    expr, v, s = decrease_expression(n)
    M = sp.hessian(expr, list(v)) / 2
    if sp.expand((v.T * M * v)[0] - expr) != 0:  # a quadratic form, nothing else
        raise AssertionError("decrease condition is not a quadratic form in (xi, zeta, u)")
    rng, out = np.random.default_rng(seed), []
    for _ in range(n_points):
        A, B, C = rng.standard_normal((n, n)), rng.standard_normal(n), rng.standard_normal(n)
        G = rng.standard_normal((n + 1, n + 1))
        P = G @ G.T + np.eye(n + 1)
        m, L = sorted(rng.uniform(0.1, 10, 2))
        rho, lam_s, lam_o = rng.uniform(0.1, 1), rng.uniform(0, 5), rng.uniform(0, 5)
        sub = {s["m"]: m, s["L"]: L, s["rho"]: rho, s["lam_s"]: lam_s, s["lam_o"]: lam_o}
        for name, val in (("A", A), ("B", B.reshape(-1, 1)), ("C", C.reshape(1, -1)), ("P", P)):
            sub.update({s[name][i, j]: float(val[i, j]) for i in range(val.shape[0]) for j in range(val.shape[1])})
        derived = np.array(M.subs(sub), dtype=float)
        cert = RateCertificate(LureSystem(A, B, C), m, L, rho, P, lam_s, lam_o, True)
        out.append((derived, lmi_matrix(cert)))
    return out


def _interp(g, y, p, a, b, ell):
    """``I(a, b) = g_a - g_b - p_b (y_a - y_b) - (p_a - p_b)^2 / (2 l) >= 0`` (convex, l-smooth g)."""
    return g[a] - g[b] - p[b] * (y[a] - y[b]) - (p[a] - p[b]) ** 2 / (2 * ell)


def off_by_one_lemma(N: int = 3, n_samples: int = 200, seed: int = 0) -> tuple[tuple[sp.Expr, tuple[sp.Expr, ...]], float]:
    """``((residual, coefficients), min_S)``: ``residual = S_N - l * sum c_i I_i`` (sympy, should be 0),
    the ``c_i`` (nonnegative for ``0 < rho <= 1``), and the smallest ``S_N`` over random
    ``f`` in ``S(m, L)`` and random points (should be ``>= 0``). Reference point ``*`` is index
    ``"s"`` with ``y* = p* = g* = 0`` (shift ``g`` by its tangent at ``y*``: no loss)."""
    rho, ell = sp.symbols("rho l", positive=True)
    y = {**{k: sp.Symbol(f"y{k}") for k in range(N + 1)}, "s": 0}
    p = {**{k: sp.Symbol(f"p{k}") for k in range(N + 1)}, "s": 0}
    g = {**{k: sp.Symbol(f"g{k}") for k in range(N + 1)}, "s": 0}
    q = {k: ell * y[k] - p[k] for k in range(N + 1)}
    q[-1] = 0
    S = sum(rho ** (-2 * k) * p[k] * (q[k] - rho**2 * q[k - 1]) for k in range(N + 1))
    terms = [(sp.Integer(1), ("s", 0))] + [(rho ** (-2 * (k - 1)), (k - 1, k)) for k in range(1, N + 1)]
    terms += [((1 - rho**2) * rho ** (-2 * k), ("s", k)) for k in range(1, N)]
    terms += [((1 - rho**2) * rho ** (-2 * N), ("s", N)), ((1 - rho**2) * rho ** (-2 * N) + rho ** (2 - 2 * N), (N, "s"))]
    D = ell * sum(c * _interp(g, y, p, a, b, ell) for c, (a, b) in terms)
    residual = sp.simplify(sp.expand(S - D))
    return (residual, tuple(c for c, _ in terms)), _sample_min_S(N, n_samples, seed)


def _sample_min_S(N: int, n_samples: int, seed: int) -> float:
    """min of ``S_N`` for ``f = m y^2/2 + (L-m) sum_j w_j logcosh(y - c_j)``, ``sum w_j = 1``
    (``f'' in [m, L]``), random points ``y_0..y_N``, reference ``y*`` and ``rho`` in (0, 1]."""
    rng, worst = np.random.default_rng(seed), np.inf
    for _ in range(n_samples):
        m, L = sorted(rng.uniform(0.01, 10, 2))
        w, c = rng.dirichlet(np.ones(3)), rng.normal(0, 2, 3)
        grad = lambda t: m * t + (L - m) * np.sum(w * np.tanh(t - c))  # noqa: E731
        ys, ystar, rho = rng.normal(0, 3, N + 1), rng.normal(0, 3), rng.uniform(0.05, 1)
        pk = np.array([grad(t) - grad(ystar) - m * (t - ystar) for t in ys])
        qk = np.array([L * (t - ystar) - (grad(t) - grad(ystar)) for t in ys])
        qprev = np.r_[0.0, qk[:-1]]
        S = np.sum(rho ** (-2.0 * np.arange(N + 1)) * pk * (qk - rho**2 * qprev))
        worst = min(worst, float(S / max(1.0, np.abs(pk * qk).max())))
    return worst


def vertex_convexity(n_points: int = 50, seed: int = 0) -> tuple[sp.Matrix, float]:
    """``(residual, min_eig)``: sympy residual of the convexity identity (2x2, should be zero) and
    the smallest eigenvalue of ``t F(a) + (1-t) F(b) - F(t a + (1-t) b)`` over random heavy-ball
    updates and ``P > 0`` (should be ``>= 0`` up to rounding)."""
    C0, C1 = sp.Matrix(2, 2, sp.symbols("c0:4")), sp.Matrix(2, 2, sp.symbols("d0:4"))
    P = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"P{min(i, j)}{max(i, j)}"))
    a, b, t = sp.symbols("a b t", real=True)
    F = lambda lam: (C0 + lam * C1).T * P * (C0 + lam * C1) - P  # noqa: E731
    gap = t * F(a) + (1 - t) * F(b) - F(t * a + (1 - t) * b)
    residual = sp.expand(gap - t * (1 - t) * (a - b) ** 2 * C1.T * P * C1)
    rng, worst = np.random.default_rng(seed), np.inf
    for _ in range(n_points):
        p = OptimizerParams(float(rng.uniform(1e-3, 1)), float(rng.uniform(0, 0.99)))
        G = rng.standard_normal((2, 2))
        Pn = G @ G.T + 1e-3 * np.eye(2)
        la, lb, tt = rng.uniform(-5, 50), rng.uniform(-5, 50), rng.uniform(0, 1)
        Fn = lambda lam: heavy_ball().matrix(lam, p).T @ Pn @ heavy_ball().matrix(lam, p) - Pn  # noqa: E731
        G2 = tt * Fn(la) + (1 - tt) * Fn(lb) - Fn(tt * la + (1 - tt) * lb)
        worst = min(worst, float(np.linalg.eigvalsh(G2)[0] / max(1.0, np.abs(G2).max())))
    return residual, worst
