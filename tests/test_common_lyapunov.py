"""Common quadratic Lyapunov functions: certificates re-checked, failures witnessed."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.analysis.common_lyapunov import common_lyapunov, common_lyapunov_over_curvature, decrease_margin
from lyactl.errors import InvalidArgumentError, ShapeError
from lyactl.analysis.optimizers import OptimizerParams, adam, heavy_ball
from lyactl.verdict import Verdict
from strategies import seeds


def _check_certificate(P, As, seed):
    P = np.array(P)
    assert np.linalg.eigvalsh(P)[0] > 0
    for A in As:
        assert np.linalg.eigvalsh(A.T @ P @ A - P)[-1] < 0
    rng = np.random.default_rng(seed)  # random switching: V decreases every step
    z = rng.standard_normal(P.shape[0])
    for _ in range(50):
        z_next = As[rng.integers(len(As))] @ z
        assert z_next @ P @ z_next < z @ P @ z or z @ P @ z < 1e-200
        z = z_next


def _check_witness(ev, As):
    seq = ev.details["witness"]
    M = np.eye(As[0].shape[0])
    for i in seq:
        M = As[i] @ M
    assert np.max(np.abs(np.linalg.eigvals(M))) ** (1 / len(seq)) >= 1


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([heavy_ball, adam]), st.floats(0.0, 0.95), st.floats(0.05, 3.0), seeds)
def test_verdicts_over_curvature_are_backed(make, beta, h_max, seed):
    eta = 0.1
    p = OptimizerParams(eta, beta)
    lams = np.linspace(0.1 / eta * 0.1, h_max / eta, 5)
    As = [make().matrix(float(l), p) for l in lams]
    ev = common_lyapunov_over_curvature(make(), p, float(lams[0]), float(lams[-1]), 5,
                                        max_products=300, iters=100)
    if ev.verdict is Verdict.HOLDS:
        _check_certificate(ev.details["P"], As, seed)
        assert ev.margin == pytest.approx(decrease_margin(np.array(ev.details["P"]), As))
    elif ev.verdict is Verdict.FAILS:
        _check_witness(ev, As)


def test_switching_between_stable_matrices_can_diverge():
    A1 = np.array([[0.5, 1.8], [0.0, 0.5]])
    ev = common_lyapunov([A1, A1.T])
    assert all(np.max(np.abs(np.linalg.eigvals(A))) < 1 for A in (A1, A1.T))
    assert ev.verdict is Verdict.FAILS
    _check_witness(ev, [A1, A1.T])


def test_unstable_member_fails_and_small_gain_holds():
    assert common_lyapunov([np.eye(2) * 0.5, np.eye(2) * 1.1]).details["witness"] == [1]
    rng = np.random.default_rng(3)
    As = [0.3 * rng.standard_normal((3, 3)) / 3 for _ in range(4)]
    ev = common_lyapunov(As)
    assert ev.verdict is Verdict.HOLDS
    _check_certificate(ev.details["P"], As, 0)


def test_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="As"):
        common_lyapunov([])
    with pytest.raises(ShapeError, match="As"):
        common_lyapunov([np.eye(2), np.eye(3)])
    with pytest.raises(InvalidArgumentError, match="As"):
        common_lyapunov(np.eye(2))
    with pytest.raises(InvalidArgumentError, match="lam_min"):
        common_lyapunov_over_curvature(heavy_ball(), OptimizerParams(0.1, 0.5), 2.0, 1.0)


def test_heavy_ball_ranges_hold_and_fail():
    p_small, p_big = OptimizerParams(0.1, 0.3), OptimizerParams(0.1, 0.9)
    ok = common_lyapunov_over_curvature(heavy_ball(), p_small, 0.5, 5.0, 8)
    assert ok.verdict is Verdict.HOLDS
    _check_certificate(ok.details["P"], [heavy_ball().matrix(l, p_small) for l in np.linspace(0.5, 5, 8)], 1)
    bad = common_lyapunov_over_curvature(heavy_ball(), p_big, 1.0, 30.0, 8)
    As = [heavy_ball().matrix(l, p_big) for l in np.linspace(1, 30, 8)]
    assert all(np.max(np.abs(np.linalg.eigvals(A))) < 1 for A in As)  # each one stable ...
    assert bad.verdict is Verdict.FAILS                                # ... switching is not
    _check_witness(bad, As)
