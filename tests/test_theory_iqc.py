"""theory.iqc: the rate LMI, the off-by-one IQC and the vertex convexity each agree with an
independent numeric check."""

import numpy as np
import pytest
import sympy as sp

from theory.iqc import lmi_from_decrease, off_by_one_lemma, vertex_convexity


@pytest.mark.parametrize("n", [1, 2, 3])
def test_lmi_derived_from_decrease_is_lyactls_lmi(n):
    pairs = lmi_from_decrease(n=n, n_points=4, seed=n)
    for derived, lyactl in pairs:
        assert derived.shape == lyactl.shape == (n + 2, n + 2)
        assert np.allclose(derived, lyactl, rtol=1e-12, atol=1e-12 * np.abs(derived).max())


@pytest.mark.parametrize("N", [1, 2, 3])
def test_off_by_one_iqc_is_a_nonnegative_sum_of_interpolation_inequalities(N):
    (residual, coefficients), min_S = off_by_one_lemma(N=N, n_samples=150, seed=N)
    assert residual == 0                       # exact identity S_N = l * sum c_i I_i
    rho = sp.Symbol("rho", positive=True)
    for value in (0.05, 0.5, 0.9, 1.0):        # every c_i >= 0 on 0 < rho <= 1 ...
        assert all(float(sp.sympify(c).subs(rho, value)) >= 0 for c in coefficients)
    assert any(float(sp.sympify(c).subs(rho, 1.2)) < 0 for c in coefficients)  # ... and not beyond 1
    assert min_S >= -1e-12                     # the IQC on random f in S(m, L), random points


def test_vertex_lmis_cover_the_curvature_interval():
    residual, min_eig = vertex_convexity(n_points=60, seed=4)
    assert residual == sp.zeros(2, 2)
    assert min_eig >= -1e-12
