"""Certified rates over S(m, L): PEPit as the independent oracle, closed forms, properties,
counterexamples, and re-verification that can fail.

How PEPit's worst case relates to a certified rho. A certificate gives, for every f in
S(m, L) and every N, ``V(eta_N) <= rho^{2N} V(eta_0)`` with ``V = eta^T P eta``, ``eta = (xi, zeta)``
and ``zeta_0 = 0`` (deviations from the fixed point). PEPit computes the exact worst case over
the class of ``V(eta_N)`` subject to ``V(eta_0) <= 1``; soundness is ``tau_V <= rho^{2N}``,
constant-free. In the plain norm, ``|xi_N|^2 <= c rho^{2N} |xi_0|^2`` with ``c = norm_constant``.
For gd (scalar P) the two coincide and the worst case is a quadratic, ``tau = rho_gd^{2N}``.
"""

import functools
import math
import operator
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.analysis.lure import (LureSystem, from_model, gd_system, heavy_ball_system, nesterov_system,
                                  quadratic_rate, tuned_gd, tuned_heavy_ball, tuned_nesterov)
from lyactl.analysis.optimizers import ALL_MODELS, OptimizerParams
from lyactl.analysis.rates import (RateCertificate, bisect_rate, certify_rate, lifted_forms, lmi_matrix,
                                   lmi_max_eig, lmi_oracle, norm_constant, reverify)
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError
from lyactl.verdict import Verdict

PEP_TOL = 1e-4  # slack for PEPit's SDP solver (SCS where CLARABEL fails: ~1e-5 relative accuracy)


def _gd_rate(a, m, L):
    return max(abs(1 - a * m), abs(1 - a * L))


def _pepit_worst(cert: RateCertificate, N: int, lyapunov_norm: bool) -> float:
    """PEPit's worst case over S(m, L) of V(eta_N) / V(eta_0) (or |xi_N|^2 / |xi_0|^2)."""
    from PEPit import PEP
    from PEPit.functions import SmoothStronglyConvexFunction

    sys_, P, n = cert.system, cert.P, cert.system.n
    e = np.linalg.lstsq(np.vstack([sys_.A - np.eye(n), sys_.C]), np.r_[np.zeros(n), 1.0], rcond=None)[0]
    problem = PEP()
    f = problem.declare_function(SmoothStronglyConvexFunction, mu=cert.m, L=cert.L)
    xs = f.stationary_point()
    dev = [problem.set_initial_point() for _ in range(n)]          # xi_0 - xi*
    xi = [float(e[j]) * xs + dev[j] for j in range(n)]
    zeta = 0 * xs                                                  # zeta_0 = 0 (deviation)

    def lin(coef, vecs):  # float() first: numpy scalars would broadcast a Point into an array
        return functools.reduce(operator.add, [float(c) * v for c, v in zip(coef, vecs)])

    def quad(vecs, W):
        k = len(vecs)
        return functools.reduce(operator.add, [float(W[i, j]) * (vecs[i] * vecs[j]) for i in range(k) for j in range(k)])

    W0 = P[:n, :n] if lyapunov_norm else np.eye(n)
    problem.set_initial_condition(quad(dev, W0) <= 1)
    for _ in range(N):
        y = lin(sys_.C[0], xi)
        u = f.gradient(y)
        xi = [lin(list(sys_.A[i]) + [sys_.B[i, 0]], xi + [u]) for i in range(n)]
        zeta = float(cert.L) * (y - xs) - u
    d = [xi[j] - float(e[j]) * xs for j in range(n)]
    if lyapunov_norm:
        eta = d + ([zeta] if cert.off_by_one else [])
        problem.set_performance_metric(quad(eta, P))
    else:
        problem.set_performance_metric(quad(d, np.eye(n)))
    try:
        return float(problem.solve(verbose=0, solver="CLARABEL"))
    except Exception:  # cvxpy.error.SolverError: CLARABEL stalls on some PEPs, SCS does not
        return float(problem.solve(verbose=0, solver="SCS"))


GRID = [  # (system, m, L): a handful of points, tuned and untuned
    (gd_system(0.15), 1.0, 10.0),
    (heavy_ball_system(0.1, 0.5), 1.0, 10.0),
    (heavy_ball_system(*tuned_heavy_ball(1.0, 4.0)), 1.0, 4.0),
    (nesterov_system(*tuned_nesterov(1.0, 10.0)), 1.0, 10.0),
    (nesterov_system(0.05, 0.8), 1.0, 20.0),
]


