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
