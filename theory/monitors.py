"""Derivations of the closed forms used by lyactl.control.monitors and lyactl.control.budget.

Each function returns ``(derived, check)``: the value (or expression evaluated at sample
numbers) obtained symbolically with sympy, and an independent numerical check (direct
simulation or summation); ``tests/test_theory_monitors.py`` asserts they agree.
"""

from __future__ import annotations


import numpy as np
import sympy as sp

__all__ = ["geometric_tail", "remaining_distance_bound", "removal_loss_change", "movement_loss_bound",
           "weight_decay_contraction", "edge_of_stability_curvature", "noise_certification_probability",
           "budget_trajectory", "ramp_final_expression", "ramp_final_fraction"]


def geometric_tail(d: float = 0.7, r: float = 0.6) -> tuple[float, float]:
    """(a) Remaining path ``sum_{j>=1} d r^j = d r / (1 - r)`` for ``0 < r < 1``."""
    D, R, j = sp.symbols("d r j", positive=True)
    closed = sp.summation(D * R**j, (j, 1, sp.oo))
    closed = closed.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0])  # r < 1 branch
    assert sp.simplify(closed - D * R / (1 - R)) == 0
    derived = float(closed.subs({D: d, R: r}))
    check = float(sum(d * r**k for k in range(1, 2000)))
    return derived, check


def remaining_distance_bound(r: float = 0.8, seed: int = 0) -> tuple[float, float]:
    """(a) If every ``||Delta_{k+1}|| <= r ||Delta_k||`` then ``||w_k - w*|| <= ||Delta_k|| r/(1-r)``.

    derived: the bound ``sqrt(dw_sq_last) r/(1-r)``; check: the true distance to the limit
    of a simulated sequence whose step ratios are random in (0, r]. Returns
    ``(bound, distance)``; the test asserts ``distance <= bound``.
    """
    rng = np.random.default_rng(seed)
    steps = [rng.normal(size=8)]
    for _ in range(3000):
        steps.append(_rotation(rng, 8) @ steps[-1] * rng.uniform(0.1, r))
    k = 5
    w_k = np.sum(steps[: k + 1], axis=0)
    w_inf = np.sum(steps, axis=0)
    d = sp.Symbol("d", positive=True)
    bound = sp.lambdify(d, d * r / (1 - r))(float(np.linalg.norm(steps[k])))
    return float(bound), float(np.linalg.norm(w_inf - w_k))


def _rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q  # orthogonal: the step turns, its norm shrinks by exactly the drawn ratio


def removal_loss_change(seed: int = 0) -> tuple[float, float]:
    """(d) For a quadratic loss, ``L(w with group zeroed) - L(w) = -g.w + w^T H w / 2``,
    exactly; with ``curv = w^T H w / ||w||^2`` this is ``-gw + curv w_sq / 2``."""
    w, g, h = sp.symbols("w g h")
    L = lambda x: g * x + h * x**2 / 2  # noqa: E731  (1-D Taylor model around the current w)
    derived_expr = sp.expand(L(-w) - L(0))  # Delta w = -w
    assert sp.simplify(derived_expr - (-g * w + h * w**2 / 2)) == 0
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(6, 6))
    H = A @ A.T
    b = rng.normal(size=6)
    x = rng.normal(size=6)
    loss = lambda v: 0.5 * v @ H @ v - b @ v  # noqa: E731
    grad = H @ x - b
    group = np.array([1, 1, 0, 0, 1, 0], bool)
    wg = np.where(group, x, 0.0)
    curv = wg @ H @ wg / (wg @ wg)
    derived = float(-(grad @ wg) + 0.5 * curv * (wg @ wg))
    return derived, float(loss(x - wg) - loss(x))


def movement_loss_bound(seed: int = 0) -> tuple[float, float]:
    """(c) Over any move ``||Delta|| <= R`` of a quadratic with ``||H|| <= c``:
    ``|Delta L| <= |g| R + c R^2 / 2``. Returns ``(bound, max observed |Delta L|)``."""
    gn, R, c = sp.symbols("g R c", positive=True)
    bound_expr = gn * R + c * R**2 / 2
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(5, 5))
    H = A @ A.T
    g = rng.normal(size=5)
    c_val = float(np.linalg.eigvalsh(H).max())
    Rv = 0.3
    worst = 0.0
    for _ in range(2000):
        u = rng.normal(size=5)
        d = u / np.linalg.norm(u) * Rv * rng.uniform(0, 1)
        worst = max(worst, abs(g @ d + 0.5 * d @ H @ d))
    bound = float(bound_expr.subs({gn: float(np.linalg.norm(g)), R: Rv, c: c_val}))
    return bound, worst


