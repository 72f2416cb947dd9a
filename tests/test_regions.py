"""Derived stability regions vs numpy eigenvalues, away from the boundary."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings

from lyactl.analysis.optimizers import ALL_MODELS, ETA, OptimizerParams
from lyactl.analysis.regions import BETA, D, H, derive_region
from lyactl.verdict import Verdict
from strategies import optimizer_points

MODELS = [make() for make in ALL_MODELS]


@pytest.fixture(scope="module")
def regions():
    return {m.name: derive_region(m) for m in MODELS}


@settings(max_examples=40, deadline=None)
@given(optimizer_points())
def test_region_verdict_equals_spectral_radius(regions, point):
    eta, lam, beta, wd = point
    p = OptimizerParams(eta, beta, wd)
    for m in MODELS:
        rho = float(np.max(np.abs(np.linalg.eigvals(m.matrix(lam, p)))))
        if abs(rho - 1) < 1e-6:
            continue
        assert regions[m.name].contains(eta, lam, p) == (rho < 1), (m.name, eta * lam, beta, eta * wd)
        ev = regions[m.name].check(m, lam, p)
        assert ev.verdict is (Verdict.HOLDS if rho < 1 else Verdict.FAILS)


@settings(max_examples=25, deadline=None)
@given(optimizer_points())
def test_raw_jury_conditions_hold_everywhere(regions, point):
    eta, lam, beta, wd = point
    p = OptimizerParams(eta, beta, wd)
    for m in MODELS:
        rho = float(np.max(np.abs(np.linalg.eigvals(m.matrix(lam, p)))))
        assume(abs(rho - 1) > 1e-6)
        pt = {H: eta * lam, D: eta * wd, BETA: beta}
        assert all(bool(c.subs(pt)) for c in regions[m.name].jury) == (rho < 1)


def test_region_is_free_of_eta_and_bounds_eta_lam(regions):
    for r in regions.values():
        assert ETA not in r.closed_form.free_symbols
        at = r.at(0.5)
        assert at.free_symbols == {H}
        lo, hi = _endpoints(at)  # the region at a beta is an interval in eta*lam
        assert lo < hi


def _endpoints(at):
    sol = sp.solve_univariate_inequality(at, H, relational=False) if not isinstance(at, sp.And) else \
        sp.Intersection(*[sp.solve_univariate_inequality(a, H, relational=False) for a in at.args])
    return float(sol.inf), float(sol.sup)


def test_region_endpoints_are_where_rho_crosses_one(regions):
    for m in MODELS:
        for beta in (0.0, 0.5, 0.9):
            lo, hi = _endpoints(regions[m.name].at(beta))
            p = OptimizerParams(0.1, beta)
            rho = lambda h: float(np.max(np.abs(np.linalg.eigvals(m.matrix(h / 0.1, p)))))
            for edge in (lo, hi):
                assert abs(rho(edge) - 1) < 1e-9
                assert (rho(edge - 1e-3) < 1) != (rho(edge + 1e-3) < 1)


def test_boundary_point_is_unknown(regions):
    m = MODELS[0]  # gd: eta*lam = 2 exactly
    ev = regions[m.name].check(m, 20.0, OptimizerParams(0.1))
    assert ev.verdict is Verdict.UNKNOWN
    assert "eta*lam" in regions[m.name].text
