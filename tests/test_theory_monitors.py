"""Each derivation in theory/monitors.py agrees with its independent numerical check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from theory import monitors as T


def test_geometric_tail():
    derived, check = T.geometric_tail(0.7, 0.6)
    assert derived == pytest.approx(check, rel=1e-12)


@settings(max_examples=5, deadline=None)
@given(r=st.floats(0.2, 0.95), seed=st.integers(0, 1000))
def test_remaining_distance_bound_holds(r, seed):
    bound, distance = T.remaining_distance_bound(r, seed)
    assert 0 < distance <= bound


def test_removal_loss_change_exact_for_quadratic():
    derived, check = T.removal_loss_change(3)
    assert derived == pytest.approx(check, rel=1e-10, abs=1e-12)


def test_movement_bound_dominates():
    bound, worst = T.movement_loss_bound(1)
    assert worst <= bound


def test_weight_decay_contraction_and_noise_floor():
    (rho, v_star), (rho_sim, v_sim) = T.weight_decay_contraction()
    assert rho == pytest.approx(rho_sim, rel=1e-12)
    assert v_star == pytest.approx(v_sim, rel=0.1)  # Monte Carlo over 4000 coordinates


def test_edge_of_stability():
    derived, check = T.edge_of_stability_curvature(0.1)
    assert derived == pytest.approx(check, rel=1e-9)


def test_noise_certification_probability():
    derived, check = T.noise_certification_probability(5)
    assert derived == pytest.approx(check, abs=5e-4)  # ~ 2.5 standard errors at n=2e5


def test_budget_trajectory():
    target, achieved = T.budget_trajectory()
    assert achieved == pytest.approx(target, rel=1e-12)


def test_ramp_final_fraction():
    from lyactl.control.budget import BudgetConfig, ramp_final_fraction

    target, achieved = T.ramp_final_fraction()
    assert achieved == pytest.approx(target, rel=1e-5)  # midpoint sum of a cubic: O(1/n^2)
    # the closed form lyactl uses equals the symbolic solution
    expr = T.ramp_final_expression()
    names = {str(v): v for v in expr.free_symbols}
    cfg = BudgetConfig(0.35, total_steps=2685, ramp_start=80, ramp_end=800)
    exact = float(expr.subs({names["s0"]: 80, names["s1"]: 800, names["T"]: 2685, names["S"]: 0.35}))
    assert ramp_final_fraction(cfg) == pytest.approx(exact, rel=1e-12)
