"""theory.settled: each closed form agrees with its Monte Carlo or direct evaluation."""

from __future__ import annotations

import pytest

from theory import settled as T


@pytest.mark.parametrize("fn", [T.path_end_expectation, T.same_batch_bias])
def test_closed_form_matches_monte_carlo(fn):
    derived, mc = fn()
    assert abs(derived - mc) < 5e-3, (derived, mc)  # 400 000 draws: standard error < 1e-3


def test_path_end_reading_understates_an_overshooting_step():
    derived, check = T.endpoint_vs_true_change()
    assert derived == pytest.approx(check, rel=1e-12) and derived > 0