def weight_decay_contraction(eta: float = 0.01, wd: float = 0.1, K: int = 10, sigma: float = 0.05,
                             seed: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
    """(b) Decoupled decay ``w+ = (1 - eta wd) w - eta u``, ``u`` zero-mean noise of variance
    ``sigma^2`` per coordinate: ``E V_{k+K} = rho V_k + ...`` with ``rho = (1 - eta wd)^(2K)``,
    and the noise floor ``V* = eta^2 sigma^2 / (1 - (1 - eta wd)^2)`` per coordinate.

    Returns ``((rho, V*) derived, (rho, V*) simulated)``.
    """
    e, l, s, V = sp.symbols("eta lam sigma V", positive=True)
    step_map = (1 - e * l) ** 2 * V + e**2 * s**2
    rho = sp.expand((1 - e * l) ** (2 * K))
    V_star = sp.solve(sp.Eq(V, step_map), V)[0]
    subs = {e: eta, l: wd, s: sigma}
    rng = np.random.default_rng(seed)
    w = np.ones(4000)
    v0 = float(w @ w)
    for _ in range(K):
        w = (1 - eta * wd) * w
    rho_sim = float(w @ w) / v0
    w = np.zeros(4000)
    for _ in range(int(20 / (eta * wd))):
        w = (1 - eta * wd) * w - eta * sigma * rng.normal(size=w.size)
    return (float(rho.subs(subs)), float(V_star.subs(subs))), (rho_sim, float(np.mean(w**2)))


def edge_of_stability_curvature(eta: float = 0.1) -> tuple[float, float]:
    """Default curvature: GD on ``lam x^2/2`` is stable iff ``|1 - eta lam| < 1`` iff
    ``0 < lam < 2/eta``; the largest stable curvature (derived) against the bisected
    boundary of ``|1 - eta lam| < 1`` found by iterating the map (check)."""
    lam = sp.Symbol("lam", real=True)
    region = sp.solve_univariate_inequality(sp.Abs(1 - eta * lam) < 1, lam, relational=False)
    derived = float(region.sup)
    lo, hi = 0.0, 100.0 / eta
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        x = 1.0
        for _ in range(400):
            x *= 1 - eta * mid
        lo, hi = (mid, hi) if abs(x) < 1 else (lo, mid)
    return derived, lo


def noise_certification_probability(W: int = 5, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """For exchangeable continuous displacements (pure noise), the chance that all
    ``W - 1`` successive ratios are < 1 (the necessary condition of (a)) is ``1/W!``."""
    derived = float(1 / sp.factorial(W))
    x = np.random.default_rng(seed).chisquare(4, size=(n, W))
    return derived, float(np.mean(np.all(np.diff(x, axis=1) < 0, axis=1)))


def budget_trajectory(T: int = 1000, s: int = 300, target: float = 0.3, banked: float = 40.0) -> tuple[float, float]:
    """``phi_req(s) = (S* T - A(s)) / (T - s)``: solve ``(A + phi (T - s))/T = S*`` (derived);
    check: hold that phi from s to T step by step and measure the saving."""
    A, phi, TT, ss, S = sp.symbols("A phi T s S")
    sol = sp.solve(sp.Eq((A + phi * (TT - ss)) / TT, S), phi)[0]
    derived = float(sol.subs({A: banked, TT: T, ss: s, S: target}))
    total = banked + sum(derived for _ in range(s, T))
    return target, total / T


def ramp_final_expression() -> sp.Expr:
    """``phi_f`` in terms of ``s0, s1, T, S``: the solution of
    ``int_{s0}^{s1} phi_f (1 - (1 - (s - s0)/(s1 - s0))^3) ds + phi_f (T - s1) = S T``."""
    f, s, a, b, TT, S = sp.symbols("phi_f s s0 s1 T S", positive=True)
    ramp = f * (1 - (1 - (s - a) / (b - a)) ** 3)
    return sp.solve(sp.Eq(sp.integrate(ramp, (s, a, b)) + f * (TT - b), S * TT), f)[0]


def ramp_final_fraction(T: int = 1000, s0: int = 30, s1: int = 300, target: float = 0.4) -> tuple[float, float]:
    """Gradual set-point ``phi_f (1 - (1 - x)^3)`` on ``[s0, s1]``, ``phi_f`` after, with
    ``phi_f`` from :func:`ramp_final_expression` (derived); check: hold that set-point step by
    step (midpoint of each step) and measure the saving."""
    names = {str(v): v for v in ramp_final_expression().free_symbols}
    phi_f = float(ramp_final_expression().subs({names["s0"]: s0, names["s1"]: s1, names["T"]: T, names["S"]: target}))
    x = (np.arange(s0, s1) + 0.5 - s0) / (s1 - s0)
    banked = float(np.sum(phi_f * (1 - (1 - x) ** 3))) + phi_f * (T - s1)
    return target, banked / T


if __name__ == "__main__":  # pragma: no cover
    for f in __all__:
        print(f, globals()[f]())
