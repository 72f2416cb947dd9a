"""Common quadratic Lyapunov functions: certificates re-checked, failures witnessed."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.analysis.common_lyapunov import (common_lyapunov, common_lyapunov_over_curvature, common_lyapunov_sdp,
                                             decrease_margin)
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


# --- the SDP path (cvxpy, extra "sdp"; in the test extra) ---------------------------------

def _interval_check(P, make, p, lo, hi, seed):
    """The convexity claim, checked directly: P decreases at random curvatures inside the
    interval, not only at the sampled ones."""
    lams = np.random.default_rng(seed).uniform(lo, hi, 40)
    return max(np.linalg.eigvalsh(make().matrix(l, p).T @ P @ make().matrix(l, p) - P)[-1] for l in lams)


def test_sdp_certifies_a_range_the_search_leaves_unknown():
    p, lo, hi = OptimizerParams(0.1, 0.5), 2.0, 8.0
    cheap = common_lyapunov_over_curvature(heavy_ball(), p, lo, hi, 8, sdp=False)
    ev = common_lyapunov_over_curvature(heavy_ball(), p, lo, hi, 8)
    assert cheap.verdict is Verdict.UNKNOWN
    assert ev.verdict is Verdict.HOLDS and ev.details["search"] == "sdp"
    assert ev.details["covers_interval"] == [lo, hi]
    P = np.array(ev.details["P"])
    _check_certificate(P, [heavy_ball().matrix(l, p) for l in np.linspace(lo, hi, 8)], 0)
    assert _interval_check(P, heavy_ball, p, lo, hi, 0) < 0


def test_without_cvxpy_the_old_behaviour_stays(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    p = OptimizerParams(0.1, 0.5)
    ev = common_lyapunov_over_curvature(heavy_ball(), p, 2.0, 8.0, 8)
    assert ev.verdict is Verdict.UNKNOWN
    assert common_lyapunov_sdp([heavy_ball().matrix(3.0, p)]) is None


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([heavy_ball, adam]), st.floats(0.3, 0.95), st.floats(0.5, 10.0), st.floats(1.2, 6.0), seeds)
def test_sdp_verdicts_cover_the_interval_and_never_lose_a_holds(make, beta, lo, ratio, seed):
    p, hi = OptimizerParams(0.1, beta), lo * ratio
    kw = dict(max_products=300, iters=100)
    with_sdp = common_lyapunov_over_curvature(make(), p, lo, hi, 6, **kw)
    without = common_lyapunov_over_curvature(make(), p, lo, hi, 6, sdp=False, **kw)
    if without.verdict is not Verdict.UNKNOWN:
        assert with_sdp.verdict is without.verdict  # the SDP runs only after the search fails
    if with_sdp.verdict is Verdict.HOLDS:
        assert _interval_check(np.array(with_sdp.details["P"]), make, p, lo, hi, seed) < 0


def test_vertex_sdp_is_infeasible_when_switching_diverges():
    """A pair whose product diverges has no common P: the SDP must not return one that passes."""
    A1 = np.array([[0.5, 1.8], [0.0, 0.5]])
    P = common_lyapunov_sdp([A1, A1.T])
    assert P is None or decrease_margin(P, [A1, A1.T]) <= 0
