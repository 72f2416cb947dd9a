"""A final-saving budget (``BudgetKind.FINAL``): events stop at the target, and a target the
certificates did not reach is completed at ``last_decision_step`` by uncertified, flagged
decisions (controller rule 9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig, PRUNED
from lyactl.control.decision_log import verify_certificate
from lyactl.control.groups import GroupKind
from lyactl.control.guard import GuardConfig
from lyactl.verdict import Verdict
from sim_training import simulate

GUARD = GuardConfig(window=2, pre_window=4, tol_rel=0.5, z=3.0)
N_REPORTS, INTERVAL = 40, 10


def _run(labels, target, kind, seed, last=300):
    sim = simulate(labels, "gd", n_reports=N_REPORTS, seed=seed, kind=GroupKind.MLP_BLOCK)
    cfg = ControllerConfig(guard=GUARD, cooldown_steps=0, last_decision_step=last, max_groups_per_event=64,
                           budget=BudgetConfig(target, total_steps=N_REPORTS * INTERVAL, kind=kind))
    ctrl = Controller(sim.groups, config=cfg)
    outs = [ctrl.observe(s) for s in sim.stats]
    return ctrl, [d for o in outs for e in o.events for d in e.decisions], [(o, s.step) for o, s in zip(outs, sim.stats)]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), n_pruned_target=st.integers(1, 5))
def test_an_event_stops_adding_groups_once_the_final_target_is_met(seed, n_pruned_target):
    """Nine collapsing groups, all certifiable: a final target of k/12 prunes exactly k of
    them (equal FLOPs), where the average-saving budget prunes more."""
    labels = ["collapsing"] * 9 + ["learning"] * 3
    target = n_pruned_target / len(labels)
    ctrl, decisions, _ = _run(labels, target, "final", seed)
    assert ctrl.saved_fraction() == pytest.approx(target)
    assert all(c.verdict is Verdict.HOLDS for d in decisions for c in d.certificates)
    avg, avg_decisions, _ = _run(labels, target, "average", seed)
    assert len(avg_decisions) >= len(decisions)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), target=st.sampled_from([0.2, 0.35, 0.5]))
def test_a_final_target_not_reached_by_certificates_is_completed_and_flagged(seed, target):
    """Only learning groups (nothing certifiable): at the first report at or after
    ``last_decision_step`` the controller prunes just enough groups to meet the target, once;
    each of those decisions carries a ``budget:final`` UNKNOWN certificate that re-verification
    rejects."""
    labels = ["learning"] * 12
    ctrl, decisions, trace = _run(labels, target, "final", seed, last=205)
    assert decisions and ctrl.saved_fraction() >= target
    assert ctrl.saved_fraction() - 1 / len(labels) < target  # minimal: one group fewer misses it
    steps = [s for o, s in trace if o.events]
    assert steps == [210]  # the first report at or after 205, and only then
    for d in decisions:
        assert [c.monitor for c in d.certificates] == ["budget:final"]
        assert d.certificates[0].verdict is Verdict.UNKNOWN
        assert any("verdict" in p for p in verify_certificate(d.certificates[0].to_json()))
    assert int((ctrl.status == PRUNED).sum()) == len(decisions)


def test_an_average_budget_is_never_completed():
    ctrl, decisions, _ = _run(["learning"] * 12, 0.35, "average", 0, last=205)
    assert decisions == [] and not ctrl.completed


def test_completion_survives_a_resume():
    """The completion flag is part of the state: a controller resumed after it does not complete twice."""
    labels = ["learning"] * 12
    sim = simulate(labels, "gd", n_reports=N_REPORTS, seed=3, kind=GroupKind.MLP_BLOCK)
    cfg = ControllerConfig(guard=GUARD, cooldown_steps=0, last_decision_step=205,
                           budget=BudgetConfig(0.35, total_steps=N_REPORTS * INTERVAL, kind="final"))
    a = Controller(sim.groups, config=cfg)
    for s in sim.stats[:25]:
        a.observe(s)
    b = Controller(sim.groups, config=cfg)
    b.load_state_dict(a.state_dict())
    assert b.completed and np.array_equal(a.status, b.status)
    assert all(not b.observe(s).events for s in sim.stats[25:])


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_a_gap_smaller_than_half_a_group_is_still_completed(seed):
    """Twelve equal groups and a final target of 0.02 (a quarter of one group): no group is
    within twice the gap, so the completion takes the smallest one that meets the target
    rather than missing it."""
    ctrl, decisions, _ = _run(["learning"] * 12, 0.02, "final", seed, last=205)
    assert len(decisions) == 1 and ctrl.saved_fraction() >= 0.02
    assert [c.monitor for c in decisions[0].certificates] == ["budget:final"]
