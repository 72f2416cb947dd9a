"""Gramians and Hankel singular values: Lyapunov residuals, closed form vs dense solvers,
similarity invariance, the real-output (2N-state) realisation, oracles and refusals."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from lyactl.analysis.gramians import (NonFiniteSystemError, conjugate_augmented, gramians, hankel_singular_values,
                                      real_output_gramians, real_output_realisation)
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError
from strategies import (random_complex, seeds, stable_dense_systems, stable_diagonal_systems,
                        well_conditioned_similarity)

any_system = st.one_of(stable_diagonal_systems(), stable_diagonal_systems(complex_=False), stable_dense_systems())


def _dense(A):
    return np.diag(A) if np.ndim(A) == 1 else np.asarray(A)


def _rel(residual, ref):
    return np.linalg.norm(residual) / max(np.linalg.norm(ref), 1e-300)


@settings(max_examples=60, deadline=None)
@given(any_system)
def test_gramians_satisfy_their_lyapunov_equations(sys):
    A, B, C = sys
    P, Q = gramians(A, B, C)
    M = _dense(A)
    assert _rel(M @ P @ M.conj().T + B @ B.conj().T - P, P) < 1e-10
    assert _rel(M.conj().T @ Q @ M + C.conj().T @ C - Q, Q) < 1e-10
    for G in (P, Q):  # Hermitian positive semidefinite
        np.testing.assert_array_equal(G, G.conj().T)
        assert np.linalg.eigvalsh(G)[0] >= -1e-10 * np.linalg.norm(G, 2)


@settings(max_examples=60, deadline=None)
@given(st.one_of(stable_diagonal_systems(), stable_diagonal_systems(complex_=False)))
def test_closed_form_equals_scipy_dense_solve(sys):
    lam, B, C = sys
    P, Q = gramians(lam, B, C)
    P_ref = scipy.linalg.solve_discrete_lyapunov(np.diag(lam), B @ B.conj().T)
    Q_ref = scipy.linalg.solve_discrete_lyapunov(np.diag(lam).conj().T, C.conj().T @ C)
    assert _rel(P - P_ref, P_ref) < 1e-10 and _rel(Q - Q_ref, Q_ref) < 1e-10
    assert np.isrealobj(P) == np.isrealobj(lam)


def test_python_control_dlyap_oracle_on_a_real_dense_system():
    """python-control's scipy path (no slycot needed): ``dlyap(A, W)`` solves A X A^T - X + W = 0."""
    control = pytest.importorskip("control")
    rng = np.random.default_rng(3)
    for n in (3, 12):  # scipy's 'direct' (n < 10) and 'bilinear' methods
        A = rng.standard_normal((n, n))
        A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
        B, C = rng.standard_normal((n, 2)), rng.standard_normal((3, n))
        P, Q = gramians(A, B, C)
        assert _rel(P - control.dlyap(A, B @ B.T, method="scipy"), P) < 1e-10
        assert _rel(Q - control.dlyap(A.T, C.T @ C, method="scipy"), Q) < 1e-10


@settings(max_examples=20, deadline=None)
@given(st.one_of(stable_dense_systems(), stable_diagonal_systems(complex_=False)))
def test_python_control_gram_oracle_with_slycot(sys):
    """An independent solver (SLICOT sb03md through control.gram, discrete time); HSVs from it."""
    pytest.importorskip("slycot")
    control = pytest.importorskip("control")
    A, B, C = sys
    ss = control.ss(_dense(A), B, C, 0, dt=True)
    Wc, Wo = control.gram(ss, "c"), control.gram(ss, "o")
    P, Q = gramians(A, B, C)
    assert _rel(P - Wc, Wc) < 1e-9 and _rel(Q - Wo, Wo) < 1e-9
    hsv_ref = np.sqrt(np.clip(np.sort(np.linalg.eigvals(Wc @ Wo).real)[::-1], 0, None))
    np.testing.assert_allclose(hankel_singular_values(A, B, C), hsv_ref, rtol=1e-6, atol=1e-7 * hsv_ref[0])