@pytest.mark.parametrize("system, m, L", GRID, ids=lambda v: getattr(v, "name", str(v)))
def test_certified_rate_is_sound_against_pepit(system, m, L):
    res = certify_rate(system, m, L)
    assert res.verdict is Verdict.HOLDS and reverify(res.certificate)
    cert, N = res.certificate, 3
    tau_V = _pepit_worst(cert, N, lyapunov_norm=True)
    assert tau_V <= cert.rho ** (2 * N) * (1 + PEP_TOL) + PEP_TOL, (tau_V, cert.rho ** (2 * N))
    tau = _pepit_worst(cert, N, lyapunov_norm=False)
    assert tau <= norm_constant(cert) * cert.rho ** (2 * N) * (1 + PEP_TOL) + PEP_TOL
    assert res.rate >= res.quadratic_rate  # quadratics are in the class


@pytest.mark.parametrize("a, m, L", [(0.15, 1.0, 10.0), (0.05, 1.0, 10.0), (0.5, 0.5, 3.0)])
def test_gd_rate_is_tight_against_pepit_and_closed_form(a, m, L):
    res = certify_rate(gd_system(a), m, L)
    rho_gd = _gd_rate(a, m, L)
    assert abs(res.rate - rho_gd) <= 1e-4 and res.rate >= rho_gd
    N = 2
    tau = _pepit_worst(res.certificate, N, lyapunov_norm=False)
    assert tau ** (1 / (2 * N)) == pytest.approx(rho_gd, abs=1e-4)   # tight: the IQC loses nothing
    assert tau > (rho_gd - 1e-3) ** (2 * N)   # the oracle bites: a rate 1e-3 too small is refuted


@settings(max_examples=10, deadline=None)
@given(st.floats(1.5, 200.0), st.floats(0.02, 0.98))
def test_gd_closed_form_recovered(kappa, frac):
    m, L = 1.0, kappa
    a = frac * 2 / L
    res = certify_rate(gd_system(a), m, L)
    assert res.verdict is Verdict.HOLDS
    assert res.rate == pytest.approx(_gd_rate(a, m, L), abs=1e-4) and res.rate >= _gd_rate(a, m, L) - 1e-12


@settings(max_examples=6, deadline=None)
@given(st.sampled_from(["gd", "heavy-ball", "nesterov"]), st.floats(2.0, 30.0), st.floats(1e-2, 1e2),
       st.floats(0.2, 1.0))
def test_rate_invariant_under_scaling_of_the_class(name, kappa, s, frac):
    """f -> s f maps S(m, L) onto S(s m, s L); with step lr / s the iterates are the same."""
    m, L = 1.0, kappa
    tuned = {"gd": lambda: (tuned_gd(m, L), 0.0), "heavy-ball": lambda: tuned_heavy_ball(m, L),
             "nesterov": lambda: tuned_nesterov(m, L)}[name]()
    lr, beta = frac * tuned[0], tuned[1]
    make = {"gd": lambda a: gd_system(a), "heavy-ball": lambda a: heavy_ball_system(a, beta),
            "nesterov": lambda a: nesterov_system(a, beta)}[name]
    r1, r2 = certify_rate(make(lr), m, L), certify_rate(make(lr / s), s * m, s * L)
    assert r1.verdict is r2.verdict
    if r1.verdict is Verdict.HOLDS:
        assert abs(r1.rate - r2.rate) <= 3e-5  # a bisection step (tol 1e-5) or two, no more


@settings(max_examples=8, deadline=None)
@given(st.floats(1.5, 100.0), st.floats(0.05, 0.95), st.floats(0.05, 0.95))
def test_gd_rate_decreases_with_step_below_optimal(kappa, f1, f2):
    m, L = 1.0, kappa
    a1, a2 = sorted((f1 * tuned_gd(m, L), f2 * tuned_gd(m, L)))
    r1, r2 = certify_rate(gd_system(a1), m, L).rate, certify_rate(gd_system(a2), m, L).rate
    assert r2 <= r1 + 1e-5


@pytest.mark.parametrize("kappa", [25.0, 100.0])
def test_polyak_heavy_ball_is_not_certified_at_large_condition_number(kappa):
    res = certify_rate(heavy_ball_system(*tuned_heavy_ball(1.0, kappa)), 1.0, kappa)
    assert res.verdict is Verdict.UNKNOWN and res.rate is None and res.certificate is None
    assert res.quadratic_rate < 1  # every quadratic converges: no quadratic counterexample


