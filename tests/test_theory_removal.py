"""theory.removal: single removal costs add up to the joint cost except for the cross-curvature
terms; a redundant pair's joint cost is twice the sum of its singles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from strategies import seeds
from theory import removal as T


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_the_gap_between_joint_and_summed_costs_is_the_cross_curvature(seed):
    derived, direct = T.pair_cost_decomposition(seed)
    assert derived == pytest.approx(direct, rel=1e-9, abs=1e-12)


def test_a_redundant_pair_costs_twice_its_singles_together():
    derived, direct = T.redundant_pair_gap()
    assert derived == pytest.approx(direct, rel=1e-12) and derived == pytest.approx(2.0)
