"""Candidates: wrapping, evaluation consistency, and named errors."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from lyactl.analysis.candidates import (CallableCandidate, ExprCandidate, LyapunovCandidate, QuadraticCandidate,
                               as_candidate)
from lyactl.errors import InvalidArgumentError, ShapeError, UnresolvedSymbolError

x, y, c = sp.symbols("x y c", real=True)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=2), st.floats(0.1, 3), st.floats(-1, 1))
def test_quadratic_numeric_symbolic_and_expr_agree(v, p11, p12):
    P = np.array([[p11, p12], [p12, 2.0]])
    num = QuadraticCandidate(P)
    sym = QuadraticCandidate(sp.Matrix(P))
    expr = ExprCandidate(sym.expr((x, y)), (x, y))
    vals = [num.value(np.array(v)), sym.value(np.array(v)), expr.value(np.array(v))]
    np.testing.assert_allclose(vals, [np.array(v) @ P @ np.array(v)] * 3, rtol=1e-9, atol=1e-9)


class MyV:  # a user's candidate: no subclassing, just value()
    def value(self, z):
        return float(np.sum(z**4))


def test_as_candidate_wraps_each_kind():
    assert isinstance(as_candidate(np.eye(2)), QuadraticCandidate)
    assert isinstance(as_candidate(sp.eye(2)), QuadraticCandidate)
    assert isinstance(as_candidate(x**2 + y**2, (x, y)), ExprCandidate)
    assert isinstance(as_candidate(lambda z: float(z @ z)), CallableCandidate)
    mine = MyV()
    assert as_candidate(mine) is mine and isinstance(mine, LyapunovCandidate)


@pytest.mark.parametrize("make, err, name", [
    (lambda: as_candidate(c + 1, (x, y)), InvalidArgumentError, "V"),         # not a function of the state
    (lambda: as_candidate(x**2), InvalidArgumentError, "state"),             # state symbols missing
    (lambda: as_candidate(42), InvalidArgumentError, "candidate"),
    (lambda: QuadraticCandidate(np.array([[1.0, 2.0], [0.0, 1.0]])), InvalidArgumentError, "P"),
    (lambda: QuadraticCandidate(np.ones((2, 3))), ShapeError, "P"),
    (lambda: ExprCandidate(c * x**2, (x,)).value(np.ones(1)), UnresolvedSymbolError, "V"),
    (lambda: QuadraticCandidate(sp.Matrix([[c]])).numeric_P(), UnresolvedSymbolError, "P"),
    (lambda: CallableCandidate(lambda z: z).value(np.ones(2)), InvalidArgumentError, "V"),
    (lambda: QuadraticCandidate(np.eye(2)).value(np.ones(3)), ShapeError, "x"),
])
def test_bad_candidates_raise_named_errors(make, err, name):
    with pytest.raises(err, match=name):
        make()