def test_polyak_heavy_ball_cycles_on_lessards_function():
    """Lessard et al. (2016) Sec. 4.6: a piecewise quadratic in S(1, 25) on which Polyak-tuned
    heavy-ball cycles; consistent with UNKNOWN above (no rate < 1 can hold)."""
    m, L = 1.0, 25.0
    grad = lambda x: 25 * x if x < 1 else (x + 24 if x < 2 else 25 * x - 24)  # noqa: E731
    xs = np.linspace(-3, 5, 801)
    g = np.array([grad(x) for x in xs])
    slopes = np.diff(g) / np.diff(xs)
    assert slopes.min() >= m - 1e-9 and slopes.max() <= L + 1e-9   # grad f is m-strongly monotone, L-Lipschitz
    a, b = tuned_heavy_ball(m, L)
    x_prev = x = 3.3
    traj = []
    for _ in range(2000):
        x, x_prev = x - a * grad(x) + b * (x - x_prev), x
        traj.append(x)
    assert min(abs(v) for v in traj[-200:]) > 0.1  # never settles at the minimiser 0


def test_sector_only_fails_where_off_by_one_certifies():
    """The weighted off-by-one multiplier tightens the sector IQC (Lessard et al. Sec. 4)."""
    system = nesterov_system(*tuned_nesterov(1.0, 25.0))
    sector, both = certify_rate(system, 1.0, 25.0, off_by_one=False), certify_rate(system, 1.0, 25.0)
    assert sector.verdict is Verdict.UNKNOWN and both.verdict is Verdict.HOLDS
    assert both.certificate.lam_o > 0


def test_quadratic_counterexample_fails():
    m, L, a = 1.0, 10.0, 0.25  # a L > 2
    res = certify_rate(gd_system(a), m, L)
    assert res.verdict is Verdict.FAILS and res.rate is None
    lam = res.worst_curvature
    assert m <= lam <= L and abs(1 - a * lam) >= 1  # the witness, checked without lyactl


def test_reverify_uses_numpy_only_and_fails_on_mutants(monkeypatch):
    res = certify_rate(heavy_ball_system(0.1, 0.5), 1.0, 10.0)
    cert = res.certificate
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    monkeypatch.setitem(sys.modules, "clarabel", None)
    assert reverify(cert) and lmi_max_eig(cert) < 0 and np.linalg.eigvalsh(lmi_matrix(cert))[-1] < 0
    w, V = np.linalg.eigh(cert.P)
    mutants = [
        RateCertificate(cert.system, cert.m, cert.L, cert.rho, cert.P - 2 * w[-1] * np.outer(V[:, -1], V[:, -1]),
                        cert.lam_s, cert.lam_o, True),                         # P not positive definite
        RateCertificate(cert.system, cert.m, cert.L, res.quadratic_rate * 0.99, cert.P,
                        cert.lam_s, cert.lam_o, True),                         # below the quadratic bound
        RateCertificate(cert.system, cert.m, cert.L, cert.rho, cert.P, -1.0, cert.lam_o, True),
        RateCertificate(cert.system, cert.m, cert.L, cert.rho, cert.P * (1 + 1e-3 * np.eye(3)[::-1]),
                        cert.lam_s, cert.lam_o, True),                         # P off its symmetry
    ]
    assert not any(reverify(c) for c in mutants)
    P = cert.P.copy()  # shrink P along the direction the decrease needs most: the LMI breaks
    M = lmi_matrix(cert)
    z = np.linalg.eigh(M)[1][:, -1][:3]
    bad = RateCertificate(cert.system, cert.m, cert.L, cert.rho, P + 1e3 * abs(M).max() * np.outer(z, z) / (z @ z),
                          cert.lam_s, cert.lam_o, True)
    assert lmi_max_eig(bad) > 0 and not reverify(bad)


def test_missing_clarabel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "clarabel", None)
    with pytest.raises(ImportError, match=r"lyactl\[sdp\]"):
        certify_rate(gd_system(0.1), 1.0, 10.0)


def test_certify_rate_does_not_need_cvxpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    assert certify_rate(heavy_ball_system(0.1, 0.5), 1.0, 10.0).verdict is Verdict.HOLDS


# --- the same LMI through cvxpy: an independent check of the hand-written conic form -----------