@settings(max_examples=60, deadline=None)
@given(st.one_of(stable_diagonal_systems(), stable_dense_systems()), seeds)
def test_hsv_invariant_under_similarity(sys, seed):
    A, B, C = sys
    M = _dense(A)
    T = well_conditioned_similarity(M.shape[0], seed, complex_=np.iscomplexobj(M))
    Ti = np.linalg.inv(T)
    hsv, hsv_t = hankel_singular_values(A, B, C), hankel_singular_values(T @ M @ Ti, T @ B, C @ Ti)
    assert np.all(np.diff(hsv) <= 0) and hsv[-1] >= 0
    np.testing.assert_allclose(hsv_t, hsv, rtol=1e-7, atol=1e-9 * hsv[0])


@settings(max_examples=40, deadline=None)
@given(any_system)
def test_hsv_are_square_roots_of_eig_PQ(sys):
    P, Q = gramians(*sys)
    ref = np.sort(np.sqrt(np.clip(np.linalg.eigvals(P @ Q).real, 0, None)))[::-1]
    hsv = hankel_singular_values(*sys)
    np.testing.assert_allclose(hsv, ref, rtol=1e-6, atol=1e-6 * hsv[0])


def _simulate(A, B, C, u):
    x = np.zeros(A.shape[0], dtype=np.result_type(A, B, complex))
    out = []
    for uk in u:
        out.append(C @ x)
        x = (A * x if A.ndim == 1 else A @ x) + B @ uk
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(stable_diagonal_systems(), seeds)
def test_real_output_realisations_reproduce_re_Cx(sys, seed):
    lam, B, C = sys
    u = np.random.default_rng(seed).standard_normal((40, B.shape[1]))
    y = _simulate(lam, B, C, u).real
    Az, Bz, Cz = real_output_realisation(lam, B, C)
    assert all(np.isrealobj(M) for M in (Az, Bz, Cz))
    np.testing.assert_allclose(_simulate(Az, Bz, Cz, u).real, y, atol=1e-10 * (1 + np.abs(y).max()))
    lam_cc, B_cc, C_cc = conjugate_augmented(lam, B, C)
    y_cc = _simulate(lam_cc, B_cc, C_cc, u)
    np.testing.assert_allclose(y_cc, y, atol=1e-10 * (1 + np.abs(y).max()))


@settings(max_examples=40, deadline=None)
@given(stable_diagonal_systems())
def test_real_output_gramians_equal_the_dense_solve_of_the_real_realisation(sys):
    P, Q = real_output_gramians(*sys)
    P_ref, Q_ref = gramians(*real_output_realisation(*sys))
    assert np.isrealobj(P) and _rel(P - P_ref, P_ref) < 1e-10 and _rel(Q - Q_ref, Q_ref) < 1e-10


@settings(max_examples=60, deadline=None)
@given(stable_diagonal_systems())
def test_real_output_hsv_relation_to_the_complex_system(sys):
    """The relation found (and proved in docs/concepts.md): the real-output Hankel operator is
    ``Re(H)``, a block of the realification of the complex ``H`` whose singular values are those
    of ``H`` twice each, so ``sigma_{2k-1}^re, sigma_{2k}^re <= sigma_k`` (interlacing) and
    ``sum sigma^re <= sum sigma`` (nuclear norm of ``(H + conj H) / 2``)."""
    hsv = hankel_singular_values(*sys)
    hsv_re = hankel_singular_values(*real_output_realisation(*sys))
    tol = 1e-9 * hsv[0]
    assert hsv_re.shape == (2 * hsv.shape[0],)
    assert np.all(hsv_re[0::2] <= hsv + tol) and np.all(hsv_re[1::2] <= hsv + tol)
    assert hsv_re.sum() <= hsv.sum() + tol


