"""The controller's accounting with a FlopsModel (a plain callable of the group statuses):
it is the model's count, not the sum of the groups' costs; a count that is not a finite
positive number is refused by name; without one the sum is kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lyactl.control.controller import PRUNED, Controller
from lyactl.errors import InvalidArgumentError, NonFiniteError
from lyactl.control.groups import Group, GroupKind

N_HEADS, D, HD = 4, 8, 2  # one layer of heads over a residual width of D channels (blocks of 2)


def _groups() -> list[Group]:
    """Heads (HD x D weights each, 4 matrices) and residual-channel blocks (2 channels x all
    N_HEADS x HD of every matrix): their costs overlap in the intersections."""
    heads = [Group(f"head.{h}", GroupKind.HEAD, 0, 4 * HD * D, 6.0 * 4 * HD * D, 0.0) for h in range(N_HEADS)]
    chans = [Group(f"chan.{c}", GroupKind.CHANNEL_BLOCK, -1, 4 * 2 * N_HEADS * HD, 6.0 * 4 * 2 * N_HEADS * HD, 0.0)
             for c in range(D // 2)]
    return heads + chans


def _count(status: np.ndarray) -> float:
    """Exact training FLOPs/token: 6 x 4 matrices of (live heads x HD) x (live channels)."""
    heads = N_HEADS - int((status[:N_HEADS] == PRUNED).sum())
    d = D - 2 * int((status[N_HEADS:] == PRUNED).sum())
    return 6.0 * 4 * heads * HD * d


@given(st.lists(st.booleans(), min_size=N_HEADS + D // 2, max_size=N_HEADS + D // 2))
def test_saving_is_the_models_count_and_the_sum_over_counts_overlaps(pruned):
    exact, summed = Controller(_groups(), flops_model=_count), Controller(_groups())
    for ctl in (exact, summed):
        ctl.status[np.array(pruned)] = PRUNED
        ctl._changed()
    status = exact.status.copy()
    assert math.isclose(exact.estimated_fraction(), 1 - _count(status) / _count(0 * status), abs_tol=1e-12)
    overlap = any(pruned[:N_HEADS]) and any(pruned[N_HEADS:])
    saved_sum = summed.estimated_fraction() * summed.model_flops
    saved = exact.estimated_fraction() * exact.model_flops
    assert (saved < saved_sum) if overlap else math.isclose(saved, saved_sum, abs_tol=1e-9)


@pytest.mark.parametrize("bad, error", [(math.nan, NonFiniteError), (math.inf, NonFiniteError),
                                        (0.0, InvalidArgumentError), (-1.0, InvalidArgumentError)])
def test_a_count_that_is_not_finite_and_positive_is_refused(bad, error):
    with pytest.raises(error, match="flops_model"):
        Controller(_groups(), flops_model=lambda status: bad)


def test_a_later_non_finite_count_stops_the_accounting():
    calls = iter([100.0, math.nan])
    ctl = Controller(_groups(), flops_model=lambda status: next(calls))
    with pytest.raises(NonFiniteError, match="flops_model\\(status\\)"):
        ctl.estimated_fraction()
