"""The hand-written conic form of lyactl.analysis.sdp: clarabel's scaled-svec packing checked
by its defining identity, by SDPs whose optimum is known in closed form, and against cvxpy
on random small SDPs; infeasibility is reported; a missing clarabel names the extra."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.analysis.sdp import AffineLMI, smat, solve_sdp, svec, sym_basis
from lyactl.errors import ShapeError
from tests.strategies import seeds


def _sym(rng, k):
    X = rng.standard_normal((k, k))
    return X + X.T


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), seeds)
def test_svec_is_an_isometry_and_smat_inverts_it(k, seed):
    rng = np.random.default_rng(seed)
    X, Y = _sym(rng, k), _sym(rng, k)
    assert svec(X) @ svec(Y) == pytest.approx(np.trace(X @ Y), abs=1e-10 * (1 + abs(X).sum() * abs(Y).sum()))
    assert np.allclose(smat(svec(X), k), X, rtol=0, atol=1e-14)
    entries = [X[i, j] for j in range(k) for i in range(j + 1)]   # upper triangle, column by column
    assert np.allclose(np.tensordot(entries, sym_basis(k), axes=1), X, rtol=0, atol=1e-14)


def test_svec_order_is_column_major_upper_triangle():
    X = np.array([[1.0, 2.0, 4.0], [2.0, 3.0, 5.0], [4.0, 5.0, 6.0]])
    r2 = np.sqrt(2.0)
    assert np.allclose(svec(X), [1.0, 2.0 * r2, 3.0, 4.0 * r2, 5.0 * r2, 6.0])


@settings(max_examples=8, deadline=None)
@given(st.integers(2, 5), seeds)
def test_lambda_max_two_ways(k, seed):
    """min t s.t. t I - C >= 0 and max <C, X> s.t. X >= 0, trace X = 1 both equal lambda_max(C):
    the first checks b = svec(F0), the second the variable packing of a full symmetric X."""
    C = _sym(np.random.default_rng(seed), k)
    lam = np.linalg.eigvalsh(C)[-1]
    s = solve_sdp(1, [AffineLMI(-C, np.eye(k)[None])], c=np.ones(1))
    assert s.status == "solved" and s.x[0] == pytest.approx(lam, abs=1e-6)
    B = sym_basis(k)
    s = solve_sdp(B.shape[0], [AffineLMI(np.zeros((k, k)), B)], c=-np.einsum("ij,tji->t", C, B),
                  G=np.trace(B, axis1=1, axis2=2)[None], h=np.ones(1))
    X = np.tensordot(s.x, B, axes=1)
    assert s.status == "solved" and np.trace(C @ X) == pytest.approx(lam, abs=1e-6)
    assert np.linalg.eigvalsh(X)[0] > -1e-7 and np.trace(X) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("a", [0.0, 0.7, -3.0])
def test_off_diagonal_scaling(a):
    """min t s.t. [[t, a], [a, 1]] >= 0 has optimum a^2 (a wrong sqrt 2 gives 2 a^2 or a^2 / 2)."""
    s = solve_sdp(1, [AffineLMI(np.array([[0.0, a], [a, 1.0]]), np.array([[[1.0, 0.0], [0.0, 0.0]]]))],
                  c=np.ones(1))
    assert s.status == "solved" and s.x[0] == pytest.approx(a * a, abs=1e-6)


def test_nonneg_and_infeasible():
    s = solve_sdp(1, [AffineLMI(-np.eye(2), np.eye(2)[None]), AffineLMI(-np.eye(2), -np.eye(2)[None])])
    assert s.status == "infeasible"                      # x I >= I and -x I >= I
    s = solve_sdp(2, [AffineLMI(np.zeros((1, 1)), np.array([[[1.0]], [[1.0]]]))], c=np.array([1.0, 2.0]),
                  nonneg=(0, 1), G=np.array([[1.0, 1.0]]), h=np.array([1.0]))
    assert s.status == "solved" and np.allclose(s.x, [1.0, 0.0], atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), seeds)
def test_random_sdp_agrees_with_cvxpy(k, n_vars, seed):
    """min c^T x s.t. F0 + sum x_i F_i >= 0 and |x_i| <= 1 (a diagonal LMI), against cvxpy."""
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(seed)
    F0 = np.eye(k) + 0.3 * _sym(rng, k)
    F0 += (0.1 - np.linalg.eigvalsh(F0)[0]) * np.eye(k) if np.linalg.eigvalsh(F0)[0] < 0.1 else 0
    Fs, c = np.stack([_sym(rng, k) for _ in range(n_vars)]), rng.standard_normal(n_vars)
    box = AffineLMI(np.eye(2 * n_vars), np.stack([np.diag(np.r_[-e, e]) for e in np.eye(n_vars)]))
    s = solve_sdp(n_vars, [AffineLMI(F0, Fs), box], c=c)
    x = cp.Variable(n_vars)
    F = F0 + sum(x[i] * Fs[i] for i in range(n_vars))
    ref = cp.Problem(cp.Minimize(c @ x), [(F + F.T) / 2 >> 0, cp.abs(x) <= 1]).solve(solver="CLARABEL")
    assert s.status == "solved" and c @ s.x == pytest.approx(ref, abs=1e-6)
    assert np.linalg.eigvalsh(AffineLMI(F0, Fs).at(s.x))[0] > -1e-7


def test_bad_shapes():
    with pytest.raises(ShapeError, match="F0"):
        AffineLMI(np.eye(2), np.zeros((1, 3, 3)))
    with pytest.raises(ShapeError, match="Fs"):
        solve_sdp(2, [AffineLMI(np.eye(2), np.zeros((1, 2, 2)))])
    with pytest.raises(ShapeError, match="s"):
        smat(np.ones(4), 2)


def test_missing_clarabel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "clarabel", None)
    with pytest.raises(ImportError, match=r"lyactl\[sdp\]"):
        solve_sdp(1, [AffineLMI(np.eye(1), np.eye(1)[None])])
