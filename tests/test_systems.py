"""Systems: numeric/symbolic twins, StateSpace round trip, linearisation, input errors."""

import control
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, UnresolvedSymbolError
from lyactl.analysis.systems import LinearSystem, NumericSystem, SymbolicSystem, as_square_matrix

x, y, a = sp.symbols("x y a", real=True)
PENDULUM = SymbolicSystem(sp.Matrix([x + 0.1 * y, y - 0.1 * a * sp.sin(x) - 0.05 * y]), (x, y), (), (a,))


@pytest.mark.parametrize("dt", [True, 0.1])
def test_statespace_round_trip(dt):
    rng = np.random.default_rng(0)
    sys = LinearSystem(rng.standard_normal((3, 3)), rng.standard_normal((3, 2)))
    ss = sys.to_statespace(dt)
    assert ss.dt == dt and ss.isdtime(strict=True)
    back = LinearSystem.from_statespace(ss)
    np.testing.assert_array_equal(back.A, sys.A)
    np.testing.assert_array_equal(back.B, sys.B)


def test_continuous_statespace_is_rejected():
    with pytest.raises(InvalidArgumentError, match="sys"):
        LinearSystem.from_statespace(control.ss([[-1.0]], [[1.0]], [[1.0]], [[0.0]]))
    with pytest.raises(InvalidArgumentError, match="dt"):
        LinearSystem(np.eye(2)).to_statespace(0)


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.1, 5))
def test_numeric_twin_matches_substitution(x0, y0, a0):
    twin = PENDULUM.numeric({a: a0})
    expected = np.array([float(e) for e in PENDULUM.f.subs({x: x0, y: y0, a: a0})])
    np.testing.assert_allclose(twin.step(np.array([x0, y0])), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.1, 5), st.sampled_from([0.0, np.pi]))
def test_linearize_matches_finite_differences(a0, x_eq):
    lin = PENDULUM.linearize([x_eq, 0.0], {a: a0})
    f = PENDULUM.numeric({a: a0}).step
    eps = 1e-6
    z0 = np.array([x_eq, 0.0])
    J = np.column_stack([(f(z0 + eps * e) - f(z0 - eps * e)) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(lin.A, J, atol=1e-7)


def test_linearize_rejects_non_equilibrium():
    with pytest.raises(InvalidArgumentError, match="x_eq"):
        PENDULUM.linearize([0.5, 0.0], {a: 1.0})


def test_symbols_without_values_are_named():
    with pytest.raises(UnresolvedSymbolError, match="a"):
        PENDULUM.numeric()
    with pytest.raises(UnresolvedSymbolError, match="b"):
        SymbolicSystem(sp.Matrix([x * sp.Symbol("b")]), (x,))


@pytest.mark.parametrize("bad, err", [
    (np.ones((2, 3)), ShapeError), (np.array([[np.nan]]), NonFiniteError),
    ([["a"]], InvalidArgumentError), (np.array([[True]]), InvalidArgumentError),
    (np.zeros((0, 0)), ShapeError), (np.ones(3), ShapeError),
])
def test_bad_matrices(bad, err):
    with pytest.raises(err, match="A"):
        as_square_matrix(bad, "A")


def test_linear_system_checks_shapes_and_inputs():
    with pytest.raises(ShapeError, match="B"):
        LinearSystem(np.eye(2), np.ones((3, 1)))
    sys = LinearSystem(np.eye(2), np.ones((2, 1)))
    with pytest.raises(InvalidArgumentError, match="u"):
        sys.step(np.zeros(2))
    np.testing.assert_allclose(sys.step(np.ones(2), np.array([2.0])), [3.0, 3.0])
    with pytest.raises(ShapeError, match="x"):
        sys.step(np.zeros(3))


def test_numeric_system_checks_output_shape():
    sys = NumericSystem(lambda z: np.zeros(3), 2)
    with pytest.raises(ShapeError, match="f"):
        sys.step(np.zeros(2))
    traj = NumericSystem(lambda z: 0.5 * z, 2).simulate(np.ones(2), 3)
    np.testing.assert_allclose(traj[-1], 0.125 * np.ones(2))
