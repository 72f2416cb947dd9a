"""The window's incremental structures equal direct recomputation, whatever the history.

Ratio rings start on first use and are then kept up to date one row per push; pushes with
ignored groups, group resets and state round trips must leave them equal to the direct
``max_k V_{k+lag}/(V_k + tiny)``. The controller's fast finite mask equals
``GroupStats.finite_mask`` (including sums that overflow).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lyactl.control.controller_config import finite_mask as _finite_mask
from lyactl.control.groups import GroupStats
from lyactl.control.monitor_library import _remaining_path
from lyactl.control.stats_window import StatsWindow

N, W = 5, 4
_finite = st.floats(0.0, 1e3, allow_nan=False)
values = st.one_of(*[_finite] * 7, st.sampled_from([0.0, np.nan, np.inf, 1e300]))  # mostly finite
rare = st.lists(st.sampled_from([False] * 7 + [True]), min_size=N, max_size=N)  # a few groups


def stats_of(draw, k):
    arr = lambda: np.array(draw(st.lists(values, min_size=N, max_size=N)))  # noqa: E731
    return GroupStats(step=k + 1, lr=0.1, loss=1.0, w_sq=arr(), dw_sq=arr(), g_sq=arr(), gw=arr(), m_sq=arr(),
                      curv=arr())


def direct(win, f, lag):
    V = win.field(f)
    with np.errstate(all="ignore"):
        return np.max(V[lag:] / (V[:-lag] + 1e-300), axis=0)


def replay(history, first_use):
    """Replay one history, asking for the ratios from report ``first_use`` on."""
    win = StatsWindow(N, W)
    for k, (stats, ignore, reset, roundtrip) in enumerate(history):
        win.push(stats, ignore=ignore)
        if reset is not None:
            win.reset_groups(reset)
        if roundtrip == "fresh":  # a resumed window: rings start again on first use
            other = StatsWindow(N, W)
            other.load_state_dict(win.state_dict())
            win = other
        elif roundtrip == "in place":  # rings already in use are rebuilt (head back to 0)
            win.load_state_dict(win.state_dict())
        if k >= first_use:
            for f, lag in (("w_sq", 1), ("dw_sq", 2), ("dw_sq", 3)):
                assert np.array_equal(win.max_ratio(f, lag), direct(win, f, lag), equal_nan=True), (k, f, lag)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n_reports=st.integers(1, 12))
def test_ratio_rings_match_direct_through_ignores_resets_and_roundtrips(data, n_reports):
    history = [(stats_of(data.draw, k), np.array(data.draw(rare)),
                np.array(data.draw(rare)) if data.draw(st.sampled_from([False] * 3 + [True])) else None,
                data.draw(st.sampled_from(["none"] * 4 + ["fresh", "in place"]))) for k in range(n_reports)]
    for first_use in range(n_reports):  # rings started at every head position
        replay(history, first_use)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fast_finite_mask_equals_the_exact_one(data):
    s = stats_of(data.draw, 0)
    assert np.array_equal(_finite_mask(s), s.finite_mask())


@settings(max_examples=40, deadline=None)
@given(V=st.lists(st.lists(st.floats(0.0, 1e6), min_size=3, max_size=3), min_size=4, max_size=4),
       r=st.lists(st.floats(0.0, 1.5) | st.just(np.nan), min_size=3, max_size=3))
def test_remaining_path_is_the_geometric_envelope(V, r):
    V, r = np.array(V), np.array(r)  # V: [W=4, n=3]
    R = _remaining_path(V, r)
    W = V.shape[0]
    for i in range(V.shape[1]):
        if not r[i] < 1:
            assert R[i] == np.inf
            continue
        E = max(np.sqrt(V[k, i]) * r[i] ** (W - 1 - k) for k in range(W))
        assert np.isclose(R[i], E * r[i] / (1 - r[i]), rtol=1e-12, atol=0)
