"""Balanced truncation: the H-infinity bound holds on the measured error, the truncated
balanced system is balanced, nothing truncated changes nothing, LRU mapping back, refusals."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from lyactl.analysis.balanced import (Truncation, balanced_truncation, frequency_response, hinf_error,
                                      lru_truncation, rank_for_energy)
from lyactl.analysis.gramians import gramians, hankel_singular_values, real_output_realisation
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError
from strategies import random_complex, seeds, stable_dense_systems, stable_diagonal_systems

any_system = st.one_of(stable_diagonal_systems(), stable_diagonal_systems(complex_=False), stable_dense_systems())
GRID_RTOL = 1e-6  # the sampled error is a lower bound; this only absorbs rounding


def _n(A):
    return np.shape(A)[0]


def _slack(t):
    return GRID_RTOL * t.bound + 1e-9 * float(np.sum(t.hsv))


@settings(max_examples=50, deadline=None)
@given(any_system, st.data())
def test_measured_hinf_error_never_exceeds_the_bound(sys, data):
    A, B, C = sys
    rank = data.draw(st.integers(0, _n(A)))
    D = np.random.default_rng(0).standard_normal((C.shape[0], B.shape[1]))
    t = balanced_truncation(A, B, C, D, rank=rank)
    err = hinf_error((A, B, C, D), t, n_freq=512)
    assert err <= t.bound + _slack(t)
    # and it is not vacuous: no order-r system gets closer than sigma_{r+1} (Hankel norm),
    # checked where the peaks are broad (rho <= 0.95 here) with 2 % for the sampling
    if rank < _n(A):
        assert err >= 0.98 * t.hsv[rank]
    assert t.bound == pytest.approx(2 * t.hsv[rank:].sum())


@settings(max_examples=40, deadline=None)
@given(stable_diagonal_systems(), st.data())
def test_lru_truncation_error_within_bound_on_the_real_output_map(sys, data):
    lam, B, C = sys
    rank = data.draw(st.integers(0, 2 * _n(lam)))
    D = np.random.default_rng(1).standard_normal(B.shape[1]) if B.shape[1] == C.shape[0] else None
    t = lru_truncation(lam, B, C, D, rank=rank)
    err = hinf_error((lam, B, C, D), t, n_freq=512, real_output=True)
    assert err <= t.bound + _slack(t)
    np.testing.assert_allclose(t.hsv, hankel_singular_values(*real_output_realisation(lam, B, C)),
                               rtol=1e-7, atol=1e-9 * t.hsv[0])
    if rank < 2 * _n(lam):
        assert err >= 0.98 * t.hsv[rank]


@settings(max_examples=40, deadline=None)
@given(any_system, st.data())
def test_truncation_projects_onto_the_balanced_coordinates(sys, data):
    """``Tinv P Tinv^H = T^H Q T = diag(sigma_1..sigma_r)``: the kept coordinates are balanced.
    In discrete time the truncated system's own Gramians are NOT exactly that: the (1,1) block
    of the balanced equation carries ``A12 S2 A12^H``, so ``S1 - P_r >= 0`` and ``S1 - Q_r >= 0``."""
    A, B, C = sys
    assume(_n(A) > 1)
    rank = data.draw(st.integers(1, _n(A) - 1))
    t = balanced_truncation(A, B, C, rank=rank, rediagonalise=False)
    P, Q = gramians(A, B, C)
    S1 = np.diag(t.hsv[:rank])
    tol = 1e-7 * t.hsv[0]
    assert np.linalg.norm(t.Tinv @ P @ t.Tinv.conj().T - S1) <= tol
    assert np.linalg.norm(t.T.conj().T @ Q @ t.T - S1) <= tol
    np.testing.assert_allclose(t.Tinv @ t.T, np.eye(rank), atol=1e-7 * np.sqrt(t.hsv[0] / t.hsv[rank - 1]))
    Pr, Qr = gramians(t.A, t.B, t.C)
    assert np.linalg.eigvalsh(S1 - Pr)[0] >= -tol and np.linalg.eigvalsh(S1 - Qr)[0] >= -tol


@settings(max_examples=40, deadline=None)
@given(st.one_of(stable_diagonal_systems(), stable_diagonal_systems(complex_=False)), st.data())
def test_diagonal_in_diagonal_out_with_consistent_maps(sys, data):
    lam, B, C = sys
    rank = data.draw(st.integers(1, _n(lam)))
    t = balanced_truncation(lam, B, C, rank=rank)
    assert t.A.shape == (rank,) and t.B.shape == (rank, B.shape[1]) and t.C.shape == (C.shape[0], rank)
    assert np.max(np.abs(t.A)) < 1
    scale = np.linalg.norm(t.T, 2) * np.linalg.norm(t.Tinv, 2)
    np.testing.assert_allclose(t.Tinv @ (lam[:, None] * t.T), np.diag(t.A), atol=1e-8 * scale)
    np.testing.assert_allclose(t.Tinv @ B, t.B, atol=1e-8 * scale * np.abs(B).max())
    np.testing.assert_allclose(C @ t.T, t.C, atol=1e-8 * scale * np.abs(C).max())


@settings(max_examples=30, deadline=None)
@given(stable_diagonal_systems(complex_=False), st.data())
def test_real_symmetric_system_stays_real_and_diagonal(sys, data):
    """Real ``lam`` with ``B = C^T``: ``P = Q``, so the balanced reduced ``A`` is symmetric, its
    eigenvalues real, and the diagonal result comes back real (float64)."""
    lam, _, C = sys
    rank = data.draw(st.integers(1, _n(lam)))
    try:
        t = balanced_truncation(lam, C.T, C, rank=rank)
    except InvalidArgumentError:  # a rank above the numerical minimal order
        assume(False)
    assert t.A.dtype == t.B.dtype == t.C.dtype == np.float64 and t.A.shape == (rank,)
    assert hinf_error((lam, C.T, C), t) <= t.bound + _slack(t)


@settings(max_examples=30, deadline=None)
@given(any_system)
def test_truncating_nothing_changes_nothing(sys):
    A, B, C = sys
    t = balanced_truncation(A, B, C, rank=_n(A))
    assert t.bound == 0.0 and hinf_error((A, B, C), t) == 0.0
    np.testing.assert_array_equal(t.A, A)


@settings(max_examples=30, deadline=None)
@given(stable_diagonal_systems())
def test_lru_keeping_all_real_states_returns_the_layer(sys):
    lam, B, C = sys
    t = lru_truncation(lam, B, C, rank=2 * _n(lam))
    assert t.bound == 0.0 and hinf_error((lam, B, C), t, real_output=True) == 0.0
    np.testing.assert_array_equal(t.Tinv @ np.vstack([B, B.conj()]), t.B)
    np.testing.assert_array_equal(np.hstack([C, C.conj()]) @ t.T, t.C)


@settings(max_examples=30, deadline=None)
@given(stable_diagonal_systems(max_n=4), seeds)
def test_truncating_uncontrollable_and_unobservable_states_changes_nothing(sys, seed):
    """Append modes with B = 0 and modes with C = 0: their HSVs are 0, truncating them costs 0."""
    lam, B, C = sys
    rng = np.random.default_rng(seed)
    n, extra = _n(lam), 0.9 * np.exp(2j * np.pi * rng.uniform(size=4))
    lam2 = np.concatenate([lam, extra])
    B2 = np.vstack([B, np.zeros((2, B.shape[1])), random_complex(rng, (2, B.shape[1]))])
    C2 = np.hstack([C, random_complex(rng, (C.shape[0], 2)), np.zeros((C.shape[0], 2))])
    t = balanced_truncation(lam2, B2, C2, rank=n)
    assert t.bound <= 1e-7 * t.hsv[0]
    assert hinf_error((lam2, B2, C2), t) <= 1e-7 * t.hsv[0]
    with pytest.raises(InvalidArgumentError, match="^rank: .*numerical minimal order"):
        balanced_truncation(lam2, B2, C2, rank=n + 1)


def _simulate(A, B, C, u, real_output=False):
    x = np.zeros(A.shape[0], dtype=complex)
    ys = []
    for uk in u:
        y = C @ x
        ys.append(y.real if real_output else y)
        x = (A * x if A.ndim == 1 else A @ x) + B @ uk
    return np.array(ys)


@settings(max_examples=40, deadline=None)
@given(stable_diagonal_systems(), st.data(), seeds)
def test_lru_form_reproduces_the_reduced_real_system_on_random_inputs(sys, data, seed):
    """Independent path: the dense real realisation (scipy solve) truncated without
    re-diagonalisation vs the complex-diagonal LRU form, simulated on the same inputs."""
    lam, B, C = sys
    rank = data.draw(st.integers(1, 2 * _n(lam)))
    Az, Bz, Cz = real_output_realisation(lam, B, C)
    try:
        dense = balanced_truncation(Az, Bz, Cz, rank=rank)
    except InvalidArgumentError:  # rank above the numerical minimal order (fast-decaying HSVs)
        assume(False)
    t = lru_truncation(lam, B, C, rank=rank)
    u = np.random.default_rng(seed).standard_normal((60, B.shape[1]))
    y_lru = _simulate(t.A, t.B, t.C, u, real_output=True)
    y_real = _simulate(dense.A, dense.B, dense.C, u).real
    np.testing.assert_allclose(y_lru, y_real, atol=1e-7 * (1 + np.abs(y_real).max()))
    # the mapping back: one complex mode per conjugate pair, one (real) mode per real eigenvalue
    real = t.A.imag == 0
    if rank < 2 * _n(lam):  # (rank 2N returns the layer itself)
        assert t.A.shape[0] == (rank + int(real.sum())) // 2 and np.all(t.A.imag >= 0)
        assert np.all(t.B[real].imag == 0) and np.all(t.C[:, real].imag == 0)
    scale = np.linalg.norm(t.T, 2) * np.linalg.norm(t.Tinv, 2)
    np.testing.assert_allclose(t.Tinv @ np.vstack([B, B.conj()]), t.B, atol=1e-8 * scale * np.abs(B).max())
    np.testing.assert_allclose(np.hstack([C, C.conj()]) @ t.T, t.C, atol=1e-8 * scale * np.abs(C).max())


def test_odd_rank_is_allowed_and_gives_a_real_mode():
    rng = np.random.default_rng(7)
    lam = 0.9 * np.sqrt(rng.uniform(size=5)) * np.exp(2j * np.pi * rng.uniform(size=5))
    B, C = random_complex(rng, (5, 2)), random_complex(rng, (2, 5))
    for rank in (1, 3, 5, 7):
        t = lru_truncation(lam, B, C, rank=rank)
        real = t.A.imag == 0
        assert real.sum() % 2 == 1 and t.rank == rank and 2 * len(t.A) - real.sum() == rank
        assert hinf_error((lam, B, C), t, real_output=True) <= t.bound + _slack(t)


def test_real_lam_lru_cannot_keep_more_real_states_than_its_minimal_order():
    rng = np.random.default_rng(8)
    lam, B, C = rng.uniform(-0.9, 0.9, 4), rng.standard_normal((4, 2)), rng.standard_normal((2, 4))
    t = lru_truncation(lam, B, C, rank=4)
    assert t.bound <= 1e-7 * t.hsv[0] and np.all(t.A.imag == 0)
    with pytest.raises(InvalidArgumentError, match="^rank: "):
        lru_truncation(lam, B, C, rank=5)


def test_balanced_truncation_real_output_dispatches_and_realifies():
    rng = np.random.default_rng(9)
    lam = 0.8 * np.exp(2j * np.pi * rng.uniform(size=4))
    B, C = random_complex(rng, (4, 2)), random_complex(rng, (2, 4))
    t = balanced_truncation(lam, B, C, rank=3, real_output=True)
    t_lru = lru_truncation(lam, B, C, rank=3)
    assert t.real_output and t.rank == 3 and t.bound == pytest.approx(t_lru.bound)
    A = np.diag(lam)  # dense complex: realified [[Re, -Im], [Im, Re]] and returned real and dense
    td = balanced_truncation(A, B, C, rank=3, real_output=True)
    assert td.A.shape == (3, 3) and np.isrealobj(td.A) and td.bound == pytest.approx(t.bound, rel=1e-6)
    assert hinf_error((A, B, C), td, real_output=True) <= td.bound + _slack(td)


def test_frequency_response_matches_dense_solve_and_realisation():
    rng = np.random.default_rng(4)
    lam, B, C = 0.9 * np.exp(2j * np.pi * rng.uniform(size=4)), random_complex(rng, (4, 2)), random_complex(rng, (3, 4))
    w = rng.uniform(0, 2 * np.pi, 7)
    G = frequency_response(lam, B, C, w=w)
    for k, wk in enumerate(w):
        np.testing.assert_allclose(G[k], C @ np.linalg.solve(np.exp(1j * wk) * np.eye(4) - np.diag(lam), B))
    np.testing.assert_allclose(frequency_response(lam, B, C, w=w, real_output=True),
                               frequency_response(*real_output_realisation(lam, B, C), w=w), atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.one_of(stable_dense_systems(), stable_diagonal_systems(complex_=False)), st.data())
def test_hinf_error_against_python_control_linfnorm(sys, data):
    """SLICOT ab13dd (through control.linfnorm) computes the exact H-infinity norm."""
    pytest.importorskip("slycot")
    control = pytest.importorskip("control")
    A, B, C = sys
    rank = data.draw(st.integers(0, _n(A) - 1))
    t = balanced_truncation(A, B, C, rank=rank, rediagonalise=False)
    M = np.diag(A) if np.ndim(A) == 1 else A
    E = control.ss(np.block([[M, np.zeros((_n(A), rank))], [np.zeros((rank, _n(A))), t.A]]),
                   np.vstack([B, t.B]), np.hstack([C, -t.C]), 0, dt=True)
    exact = float(control.linfnorm(E)[0])
    measured = hinf_error((A, B, C), t)
    assert exact * (1 - 1e-3) <= measured <= exact * (1 + 1e-9) + 1e-12
    assert exact <= t.bound + _slack(t)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=12), st.floats(0, 0.99))
def test_rank_for_energy_is_the_smallest_rank_keeping_the_energy(values, tol):
    hsv = np.sort(np.array(values))[::-1]
    r = rank_for_energy(hsv, tol)
    total = hsv.sum()
    if total == 0:
        assert r == 0
        return
    assert 1 <= r <= len(hsv)
    assert hsv[:r].sum() >= (1 - tol) * total * (1 - 1e-12)
    assert hsv[:r - 1].sum() < (1 - tol) * total
    assert 2 * hsv[r:].sum() <= 2 * tol * total * (1 + 1e-12) + 1e-12


@pytest.mark.parametrize("hsv, tol, exc, name", [
    ([1.0, 2.0], 0.1, InvalidArgumentError, "hsv"), ([1.0, -0.1], 0.1, InvalidArgumentError, "hsv"),
    ([1.0, np.nan], 0.1, NonFiniteError, "hsv"), ([[1.0]], 0.1, ShapeError, "hsv"),
    ([1.0], 1.0, InvalidArgumentError, "tol"), ([1.0], -0.1, InvalidArgumentError, "tol"),
])
def test_rank_for_energy_refusals(hsv, tol, exc, name):
    with pytest.raises(exc, match=f"^{name}: "):
        rank_for_energy(hsv, tol)


@pytest.mark.parametrize("rank", [-1, 4, 2.0, True, "2"])
def test_bad_rank_is_refused(rank):
    with pytest.raises(InvalidArgumentError, match="^rank: expected an int in"):
        balanced_truncation(np.array([0.5, 0.2, 0.1]), np.ones((3, 1)), np.ones((1, 3)), rank=rank)


def test_unstable_and_nonfinite_systems_are_refused():
    with pytest.raises(InvalidArgumentError, match="^A: .*rho"):
        balanced_truncation(np.array([0.5, 1.01]), np.ones((2, 1)), np.ones((1, 2)), rank=1)
    with pytest.raises(InvalidArgumentError, match="^lam: |^A: "):
        lru_truncation(np.array([0.5, 1.0j]), np.ones((2, 1)), np.ones((1, 2)), rank=1)
    with pytest.raises(NonFiniteError, match="^C: "):
        lru_truncation(np.array([0.5, 0.1j]), np.ones((2, 1)), np.array([[np.nan, 1.0]]), rank=1)
    with pytest.raises(ShapeError, match="^D: "):
        balanced_truncation(np.array([0.5, 0.2]), np.ones((2, 2)), np.ones((1, 2)), np.ones(2), rank=1)
    with pytest.raises(ShapeError, match="^lam: "):
        lru_truncation(np.eye(2) * 0.5, np.ones((2, 1)), np.ones((1, 2)), rank=1)
    with pytest.raises(InvalidArgumentError, match="^reduced: "):
        hinf_error((np.array([0.5]), np.ones((1, 1)), np.ones((1, 1))), "not a system")


def test_ill_conditioned_rediagonalisation_is_refused_or_left_dense():
    rng = np.random.default_rng(11)
    lam, B, C = 0.9 * np.exp(2j * np.pi * rng.uniform(size=5)), random_complex(rng, (5, 2)), random_complex(rng, (2, 5))
    with pytest.raises(InvalidArgumentError, match=r"^rank: .*cond\(eigenvectors\)"):
        balanced_truncation(lam, B, C, rank=3, max_cond=1.0)
    dense = balanced_truncation(lam, B, C, rank=3, max_cond=1.0, rediagonalise=False)
    assert dense.A.shape == (3, 3) and isinstance(dense, Truncation)
    assert hinf_error((lam, B, C), dense) <= dense.bound + _slack(dense)


def test_balanced_certificate_beats_random_mode_selection():
    """What the certificate says that a random choice does not: on a layer with 3 dominant
    modes among 20, balanced truncation to 3 states is certified within 2 * sum(tail HSVs),
    below the measured error of 3 modes kept at random (in most draws a dominant mode goes);
    and no reduction to 3 states, random or not, gets below the Hankel lower bound sigma_4."""
    rng = np.random.default_rng(3)
    n, r = 20, 3
    lam = np.concatenate([0.95 * np.exp(1j * rng.uniform(0, np.pi, r)), 0.3 * np.exp(1j * rng.uniform(0, np.pi, n - r))])
    scale = np.concatenate([np.ones(r), 0.02 * np.ones(n - r)])
    B, C = random_complex(rng, (n, 2)) * scale[:, None], random_complex(rng, (2, n)) * scale[None, :]
    t = balanced_truncation(lam, B, C, rank=r)
    assert hinf_error((lam, B, C), t) <= t.bound + _slack(t)
    errors = []
    for seed in range(20):
        keep = np.random.default_rng(seed).choice(n, r, replace=False)
        err = hinf_error((lam, B, C), (lam[keep], B[keep], C[:, keep]))
        assert err >= 0.95 * t.hsv[r]  # sigma_{r+1}: no order-r system does better
        errors.append(err)
    assert np.median(errors) > t.bound and sum(e > t.bound for e in errors) >= 15
