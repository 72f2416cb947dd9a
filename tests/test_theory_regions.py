"""theory.optimizer_regions: each derived region agrees with its independent numeric check."""

import numpy as np
import pytest
import sympy as sp

from lyactl.analysis.regions import BETA, H
from theory.optimizer_regions import adam_region, gd_region, heavy_ball_region, nesterov_region


@pytest.mark.parametrize("derive", [gd_region, heavy_ball_region, nesterov_region, adam_region])
def test_derived_region_agrees_with_eigenvalues(derive):
    region, check = derive(n_points=300, seed=1)
    assert check.agrees, check.disagreements[:5]
    assert 0 < check.n_stable < check.n_points - check.n_near  # both sides were sampled
    assert isinstance(region.closed_form, sp.Basic) and region.text


def test_heavy_ball_edge_exceeds_gd_edge_and_grows_with_beta():
    """A property of the derived bounds, checked on the sympy objects (no typed-in numbers)."""
    gd, _ = gd_region(n_points=10)
    hb, _ = heavy_ball_region(n_points=10)
    sup = lambda r, b: float(sp.Intersection(*[sp.solve_univariate_inequality(a, H, relational=False)
                                               for a in r.at(b).args]).sup)
    betas = np.linspace(0, 0.95, 5)
    edges = [sup(hb, b) for b in betas]
    assert all(e >= sup(gd, 0.0) for e in edges) and np.all(np.diff(edges) > 0)
    assert BETA in hb.closed_form.free_symbols