@settings(max_examples=30, deadline=None)
@given(stable_diagonal_systems(complex_=False))
def test_real_output_of_a_real_system_adds_only_zero_hsvs(sys):
    """Real lam, B, C: Im x stays 0, so the 2N realisation has the N HSVs of (lam, B, C) and N zeros."""
    hsv = hankel_singular_values(*sys)
    hsv_re = hankel_singular_values(*real_output_realisation(*sys))
    n = hsv.shape[0]
    np.testing.assert_allclose(hsv_re[:n], hsv, rtol=1e-8, atol=1e-10 * hsv[0])
    assert np.all(hsv_re[n:] <= 1e-7 * hsv[0])


def test_complex_dense_gramians_match_diagonal_after_unitary_change_of_basis():
    rng = np.random.default_rng(5)
    lam, B, C = 0.9 * np.exp(2j * np.pi * rng.uniform(size=5)), random_complex(rng, (5, 2)), random_complex(rng, (2, 5))
    U = np.linalg.qr(random_complex(rng, (5, 5)))[0]
    P, Q = gramians(lam, B, C)
    P2, Q2 = gramians(U @ np.diag(lam) @ U.conj().T, U @ B, C @ U.conj().T)
    assert _rel(P2 - U @ P @ U.conj().T, P) < 1e-10 and _rel(Q2 - U @ Q @ U.conj().T, Q) < 1e-10


# --- refusals: each names the argument ---

GOOD = (np.array([0.5, -0.2 + 0.3j]), np.ones((2, 3)), np.ones((1, 2)))


@pytest.mark.parametrize("A", [np.array([0.5, 1.0]), np.array([0.1, 0.99j + 0.2]), np.array([[1.2, 0.0], [0.0, 0.1]]),
                               np.array([[0.0, 2.0], [-2.0, 0.0]])])
def test_unstable_system_is_refused_naming_A(A):
    with pytest.raises(InvalidArgumentError, match=r"^A: .*rho\(A\) < 1"):
        gramians(A, np.ones((2, 1)), np.ones((1, 2)))
    with pytest.raises(InvalidArgumentError, match="^A: "):
        hankel_singular_values(A, np.ones((2, 1)), np.ones((1, 2)))


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, complex(0, np.nan)])
def test_non_finite_input_is_refused_naming_the_array(which, bad):
    args = [np.array(a, dtype=complex) for a in GOOD]
    args[which].flat[0] = bad
    with pytest.raises(NonFiniteSystemError, match=f"^{'ABC'[which]}: expected finite") as info:
        gramians(*args)
    assert isinstance(info.value, InvalidArgumentError) and isinstance(info.value, NonFiniteError)


@pytest.mark.parametrize("args, name", [
    ((np.ones((2, 3)) * 0.1, np.ones((2, 1)), np.ones((1, 2))), "A"),
    ((np.zeros(0), np.ones((0, 1)), np.ones((1, 0))), "A"),
    ((np.zeros((2, 2, 2)), np.ones((2, 1)), np.ones((1, 2))), "A"),
    ((np.array([0.1, 0.2]), np.ones((3, 1)), np.ones((1, 2))), "B"),
    ((np.array([0.1, 0.2]), np.ones(2), np.ones((1, 2))), "B"),
    ((np.array([0.1, 0.2]), np.ones((2, 1)), np.ones((1, 3))), "C"),
    (([[0.1, 0.2], [0.3]], np.ones((2, 1)), np.ones((1, 2))), "A"),
])
def test_mismatched_shapes_are_refused_naming_the_array(args, name):
    with pytest.raises(ShapeError, match=f"^{name}: "):
        gramians(*args)


def test_non_numeric_input_is_refused():
    with pytest.raises(InvalidArgumentError, match="^B: expected a real or complex numeric array"):
        gramians(np.array([0.1]), np.array([["x"]]), np.ones((1, 1)))
