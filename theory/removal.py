"""Derivations behind lyactl.control.removal_cost: when do single-group removal costs add up?

Each function returns ``(derived, check)``: a closed form obtained with sympy, evaluated at
sample numbers, and an independent direct evaluation; ``tests/test_theory_removal.py`` asserts
they agree.

Model: the loss near the current weights is quadratic, ``L(w + d) = L(w) + g . d + d^T H d / 2``
(exact for a quadratic, second order otherwise). Removing group ``a`` sets its weights to zero,
``d_a = -w_a`` on its coordinates. Then the cost of removing ``a`` alone is

    c_a = -g_a . w_a + w_a^T H_aa w_a / 2,

and the cost of removing a set ``S`` at once is

    C_S = sum_{a in S} c_a + sum_{a < b in S} w_a^T H_ab w_b,

so the sum of the measured single costs misses exactly the cross-curvature terms. They vanish
when the groups do not interact through the loss (``H_ab = 0``), and they are positive when two
groups carry the same function (their contributions to the output are parallel, so removing
either alone costs little while removing both costs much): the one-shot cuts of the H200
benchmark (joint 0.93-1.38 nats against summed bounds of 0.52-1.02) are of that kind. The
number of cross terms grows like ``|S|^2 / 2`` while the single terms grow like ``|S|``, which is
why the sum held for cuts of ~20 % and failed for 50 % at once (docs/results.md).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

__all__ = ["pair_cost_decomposition", "redundant_pair_gap"]


def _quadratic_cost(g: sp.Matrix, H: sp.Matrix, d: sp.Matrix) -> sp.Expr:
    return (g.T * d)[0] + (d.T * H * d)[0] / 2


def pair_cost_decomposition(seed: int = 0) -> tuple[float, float]:
    """``C_{ab} - c_a - c_b = w_a^T H_ab w_b`` for two groups of two coordinates each, derived
    with symbols; returns (the closed form's cross term at random numbers, the direct
    difference of the quadratic costs computed with numpy)."""
    w = sp.Matrix(sp.symbols("w0:4", real=True))
    g = sp.Matrix(sp.symbols("g0:4", real=True))
    Hs = sp.Matrix(4, 4, lambda i, j: sp.Symbol(f"H{min(i, j)}{max(i, j)}", real=True))
    a, b = [0, 1], [2, 3]

    def removal(idx: list[int]) -> sp.Matrix:
        return sp.Matrix([-w[i] if i in idx else 0 for i in range(4)])

    gap = sp.expand(_quadratic_cost(g, Hs, removal(a + b)) - _quadratic_cost(g, Hs, removal(a))
                    - _quadratic_cost(g, Hs, removal(b)))
    cross = sp.expand((w.extract(a, [0]).T * Hs.extract(a, b) * w.extract(b, [0]))[0])
    assert sp.simplify(gap - cross) == 0
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((4, 4))
    H, wn, gn = M @ M.T, rng.standard_normal(4), rng.standard_normal(4)
    subs = {**{w[i]: wn[i] for i in range(4)}, **{g[i]: gn[i] for i in range(4)},
            **{Hs[i, j]: H[i, j] for i in range(4) for j in range(4)}}

    def cost(idx: list[int]) -> float:
        d = np.where(np.isin(np.arange(4), idx), -wn, 0.0)
        return float(gn @ d + d @ H @ d / 2)

    return float(cross.subs(subs)), cost(a + b) - cost(a) - cost(b)


def redundant_pair_gap() -> tuple[float, float]:
    """Two units whose outputs are the same direction ``u`` (a least-squares head ``y = u (x_a + x_b)``
    fitted to a target it reproduces, loss ``|y - t|^2 / 2``): removing either alone costs
    ``|u|^2 x^2 / 2``, both ``2 |u|^2 x^2``: the joint cost is twice the sum of the singles.
    Returns (the sympy ratio ``C_ab / (c_a + c_b)``, the same from a direct numeric evaluation)."""
    x, n = sp.symbols("x u", positive=True)
    t = 2 * n * x  # the target the two units reproduce together

    def loss(keep_a: int, keep_b: int) -> sp.Expr:
        return (n * (keep_a * x + keep_b * x) - t) ** 2 / 2

    ratio = sp.simplify((loss(0, 0) - loss(1, 1)) / ((loss(0, 1) - loss(1, 1)) + (loss(1, 0) - loss(1, 1))))
    xv, uv = 0.7, 1.3
    f = lambda ka, kb: (uv * (ka * xv + kb * xv) - 2 * uv * xv) ** 2 / 2  # noqa: E731
    direct = (f(0, 0) - f(1, 1)) / ((f(0, 1) - f(1, 1)) + (f(1, 0) - f(1, 1)))
    return float(ratio), float(direct)
