"""Budget trajectory and PI actuator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.budget import BudgetConfig, PIState, cheapest_groups, pi_step, projected_saving, required_fraction
from lyactl.errors import InvalidArgumentError


@settings(max_examples=50, deadline=None)
@given(T=st.integers(10, 10_000), frac=st.floats(0, 0.99), target=st.floats(0.01, 0.9), banked_frac=st.floats(0, 1))
def test_required_fraction_reaches_target_when_held(T, frac, target, banked_frac):
    s = int(frac * T)
    banked = banked_frac * target * T * 0.99
    phi = required_fraction(target, T, s, banked)
    assert 0 <= phi <= 1
    if phi < 1:
        assert projected_saving(T, s, banked, phi) == pytest.approx(target, rel=1e-9, abs=1e-12)


def test_pi_drives_up_when_behind_and_is_clamped():
    cfg = BudgetConfig(0.3, 1000, kp=1.0, ki=1.0, u_max=0.5)
    st_ = PIState()
    us = []
    for _ in range(200):
        st_ = pi_step(cfg, st_, 0.2, 10)
        us.append(st_.u)
    assert np.all(np.diff(us) >= 0) and us[-1] == pytest.approx(0.5)
    assert pi_step(cfg, st_, -1.0, 10).u == 0.0  # ahead: no penalty
    assert pi_step(cfg, st_, float("nan"), 10).u == 0.0


def test_cheapest_groups_cover_gap_and_are_sticky():
    score = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    flops = np.ones(5)
    eligible = np.ones(5, bool)
    m = cheapest_groups(score, flops, 2.0, eligible, np.zeros(5, bool), cushion=1.0)
    assert m.tolist() == [False, True, False, True, False]
    m3 = cheapest_groups(score, flops, 2.0, eligible, np.zeros(5, bool), cushion=1.25)
    assert m3.sum() == 3 and m3[[1, 2, 3]].all()  # covers 1.25 * gap with the cheapest
    m2 = cheapest_groups(score[::-1].copy(), flops, 2.0, eligible, m)
    assert np.array_equal(m2, m)  # still covers the gap: unchanged


def test_config_validation():
    with pytest.raises(InvalidArgumentError, match="BudgetConfig.target"):
        BudgetConfig(1.5, 100)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gap=st.floats(0.5, 20.0))
def test_cheapest_groups_pass_over_units_far_larger_than_the_gap(seed, gap):
    """No chosen group is larger than twice what was still needed (a whole layer is not put
    under the penalty to cover a small gap); among the groups that fit, the cheapest go first."""
    rng = np.random.default_rng(seed)
    n = 30
    flops = np.where(rng.random(n) < 0.2, 40.0, rng.uniform(0.5, 3.0, n))  # a few whole layers
    score = rng.random(n)
    m = cheapest_groups(score, flops, gap, np.ones(n, bool), np.zeros(n, bool), cushion=1.0)
    assert (flops[m] <= 2.0 * gap).all()
    fits = flops <= 2.0 * gap
    if m.any() and (~m & fits).any():
        assert score[m].max() <= score[~m & fits].min()
