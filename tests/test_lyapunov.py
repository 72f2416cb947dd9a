"""Lyapunov verification: dlyap vs spectral radius, decrease along trajectories, robustness."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st
from scipy.linalg import solve_discrete_lyapunov

from lyactl.errors import InvalidArgumentError, LyactlError, NonFiniteError, ShapeError
from lyactl.analysis.lyapunov import (delta_v, quadratic_decrease, quadratic_decrease_conditions, sylvester_conditions,
                             verify_decrease, verify_dlyap)
from lyactl.analysis.optimizers import BETA, ETA, LAM, WD, heavy_ball
from lyactl.analysis.systems import LinearSystem, NumericSystem, SymbolicSystem
from lyactl.verdict import Verdict
from strategies import matrix_with_radius, seeds, stable_or_unstable_matrices

x, y = sp.symbols("x y", real=True)


@settings(max_examples=60, deadline=None)
@given(stable_or_unstable_matrices())
def test_dlyap_P_is_pd_exactly_when_schur_stable(case):
    A, rho = case
    ev = verify_dlyap(A)
    assert ev.verdict is (Verdict.HOLDS if rho < 1 else Verdict.FAILS)
    assert ev.details["P_positive_definite"] == (rho < 1)
    assert ev.residuals["lyapunov"] < 1e-8
    assert math.isclose(ev.margin, 1 - rho, abs_tol=1e-9)


def test_transpose_convention_against_scipy():
    A = np.array([[0.5, 2.0], [0.0, 0.3]])  # non-normal: A and A.T give different P
    P = solve_discrete_lyapunov(A.T, np.eye(2))
    np.testing.assert_allclose(A.T @ P @ A - P, -np.eye(2), atol=1e-12)
    ev = quadratic_decrease(A, P)
    assert ev.verdict is Verdict.HOLDS


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.floats(0.1, 0.95), seeds, seeds)
def test_delta_v_negative_along_trajectories_when_holds(n, rho, seed, seed2):
    A = matrix_with_radius(n, rho, seed)
    P = solve_discrete_lyapunov(A.T, np.eye(n))
    ev = verify_decrease(LinearSystem(A), P)
    assert ev.verdict is Verdict.HOLDS
    traj = LinearSystem(A).as_numeric().simulate(np.random.default_rng(seed2).standard_normal(n), 30)
    V = np.einsum("ki,ij,kj->k", traj, P, traj)
    scale = np.maximum(V[:-1], 1e-300)
    assert np.all(V[1:] - V[:-1] < 0) or np.all(V[:-1] < 1e-250)
    assert np.all(V[1:] <= (1 - ev.margin) * V[:-1] + 1e-12 * scale)


def test_symbolic_heavy_ball_with_identity_gives_sylvester_conditions():
    A = heavy_ball().symbolic_matrix()
    ev = quadratic_decrease(A, sp.eye(2))
    assert ev.verdict is Verdict.UNKNOWN and ev.method == "sylvester"
    cond = quadratic_decrease_conditions(A, sp.eye(2))
    assert len(cond) == len(ev.conditions) == 4
    # at a point, the conditions decide exactly what eigvalsh decides
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        vals = {ETA: rng.uniform(0, 1), LAM: rng.uniform(0, 5), BETA: rng.uniform(0, 0.9), WD: 0.0}
        numeric = quadratic_decrease(np.array(A.subs(vals), dtype=float), np.eye(2))
        assert all(bool(c.subs(vals)) for c in cond) == (numeric.verdict is Verdict.HOLDS)
        seen.add(numeric.verdict)
    assert seen == {Verdict.HOLDS, Verdict.FAILS}


def test_symbolic_system_quadratic_form_is_exact():
    sys = SymbolicSystem(sp.Matrix([x / 2 + y / 4, y / 3]), (x, y))
    ev = verify_decrease(sys, x**2 + 4 * y**2)
    A = np.array([[0.5, 0.25], [0, 1 / 3]])
    assert ev.verdict is quadratic_decrease(A, np.diag([1.0, 4.0])).verdict
    dV = delta_v(sys, x**2 + 4 * y**2)
    pt = {x: 0.7, y: -1.3}
    direct = (0.35 - 0.325) ** 2 + 4 * (-1.3 / 3) ** 2 - (0.49 + 4 * 1.69)
    assert math.isclose(float(dV.subs(pt)), direct, rel_tol=1e-12)


def test_sylvester_conditions_decide_numbers():
    assert sylvester_conditions(sp.Matrix([[2, 0], [0, 1]])) == (sp.true, sp.true)
    assert sp.false in sylvester_conditions(sp.Matrix([[1, 2], [2, 1]]))


def test_nonlinear_counterexample_found_and_no_false_proof():
    sys = SymbolicSystem(sp.Matrix([x / 2 + y**2, y / 2]), (x, y))
    ev = verify_decrease(sys, x**2 + y**2, radius=10.0)
    assert ev.verdict is Verdict.FAILS
    w = np.array(ev.details["witness"])
    nxt = np.array([w[0] / 2 + w[1] ** 2, w[1] / 2])
    assert nxt @ nxt >= w @ w
    ok = verify_decrease(sys, x**2 + y**2, radius=0.01)
    assert ok.verdict is Verdict.UNKNOWN  # sampling never proves


user_candidates = st.sampled_from([
    lambda z: float(z @ z), lambda z: float(np.sum(np.abs(z))), lambda z: float("nan"),
    lambda z: float(np.max(z)), lambda z: 1 / 0, lambda z: np.ones(3), lambda z: "x",
    lambda z: float(np.exp(np.sum(z)) - 1), lambda z: (_ for _ in ()).throw(RuntimeError("boom")),
])


@settings(max_examples=40, deadline=None)
@given(user_candidates, stable_or_unstable_matrices(max_n=3))
def test_random_user_candidates_never_crash(V, case):
    A, _ = case
    try:
        ev = verify_decrease(LinearSystem(A), V, samples=32)
    except LyactlError as exc:
        assert "candidate" in str(exc) or "V(x)" in str(exc)
        return
    assert ev.verdict in (Verdict.HOLDS, Verdict.FAILS, Verdict.UNKNOWN)
    assert ev.verdict is not Verdict.HOLDS  # sampling cannot prove


def test_bad_inputs():
    with pytest.raises(ShapeError, match="Q"):
        verify_dlyap(np.eye(2) * 0.5, np.eye(3))
    with pytest.raises(NonFiniteError, match="A"):
        verify_dlyap(np.array([[np.inf]]))
    with pytest.raises(ShapeError, match="P"):
        quadratic_decrease(np.eye(2) * 0.5, np.eye(3))
    with pytest.raises(InvalidArgumentError, match="samples"):
        verify_decrease(NumericSystem(lambda z: z / 2, 1), lambda z: float(z @ z), samples=0)
    with pytest.raises(InvalidArgumentError, match="V"):
        verify_decrease(SymbolicSystem(sp.Matrix([x / 2]), (x,)), sp.Symbol("c") ** 2)


def test_singular_lyapunov_equation_is_unknown():
    ev = verify_dlyap(np.array([[1.0]]))
    assert ev.verdict is Verdict.UNKNOWN
