"""Jury test: numeric verdict == numpy roots; symbolic conditions == numeric ones."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings, strategies as st

from lyactl.errors import InvalidArgumentError, NonFiniteError
from lyactl.analysis.jury import jury_conditions, jury_expressions, jury_numeric
from lyactl.verdict import Verdict

z = sp.Symbol("z")
roots_st = st.lists(st.tuples(st.floats(0.05, 1.6), st.floats(0, np.pi)), min_size=1, max_size=3)


def _poly(pairs, real_roots, scale):
    roots = list(real_roots)
    for r, th in pairs:
        roots += [r * np.exp(1j * th), r * np.exp(-1j * th)]
    return np.real(np.poly(roots)) * scale, max(abs(np.asarray(roots)))


@settings(max_examples=150, deadline=None)
@given(roots_st, st.lists(st.floats(-1.6, 1.6), max_size=2), st.sampled_from([1.0, -2.5, 0.3]))
def test_numeric_jury_matches_roots(pairs, real_roots, scale):
    coeffs, radius = _poly(pairs, real_roots, scale)
    assume(abs(radius - 1) > 1e-3)
    ev = jury_numeric(coeffs)
    assert ev.verdict is (Verdict.HOLDS if radius < 1 else Verdict.FAILS)
    assert (ev.margin > 0) == (radius < 1)


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_symbolic_conditions_evaluate_like_numeric(a2, a1, a0):
    a, b, c = sp.symbols("a b c", real=True)
    conds = jury_conditions(z**3 + a * z**2 + b * z + c, z)
    sym_holds = all(bool(cond.subs({a: a2, b: a1, c: a0})) for cond in conds)
    radius = max(abs(np.roots([1, a2, a1, a0])))
    assume(abs(radius - 1) > 1e-6)
    assert sym_holds == (radius < 1)


def test_conditions_carry_no_abs_and_degenerate_input_is_rejected():
    h, b = sp.symbols("h b")
    assert not any(g.has(sp.Abs) for g in jury_expressions([1, h - 1 - b, b]))
    with pytest.raises(InvalidArgumentError, match="coeffs"):
        jury_numeric([1.0])
    with pytest.raises(InvalidArgumentError, match="coeffs"):
        jury_numeric([0.0, 1.0])
    with pytest.raises(NonFiniteError, match="coeffs"):
        jury_numeric([1.0, float("nan")])


def test_root_on_circle_is_unknown():
    assert jury_numeric(np.poly([1.0, 0.5])).verdict is Verdict.UNKNOWN
