"""Jury (Schur-Cohn) stability test of a real polynomial: all roots strictly in |z| < 1.

For ``p(z) = a_n z^n + ... + a_1 z + a_0`` with ``a_n > 0`` (the polynomial is divided by
``a_n`` when the sign of ``a_n`` is not known), Jury's criterion is the conjunction of::

    p(1) > 0,   (-1)^n p(-1) > 0,   a_n - |a_0| > 0,
    |b_0| > |b_{n-1}|,  |c_0| > |c_{n-2}|, ...   (down to the row of three entries)

with the Jury table rows ``b_k = a_0 a_k - a_n a_{n-k}``, ``c_k = b_0 b_k - b_{n-1} b_{n-1-k}``,
and so on. Every condition is returned in the polynomial form ``g > 0`` (``|a| > |b|`` as
``a^2 - b^2 > 0``, ``a_n - |a_0| > 0`` as ``a_n - a_0 > 0`` and ``a_n + a_0 > 0``), so the
symbolic conditions carry no ``Abs``. Non-singular Jury tables only: a condition that holds
with equality means a root on (or a degenerate table at) the unit circle, i.e. "not strictly
stable", and numerically a verdict of UNKNOWN within the tolerance.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import sympy as sp

from lyactl.errors import InvalidArgumentError, NonFiniteError, bad_arg
from lyactl.expr import parse_expr, to_sympy
from lyactl.verdict import Evidence, Verdict

__all__ = ["jury_expressions", "jury_conditions", "jury_numeric"]


def jury_expressions(coeffs: Sequence[sp.Expr]) -> tuple[sp.Expr, ...]:
    """Expressions ``g_i`` such that the polynomial is Schur stable iff all ``g_i > 0``.

    ``coeffs`` are ``[a_n, ..., a_0]`` (highest degree first, like ``numpy.roots``), sympy
    expressions or numbers; degree >= 1.
    """
    return tuple(sp.expand(g) for g, _ in _jury_terms(coeffs))


def _jury_terms(coeffs: Sequence[sp.Expr]) -> list[tuple[sp.Expr, sp.Expr]]:
    """Pairs ``(g_i, s_i)``: condition ``g_i > 0`` and a scale ``s_i >= |g_i|`` (for margins)."""
    a = [to_sympy(c, f"coeffs[{i}]") for i, c in enumerate(coeffs)]
    if len(a) < 2:
        raise InvalidArgumentError(bad_arg("coeffs", "a polynomial of degree >= 1", list(coeffs)))
    if a[0] == 0:
        raise InvalidArgumentError(bad_arg("coeffs[0]", "a non-zero leading coefficient", a[0]))
    if not (a[0].is_positive is True):
        a = [c / a[0] for c in a]  # monic: the sign of a_n is not known
    n = len(a) - 1
    total = sum(sp.Abs(c) for c in a)
    out = [(sum(a), total),
           ((-1) ** n * sum(c * (-1) ** (n - i) for i, c in enumerate(a)), total),
           (a[0] - a[-1], sp.Abs(a[0]) + sp.Abs(a[-1])),
           (a[0] + a[-1], sp.Abs(a[0]) + sp.Abs(a[-1]))]
    row = list(reversed(a))  # row[k] = a_k
    while len(row) > 3:
        m = len(row) - 1
        row = [sp.expand(row[0] * row[k] - row[m] * row[m - k]) for k in range(m)]
        out.append((row[0] ** 2 - row[-1] ** 2, row[0] ** 2 + row[-1] ** 2))
    return out


def jury_conditions(poly: sp.Poly | sp.Expr, z: sp.Symbol) -> tuple[sp.Basic, ...]:
    """Jury conditions of ``poly`` (in ``z``) as sympy relations ``g > 0`` (see module doc).

    Relations that sympy can decide already become ``True``/``False``.
    """
    poly = parse_expr(poly, "poly") if isinstance(poly, str) else poly
    P = poly if isinstance(poly, sp.Poly) else sp.Poly(poly, z)
    if P.gens != (z,):
        P = sp.Poly(P.as_expr(), z)
    return tuple(sp.StrictGreaterThan(g, 0) if not g.is_number else sp.sympify(bool(g > 0))
                 for g in jury_expressions(P.all_coeffs()))


def jury_numeric(coeffs: Sequence[float], tol: float = 1e-12) -> Evidence:
    """Numeric Jury test. Returns :class:`Evidence`.

    ``margin`` is the smallest relative Jury slack ``min_i g_i / s_i`` in [-1, 1] of the monic
    polynomial (positive iff every condition holds; not a distance in ``z``); a margin
    within ``tol`` gives UNKNOWN. ``details["root_radius"]`` is ``max |root|`` from
    ``numpy.roots`` as a cross-check; if the two disagree the verdict is UNKNOWN.
    """
    a = np.asarray(coeffs, dtype=np.float64).reshape(-1)
    if a.size < 2 or a[0] == 0:
        raise InvalidArgumentError(bad_arg("coeffs", "degree >= 1 with non-zero leading coefficient", list(coeffs)))
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(bad_arg("coeffs", "finite coefficients", "NaN or inf"))
    a = a / a[0]
    terms = _jury_terms([sp.Float(c, 40) for c in a])
    slacks = [float(g / s) if s != 0 else 0.0 for g, s in terms]
    margin = min(slacks)
    verdict = Verdict.UNKNOWN if abs(margin) <= tol else (Verdict.HOLDS if margin > 0 else Verdict.FAILS)
    radius = float(np.max(np.abs(np.roots(a))))
    root_verdict = Verdict.HOLDS if radius < 1 else Verdict.FAILS
    agree = verdict is Verdict.UNKNOWN or verdict is root_verdict or abs(1 - radius) < 1e-6
    if not agree:
        verdict = Verdict.UNKNOWN
    conds = tuple(f"{s:.6g} > 0" for s in slacks)
    return Evidence(verdict, "jury", margin if math.isfinite(margin) else math.nan, conds,
                    {}, {"root_radius": radius, "slacks": slacks, "agrees_with_roots": bool(agree)})
