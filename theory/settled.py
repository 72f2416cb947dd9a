"""Derivations behind lyactl.control.settled (the settled-group freeze certificate).

Each function returns ``(derived, check)``: a closed form obtained with sympy, evaluated at
sample numbers, and an independent Monte Carlo estimate; ``tests/test_theory_settled.py``
asserts they agree within the simulation's error.

Model: one coordinate direction, a quadratic loss ``L(w) = h (w - w*)^2 / 2``, mini-batch
gradients ``g = h (w - w*) + sigma xi`` with independent standard normal ``xi`` per step, and one
SGD step ``D = -eta g_0`` (the interval's displacement). The certificate reads ``g_1 . D`` with
``g_1`` the first gradient AFTER the step (a fresh batch at ``w_1 = w_0 + D``); the naive
alternative reads ``g_0 . D`` (the gradient that drove the step).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

__all__ = ["path_end_expectation", "same_batch_bias", "endpoint_vs_true_change"]

_h, _eta, _sigma, _e0 = sp.symbols("h eta sigma e0", real=True)  # e0 = w_0 - w*
_x0, _x1 = sp.symbols("xi0 xi1", real=True)


def _expect(expr: sp.Expr) -> sp.Expr:
    """``E[expr]`` over independent standard normal ``xi0``, ``xi1`` (polynomial ``expr``)."""
    moments = {0: 1, 1: 0, 2: 1, 3: 0, 4: 3}
    poly = sp.Poly(sp.expand(expr), _x0, _x1)
    return sp.simplify(sum(c * moments[i] * moments[j] for (i, j), c in poly.terms()))


def _simulate(f, n: int = 400_000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    v = f(rng.standard_normal(n), rng.standard_normal(n))
    return float(v.mean()), float(v.std() / np.sqrt(n))


_NUM = {_h: 2.0, _eta: 0.3, _sigma: 0.7, _e0: 0.9}


def path_end_expectation() -> tuple[float, float]:
    """``E[g_1 D] = E[grad L(w_1) D]``: the fresh gradient at the path's end carries no noise
    correlated with the path, so the statistic estimates the true first-order quantity;
    closed form ``-eta h^2 e0^2 (1 - eta h) + eta^2 h sigma^2`` (the second term: the curvature
    the noise-driven part of the step meets, not a correlation). Returns (closed form at
    sample numbers, Monte Carlo mean)."""
    D = -_eta * (_h * _e0 + _sigma * _x0)
    g1 = _h * (_e0 + D) + _sigma * _x1
    derived = _expect(g1 * D)
    truth = _expect(_h * (_e0 + D) * D)  # grad L(w_1) . D, no batch noise
    assert sp.simplify(derived - truth) == 0
    assert sp.simplify(derived - (-_eta * _h**2 * _e0**2 * (1 - _eta * _h) + _eta**2 * _h * _sigma**2)) == 0
    h, eta, s, e0 = (_NUM[k] for k in (_h, _eta, _sigma, _e0))
    mc, _ = _simulate(lambda a, b: (h * (e0 - eta * (h * e0 + s * a)) + s * b) * (-eta * (h * e0 + s * a)))
    return float(derived.subs(_NUM)), mc


def same_batch_bias() -> tuple[float, float]:
    """``E[g_0 D] - grad L(w_0) E[D] = -eta sigma^2``: the gradient that drove the step sees its
    own noise as progress, a bias that does not vanish at an optimum (``e0 = 0``), which is why
    the certificate uses the NEXT step's gradient. Returns (closed form, Monte Carlo)."""
    D = -_eta * (_h * _e0 + _sigma * _x0)
    g0 = _h * _e0 + _sigma * _x0
    bias = sp.simplify(_expect(g0 * D) - _h * _e0 * _expect(D))
    assert sp.simplify(bias + _eta * _sigma**2) == 0
    h, eta, s, e0 = (_NUM[k] for k in (_h, _eta, _sigma, _e0))
    mc, _ = _simulate(lambda a, b: (h * e0 + s * a) * (-eta * (h * e0 + s * a)) - h * e0 * (-eta * h * e0))
    return float(bias.subs(_NUM)), mc


def endpoint_vs_true_change() -> tuple[float, float]:
    """``L(w_0) - L(w_1) = -grad L(w_1) . D + h D^2 / 2`` exactly on a quadratic: the path-end
    reading ``-g_1 . D`` UNDERstates what the past step bought by the curvature term, and is
    negative where a step overshoots (``eta h > 1``: ``-grad L(w_1) D < 0`` with no noise), which
    is why the certificate's interval is two-sided. Returns (``L(w_0) - L(w_1)`` from the closed
    form, the same from evaluating the loss) at ``eta h = 1.6`` (an overshooting step)."""
    w0, Dv, h = sp.symbols("w0 D h", real=True)
    L = lambda w: h * w**2 / 2  # noqa: E731  (w* = 0)
    identity = sp.simplify(L(w0) - L(w0 + Dv) - (-(h * (w0 + Dv)) * Dv + h * Dv**2 / 2))
    assert identity == 0
    num = {h: 2.0, w0: 0.9}
    step = -0.8 * num[h] * num[w0]  # eta = 0.8: eta h = 1.6
    derived = float((-(h * (w0 + Dv)) * Dv + h * Dv**2 / 2).subs(num | {Dv: step}))
    assert -num[h] * (num[w0] + step) * step < 0  # the path-end reading is negative here
    check = float((L(w0) - L(w0 + Dv)).subs(num | {Dv: step}))
    return derived, check