def _cvxpy_oracle(system, m, L, off_by_one):
    """solve(rho) -> re-verified certificate or None; the LMI modelled in cvxpy (CLARABEL)."""
    cp = pytest.importorskip("cvxpy")
    Z, E, S, T = lifted_forms(system, m, L, off_by_one)
    k = Z.shape[0]
    P = cp.Variable((k, k), symmetric=True)
    lam_s, lam_o = cp.Variable(nonneg=True), cp.Variable(nonneg=True)
    r2 = cp.Parameter(nonneg=True)
    M = Z.T @ P @ Z - r2 * (E.T @ P @ E) + (lam_s + lam_o) * S - (r2 * lam_o) * T
    cons = [P >> np.eye(k), (M + M.T) / 2 << -1e-7 * np.eye(k + 1)] + ([] if off_by_one else [lam_o == 0])
    problem = cp.Problem(cp.Minimize(0), cons)

    def solve(rho):
        r2.value = rho * rho
        try:
            with warnings.catch_warnings():  # "inaccurate": reverify below decides
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver="CLARABEL")
        except cp.error.SolverError:
            return None
        if P.value is None:
            return None
        cert = RateCertificate(system, m, L, rho, (P.value + P.value.T) / 2, float(max(lam_s.value, 0)),
                               float(max(lam_o.value, 0)) if off_by_one else 0.0, off_by_one)
        return cert if reverify(cert) else None

    return solve


RATE_AGREE = 1e-4   # two bisections to width 1e-5 that may part at one near-boundary solve


@pytest.mark.parametrize("system, m, L, obo", [(s, m, L, True) for s, m, L in GRID] + [
    (nesterov_system(*tuned_nesterov(1.0, 25.0)), 1.0, 25.0, False),
    (heavy_ball_system(*tuned_heavy_ball(1.0, 25.0)), 1.0, 25.0, True),
    (gd_system(0.15), 1.0, 10.0, False)], ids=lambda v: getattr(v, "name", str(v)))
def test_native_lmi_agrees_with_cvxpy(system, m, L, obo):
    """Same feasibility verdict at every grid rho at least 1e-3 away from the certified rate, and
    the same bisected rate within RATE_AGREE (both None where neither certifies)."""
    unit = LureSystem(system.A, system.B * L, system.C)   # the units certify_rate solves in
    native, ref = lmi_oracle(unit, m / L, 1.0, obo), _cvxpy_oracle(unit, m / L, 1.0, obo)
    rho_q = quadratic_rate(system, m, L)[0]
    a, b = bisect_rate(native, rho_q, 1e-5), bisect_rate(ref, rho_q, 1e-5)
    assert (a is None) == (b is None)
    if a is not None:
        assert abs(a.rho - b.rho) <= RATE_AGREE
    edge = 1.0 if a is None else a.rho
    grid = [r for r in np.linspace(rho_q + 1e-4, 1 - 1e-4, 9) if abs(r - edge) > 1e-3]
    assert len(grid) >= 6
    assert [native(r) is not None for r in grid] == [ref(r) is not None for r in grid]


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(ALL_MODELS), st.floats(1e-3, 1.0), st.floats(0.0, 0.99), st.floats(-5.0, 50.0))
def test_lure_form_closes_to_the_update_matrix(make, eta, beta, lam):
    p = OptimizerParams(eta, beta)
    system = from_model(make(), p)
    assert np.allclose(system.closed_loop(lam), make().matrix(lam, p), atol=1e-12)


def test_user_system_matches_builtin_and_flags_consistency():
    hb = heavy_ball_system(0.1, 0.5)
    user = LureSystem(hb.A.tolist(), hb.B.ravel(), hb.C.ravel(), "user")
    assert certify_rate(user, 1.0, 10.0).rate == pytest.approx(certify_rate(hb, 1.0, 10.0).rate, abs=1e-9)
    assert hb.fixed_points_are_stationary()
    damped = LureSystem([[0.5]], [-0.1], [1.0])  # contracts, but its fixed point is no minimiser
    res = certify_rate(damped, 1.0, 2.0)
    assert res.verdict is Verdict.HOLDS and res.details["stationary_fixed_points"] is False


def test_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="m"):
        certify_rate(gd_system(0.1), 3.0, 1.0)
    with pytest.raises(NonFiniteError, match="L"):
        certify_rate(gd_system(0.1), 1.0, math.nan)
    with pytest.raises(InvalidArgumentError, match="m"):
        quadratic_rate(gd_system(0.1), -1.0, 1.0)
    with pytest.raises(ShapeError, match="B"):
        LureSystem(np.eye(2), np.ones(3), np.ones(2))
    with pytest.raises(NonFiniteError, match="C"):
        LureSystem(np.eye(2), np.ones(2), [1.0, math.inf])
    with pytest.raises(InvalidArgumentError, match="system"):
        certify_rate(np.eye(2), 1.0, 2.0)
