"""Budget trajectory and PI actuator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.control.budget import (BudgetConfig, BudgetKind, PIState, cheapest_groups, pi_step, projected_saving,
                                   ramp_final_fraction, required_fraction, setpoint, target_reached)
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


@st.composite
def ramped_budgets(draw) -> BudgetConfig:
    T = draw(st.integers(50, 5000))
    s0 = draw(st.integers(0, T - 2))
    s1 = draw(st.integers(s0 + 1, T - 1))
    target = draw(st.floats(0.01, 0.6))
    return BudgetConfig(target=target, total_steps=T, ramp_start=s0, ramp_end=s1)


@given(ramped_budgets())
@settings(max_examples=60, deadline=None)
def test_a_plant_that_follows_the_ramped_setpoint_meets_the_target(cfg):
    """Saving exactly the set-point at every step banks the target, never exceeding phi_req;
    unless the ramp ends so late that phi_req, which takes over from it, would exceed 1."""
    banked, clipped = 0.0, False
    for s in range(cfg.total_steps):
        phi = setpoint(cfg, s, banked)
        req = required_fraction(cfg.target, cfg.total_steps, s, banked)
        assert 0.0 <= phi <= req + 1e-12
        clipped |= s >= cfg.ramp_end and req >= 1.0
        banked += phi
    if clipped:
        assert banked / cfg.total_steps <= cfg.target + 1e-9
    else:
        assert banked / cfg.total_steps == pytest.approx(cfg.target, rel=1e-6)


@given(ramped_budgets(), st.floats(0.0, 1.0))
@settings(max_examples=60, deadline=None)
def test_the_ramp_rises_from_zero_and_leaves_phi_req_alone_outside_it(cfg, banked_frac):
    assert setpoint(cfg, cfg.ramp_start, 0.0) == 0.0
    ramp = [setpoint(cfg, s, 0.0) for s in range(cfg.ramp_start, cfg.ramp_end)]
    assert all(b >= a for a, b in zip(ramp, ramp[1:])) and ramp[-1] <= ramp_final_fraction(cfg) + 1e-12
    banked = banked_frac * cfg.target * cfg.ramp_end
    for s in (cfg.ramp_end, cfg.total_steps - 1):
        assert setpoint(cfg, s, banked) == required_fraction(cfg.target, cfg.total_steps, s, banked)
    plain = BudgetConfig(target=cfg.target, total_steps=cfg.total_steps)
    s = (cfg.ramp_start + cfg.ramp_end) // 2
    assert setpoint(plain, s, banked) == required_fraction(cfg.target, cfg.total_steps, s, banked)


def test_ramp_validation_names_the_argument():
    for bad in ((10, None), (50, 10), (-1, 10), (0, 200), (0.5, 10)):
        with pytest.raises(InvalidArgumentError, match="ramp_start, ramp_end"):
            BudgetConfig(0.3, total_steps=100, ramp_start=bad[0], ramp_end=bad[1])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gap=st.floats(1.0, 30.0))
def test_an_exact_saving_count_makes_the_cover_real(seed, gap):
    """With overlapping groups the summed ``flops`` over-count; given ``saving`` (the exact
    count) the top-up covers ``cushion * gap`` by it, with as few of the cheapest as that takes."""
    rng = np.random.default_rng(seed)
    n = 24
    flops = rng.uniform(0.5, 3.0, n)
    score = rng.random(n)
    overlap = 0.3  # every pair chosen together saves this much less than the sum of the two

    def saving(mask: np.ndarray) -> float:
        k = int(mask.sum())
        return max(float(flops[mask].sum()) - overlap * k * (k - 1) / 2 / n, 0.0)

    none = np.zeros(n, bool)
    summed = cheapest_groups(score, flops, gap, np.ones(n, bool), none, cushion=1.0)
    exact = cheapest_groups(score, flops, gap, np.ones(n, bool), none, cushion=1.0, saving=saving)
    assert summed.sum() <= exact.sum() and (summed <= exact).all()  # the exact cover extends the summed one
    if saving(exact) >= gap:
        fits = np.flatnonzero(flops <= 2.0 * gap)  # larger units are passed over (max_unit)
        order = fits[np.argsort(score[fits], kind="stable")]
        k = int(exact.sum())
        assert exact[order[:k]].all()  # the cheapest k
        fewer = none.copy()
        fewer[order[:k - 1]] = True
        assert k == summed.sum() or saving(fewer) < gap  # minimal beyond the summed cover
    else:
        assert exact.sum() == (flops <= 2.0 * gap).sum()  # not enough: every group that fits


@given(ramped_budgets(), st.booleans())
@settings(max_examples=60, deadline=None)
def test_a_final_budget_ends_at_the_target_and_an_average_one_beyond_it(cfg, ramped):
    """A plant that saves exactly the set-point: with ``kind="final"`` the saving rises
    monotonically to ``S*`` and stays there (never above), and the target counts as reached
    exactly when ``phi >= S*``; the average kind, with a ramp, must end above ``S*`` (the
    average of a rising ramp is below its end), the overshoot the final kind exists to avoid."""
    ramp = {"ramp_start": cfg.ramp_start, "ramp_end": cfg.ramp_end} if ramped else {}
    final = BudgetConfig(cfg.target, cfg.total_steps, kind="final", **ramp)
    banked, phis = 0.0, []
    for s in range(cfg.total_steps):
        phis.append(setpoint(final, s, banked))
        banked += phis[-1]
    assert all(b >= a for a, b in zip(phis, phis[1:])) and max(phis) <= cfg.target
    assert phis[-1] == pytest.approx(cfg.target)
    assert target_reached(final, 0, 0.0, cfg.target) and not target_reached(final, 0, 0.0, cfg.target * 0.999)
    average = BudgetConfig(cfg.target, cfg.total_steps, ramp_start=cfg.ramp_start, ramp_end=cfg.ramp_end)
    banked = 0.0
    for s in range(cfg.total_steps):
        phi = setpoint(average, s, banked)
        banked += phi
    assert phi > cfg.target or phi >= 1.0


def test_budget_kind_validation_names_the_argument():
    assert BudgetConfig(0.3, 100, kind="final").kind is BudgetKind.FINAL
    with pytest.raises(InvalidArgumentError, match="BudgetConfig.kind"):
        BudgetConfig(0.3, 100, kind="end")


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(4, 16))
def test_the_cover_counts_only_groups_the_constraints_let_go(data, n):
    """With ``room`` (:func:`within_min_keep`) no constraint is pushed below ``min_keep``
    (counting what is already chosen and pruned), the picks keep the score order, and groups
    outside every constraint are unaffected."""
    from lyactl.control.groups import Constraint, Status
    from lyactl.control.selection import within_min_keep

    members = tuple(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=2, max_size=n))))
    c = Constraint(members, min_keep=data.draw(st.integers(1, len(members))))
    status = np.full(n, Status.ACTIVE)
    gone = sorted(data.draw(st.sets(st.sampled_from(members), max_size=len(members) - c.min_keep)))
    status[gone] = Status.PRUNED
    score = np.asarray(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    flops = np.ones(n)
    room = lambda order, mask: within_min_keep(order, mask, status, (c,))  # noqa: E731
    eligible = status != Status.PRUNED
    m = cheapest_groups(score, flops, float(n), eligible, np.zeros(n, bool), cushion=1.0, room=room)
    alive = eligible[list(members)]
    assert int(alive.sum()) - int(m[list(members)].sum()) == c.min_keep  # all that may go, and no more
    outside = np.setdiff1d(np.arange(n), members)
    assert m[outside].all()  # the gap (n) asks for everything that may go
    plain = cheapest_groups(score, flops, float(n), eligible, np.zeros(n, bool), cushion=1.0)
    assert plain[eligible].all()  # without room, the un-prunable members count toward the cover


def test_within_min_keep_skips_the_last_members_and_keeps_the_order():
    from lyactl.control.groups import Constraint, Status
    from lyactl.control.selection import within_min_keep

    status = np.full(6, Status.ACTIVE)
    status[0] = Status.PRUNED
    c = Constraint((0, 1, 2, 3), min_keep=1)  # 3 alive, 1 must stay: 2 may go
    order = np.array([5, 3, 1, 2, 4])
    assert within_min_keep(order, np.zeros(6, bool), status, (c,)).tolist() == [5, 3, 1, 4]
    chosen = np.zeros(6, bool)
    chosen[2] = True  # already pushed: one more may go
    assert within_min_keep(order, chosen, status, (c,)).tolist() == [5, 3, 4]
