"""Optimizer models: symbolic == numeric, Kronecker structure, and the matrices reproduce
the optimizers' own update rules written out step by step."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError
from lyactl.analysis.optimizers import ALL_MODELS, BETA, ETA, LAM, WD, OptimizerParams, adam, gd, heavy_ball, nesterov

params = st.builds(OptimizerParams, st.floats(0, 1), st.floats(0, 0.99), st.floats(0, 0.5))


@settings(max_examples=25, deadline=None)
@given(params, st.floats(-10, 100))
def test_symbolic_equals_numeric(p, lam):
    for make in ALL_MODELS:
        m = make()
        sym = m.symbolic_matrix().subs({ETA: p.eta, BETA: p.beta, WD: p.wd, LAM: lam})
        np.testing.assert_allclose(np.array(sym, dtype=float), m.matrix(lam, p), rtol=1e-12, atol=1e-12)


def _rules(name, x, v, lam, p):
    """The optimizers' update rules, written as PyTorch does (independent of the model)."""
    if name == "gd":
        return (x - p.eta * (lam @ x + p.wd * x),)
    if name == "adam":  # AdamW with frozen preconditioner (lam already preconditioned)
        m = p.beta * v + (1 - p.beta) * (lam @ x)
        return x - p.eta * p.wd * x - p.eta * m, m
    g = lam @ x + p.wd * x
    v = p.beta * v + g
    step = g + p.beta * v if name == "nesterov" else v
    return x - p.eta * step, v


@settings(max_examples=25, deadline=None)
@given(params, st.integers(1, 4), st.integers(0, 2**31))
def test_matrix_curvature_reproduces_update_rules(p, n, seed):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((n, n))
    H = H @ H.T
    for make in ALL_MODELS:
        m = make()
        A = m.matrix(H, p)
        z = rng.standard_normal(A.shape[0])
        x, v = z[:n], z[n:] if len(m.slots) == 2 else None
        expected = np.concatenate(_rules(m.name, x, v, H, p))
        np.testing.assert_allclose(A @ z, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(params, st.lists(st.floats(0, 50), min_size=1, max_size=4))
def test_diagonal_curvature_is_block_diagonal_by_mode(p, lams):
    """Slot-major -> mode-major permutation turns A(diag(lam)) into blocks A(lam_i), exactly."""
    from scipy.linalg import block_diag

    n = len(lams)
    for make in ALL_MODELS:
        m = make()
        s = len(m.slots)
        perm = [slot * n + i for i in range(n) for slot in range(s)]
        big = m.matrix(np.array(lams), p)[np.ix_(perm, perm)]
        np.testing.assert_array_equal(big, block_diag(*[m.matrix(l, p) for l in lams]))


def test_symbolic_matrix_uses_named_symbols():
    assert heavy_ball().symbolic_matrix().free_symbols == {ETA, LAM, BETA, WD}
    assert gd().params == (ETA, WD)
    assert adam().slots == ("x", "m") and nesterov().slots == ("x", "v")
    assert isinstance(heavy_ball().symbolic_system().f, sp.ImmutableMatrix)


@pytest.mark.parametrize("kw, err, name", [
    (dict(eta=-0.1), InvalidArgumentError, "eta"), (dict(eta=0.1, beta=1.0), InvalidArgumentError, "beta"),
    (dict(eta=0.1, wd=-1.0), InvalidArgumentError, "wd"), (dict(eta=float("nan")), NonFiniteError, "eta"),
    (dict(eta="0.1"), InvalidArgumentError, "eta"),
])
def test_bad_params(kw, err, name):
    with pytest.raises(err, match=name):
        OptimizerParams(**kw)


def test_bad_curvature():
    p = OptimizerParams(0.1)
    with pytest.raises(ShapeError, match="curvature"):
        heavy_ball().matrix(np.ones((2, 3)), p)
    with pytest.raises(NonFiniteError, match="curvature"):
        heavy_ball().matrix(float("inf"), p)
    with pytest.raises(InvalidArgumentError, match="p"):
        heavy_ball().matrix(1.0, (0.1, 0.9, 0.0))
