"""theory.balanced: each derived closed form agrees with its Gramian-free numerical check,
and lyactl.analysis.gramians computes the same numbers."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.analysis.gramians import gramians, hankel_singular_values, real_output_realisation
from theory import balanced as T


def test_diagonal_gramian_entry_and_library():
    lam_i, lam_j, m = 0.6 + 0.3j, -0.2 + 0.7j, 1.3 - 0.4j
    derived, check = T.diagonal_gramian_entry(lam_i, lam_j, m)
    assert derived == pytest.approx(check, rel=1e-12)
    # the library's closed form at the same entry: B = [[1], [conj(m)]] gives (B B^H)_01 = m
    P, _ = gramians(np.array([lam_i, lam_j]), np.array([[1.0], [np.conj(m)]]), np.ones((1, 2)))
    assert P[0, 1] == pytest.approx(derived, rel=1e-12)


@settings(max_examples=10, deadline=None)
@given(st.floats(-0.95, 0.95), st.floats(0.1, 3), st.floats(-3, -0.1))
def test_one_state_hsv(a, b, c):
    derived, check = T.one_state_hsv(a, b, c)
    assert derived == pytest.approx(check, rel=1e-9)
    assert hankel_singular_values(np.array([a]), np.array([[b]]), np.array([[c]]))[0] == pytest.approx(derived, rel=1e-10)


def test_lru_mode_real_output_hsv_closed_form():
    rng = np.random.default_rng(0)
    k = 12
    lam = rng.uniform(0.1, 0.95, k) * np.exp(2j * np.pi * rng.uniform(size=k))
    b = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    c = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    derived, check = T.lru_mode_real_output_hsv(lam, b, c)
    np.testing.assert_allclose(derived, check, rtol=1e-8, atol=1e-12)
    for i in range(k):  # the library's 2-state real-output HSVs, and sigma_1 + sigma_2 <= h
        lib = hankel_singular_values(*real_output_realisation(lam[i:i + 1], b[i:i + 1, None], c[i:i + 1, None].T))
        np.testing.assert_allclose(lib, derived[i], rtol=1e-8, atol=1e-12 * lib[0])
        h = abs(b[i]) * abs(c[i]) / (1 - abs(lam[i]) ** 2)
        assert derived[i].sum() <= h * (1 + 1e-12)


def test_real_lru_mode_has_one_nonzero_hsv_equal_to_the_complex_one():
    derived, check = T.lru_mode_real_output_hsv(0.8, 1.5, -0.5)
    assert derived[0, 0] == pytest.approx(1.5 * 0.5 / (1 - 0.64), rel=1e-12) and derived[0, 1] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(derived, check, atol=1e-9)
