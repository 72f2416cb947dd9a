"""Controller: decisions on simulated groups, constraints, schedule, bad input, resume."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import Controller, ControllerConfig, FROZEN, PRUNED
from lyactl.control.decision_log import verify_certificate
from lyactl.errors import InvalidArgumentError, ShapeError
from lyactl.control.groups import Action, Constraint, GroupKind
from lyactl.control.guard import GuardConfig
from lyactl.verdict import Verdict
from sim_training import simulate

LABELS = ["converging"] * 3 + ["collapsing"] * 3 + ["learning"] * 3 + ["noise"] * 3
FAST_GUARD = GuardConfig(window=2, pre_window=4, tol_rel=0.5, z=3.0)


def run(ctrl, stats):
    return [ctrl.observe(s) for s in stats]


def decided(outs):
    return [(d.index, d.action) for o in outs for e in o.events for d in e.decisions]


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball"]))
@example(seed=224, optimizer="heavy_ball")  # a collapsing group was frozen (converged first)
@example(seed=329, optimizer="heavy_ball")  # ||w||^2 oscillates: one-report ratios never certified
def test_only_converged_or_collapsed_groups_are_decided(seed, optimizer):
    sim = simulate(LABELS, optimizer, n_reports=40, seed=seed, kind=GroupKind.LAYER)
    ctrl = Controller(sim.groups, config=ControllerConfig(guard=FAST_GUARD, cooldown_steps=0))
    outs = run(ctrl, sim.stats)
    got = decided(outs)
    got_idx = {i for i, _ in got}
    assert got_idx <= set(range(6)) and {3, 4, 5} <= got_idx  # nothing learning or noise
    if optimizer == "gd":  # heavy ball's oscillating displacements may take longer than 40 reports
        assert got_idx == set(range(6))
    for i, action in got:
        assert action is (Action.PRUNE if sim.labels[i] == "collapsing" else Action.FREEZE)
    for o in outs:
        for e in o.events:
            for d in e.decisions:
                assert d.certificates and all(c.verdict is Verdict.HOLDS for c in d.certificates)
                assert all(verify_certificate(c.to_json()) == [] for c in d.certificates)


def test_freeze_only_for_layers_and_certificates_name_roles():
    sim = simulate(["converging"] * 3, "gd", n_reports=20, seed=1, kind=GroupKind.HEAD)
    assert decided(run(Controller(sim.groups), sim.stats)) == []
    sim = simulate(["converging"] * 3, "gd", n_reports=20, seed=1, kind=GroupKind.LAYER)
    outs = run(Controller(sim.groups), sim.stats)
    certs = [c.monitor for o in outs for e in o.events for d in e.decisions for c in d.certificates]
    assert set(certs) == {"convergence", "movement"}


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10**6), split=st.integers(1, 38))
def test_resume_gives_identical_decisions(seed, split):
    sim = simulate(LABELS, "gd", n_reports=40, seed=seed, kind=GroupKind.LAYER)
    cfg = ControllerConfig(guard=FAST_GUARD, max_groups_per_event=2,
                           budget=BudgetConfig(0.3, total_steps=400))
    a = Controller(sim.groups, config=cfg)
    full = run(a, sim.stats)
    b = Controller(sim.groups, config=cfg)
    run(b, sim.stats[:split])
    c = Controller(sim.groups, config=cfg)
    c.load_state_dict(json.loads(json.dumps(b.state_dict(), allow_nan=False)))
    rest = run(c, sim.stats[split:])
    for x, y in zip(full[split:], rest):
        assert x.events == y.events and x.restores == y.restores and x.releases == y.releases
        assert np.array_equal(x.penalty, y.penalty)


def test_nan_loss_holds_and_nonfinite_group_never_decided():
    sim = simulate(["collapsing"] * 4, "gd", n_reports=20, seed=2)
    ctrl = Controller(sim.groups, config=ControllerConfig(guard=FAST_GUARD))
    outs = []
    for k, s in enumerate(sim.stats):
        s.dw_sq[2] = np.inf  # group 2 always reports a non-finite statistic
        if k == 10:
            s = dataclasses.replace(s, loss=math.nan)
        outs.append(ctrl.observe(s))
    assert outs[10].held and not outs[10].events and "loss" in outs[10].reason
    got = {i for i, _ in decided(outs)}
    assert 2 not in got and got == {0, 1, 3}


def test_wrong_shape_names_field():
    sim = simulate(["noise"] * 3, "gd", n_reports=1)
    s = dataclasses.replace(sim.stats[0], gw=np.zeros(2))
    with pytest.raises(ShapeError, match="GroupStats.gw"):
        Controller(sim.groups).observe(s)


def test_pruned_group_stats_are_ignored():
    sim = simulate(["collapsing"] + ["learning"] * 2, "gd", n_reports=30, seed=4)
    ctrl = Controller(sim.groups, config=ControllerConfig(guard=FAST_GUARD))
    outs = []
    for s in sim.stats:
        if ctrl.status[0] == PRUNED:
            s.w_sq[0], s.dw_sq[0] = np.nan, np.nan  # the backend reports NaN for a pruned group
        outs.append(ctrl.observe(s))
    assert decided(outs) == [(0, Action.PRUNE)]
    assert ctrl.window.field("w_sq")[-1, 0] != ctrl.window.field("w_sq")[-1, 0]  # NaN stored


def test_constraints_min_keep_together_and_batch_limit():
    sim = simulate(["collapsing"] * 6, "gd", n_reports=30, seed=5)
    cons = (Constraint((0, 1, 2), min_keep=2), Constraint((3, 4), together=True))
    cfg = ControllerConfig(guard=FAST_GUARD, max_groups_per_event=2)
    outs = run(Controller(sim.groups, cons, cfg), sim.stats)
    got = [i for i, _ in decided(outs)]
    assert sum(i in (0, 1, 2) for i in got) == 1  # min_keep=2 of 3
    assert all(len(e.decisions) <= 2 for o in outs for e in o.events)
    for o in outs:
        for e in o.events:
            idx = {d.index for d in e.decisions}
            assert idx.isdisjoint({3, 4}) or {3, 4} <= idx  # together: one event
    assert {3, 4} <= set(got)


def test_schedule_warmup_and_last_decision_step():
    sim = simulate(["collapsing"] * 3, "gd", n_reports=30, seed=6)
    outs = run(Controller(sim.groups, config=ControllerConfig(warmup_steps=200)), sim.stats)
    assert all(e.step >= 200 for o in outs for e in o.events) and decided(outs)
    outs = run(Controller(sim.groups, config=ControllerConfig(last_decision_step=50)), sim.stats)
    assert decided(outs) == []


def test_budget_penalty_on_cheapest_and_stops_at_target():
    sim = simulate(["learning"] * 6, "gd", n_reports=12, seed=7)
    cfg = ControllerConfig(budget=BudgetConfig(0.2, total_steps=1000))
    outs = run(Controller(sim.groups, config=cfg), sim.stats)
    k = next(k for k, o in enumerate(outs) if (o.penalty > 0).any())  # chosen once, then sticky
    pen = outs[k].penalty
    assert (pen >= 0).all() and (pen == 0).any() and np.array_equal(outs[-1].penalty > 0, pen > 0)
    cheap = np.abs(sim.stats[k].gw)
    assert cheap[pen > 0].max() <= cheap[pen == 0].min()
    # collapsing groups: a small target is met by the first prune, then decisions stop
    sim = simulate(["collapsing"] * 6, "gd", n_reports=30, seed=8)
    cfg = ControllerConfig(guard=FAST_GUARD, max_groups_per_event=1, budget=BudgetConfig(0.1, total_steps=300))
    outs = run(Controller(sim.groups, config=cfg), sim.stats)
    assert 1 <= len(decided(outs)) < 6
    assert any(o.reason == "budget target reached" for o in outs)


def test_user_cannot_be_surprised_by_status_after_freeze():
    sim = simulate(["converging"] * 2, "gd", n_reports=20, seed=9, kind=GroupKind.LAYER)
    ctrl = Controller(sim.groups)
    run(ctrl, sim.stats)
    assert (ctrl.status == FROZEN).all()
    assert ctrl.saved_fraction() == pytest.approx(sum(g.flops_freeze for g in sim.groups) / ctrl.model_flops)


def test_groups_inside_a_pruned_block_go_with_it_and_are_counted_once():
    """A block's LAYER group and its heads all collapse: the event prunes the block alone (its
    heads go with it, no decisions of their own) and the saved fraction counts the block once;
    a head pruned earlier is not counted again when its block goes later."""
    sim = simulate(["collapsing"] * 4, "gd", n_reports=40, seed=2)
    g = sim.groups
    groups = [dataclasses.replace(g[0], kind=GroupKind.LAYER, layer=0, flops_remove=100.0),
              dataclasses.replace(g[1], kind=GroupKind.HEAD, layer=0, flops_remove=30.0),
              dataclasses.replace(g[2], kind=GroupKind.HEAD, layer=0, flops_remove=30.0),
              dataclasses.replace(g[3], kind=GroupKind.HEAD, layer=1, flops_remove=30.0)]
    cfg = ControllerConfig(guard=FAST_GUARD, cooldown_steps=0, model_flops=1000.0)
    ctrl = Controller(groups, config=cfg)
    got = decided(run(ctrl, sim.stats))
    assert sorted(i for i, _ in got) == [0, 3]  # heads 1, 2 went with block 0
    assert ctrl.saved_fraction() == pytest.approx((100.0 + 30.0) / 1000.0)

    ctrl = Controller(groups, config=cfg)
    ctrl.status[1] = PRUNED  # head 1 went in an earlier event
    ctrl._changed()
    assert ctrl.saved_fraction() == pytest.approx(30.0 / 1000.0)
    ctrl.status[0] = PRUNED  # then its block
    ctrl._changed()
    assert ctrl.saved_fraction() == pytest.approx(100.0 / 1000.0)


@pytest.mark.parametrize("guard_exact", [False, True])
def test_an_event_of_exactly_zero_groups_skips_the_guard_unless_asked(guard_exact):
    """Collapsed groups reach exact zero (weight decay alone, zero gradient): removing them
    cannot change the loss, so by default the event is released as applied; with
    ``guard_exact_events`` the guard watches it like any other."""
    sim = simulate(["collapsing", "learning", "learning"], "gd", n_reports=40, seed=4)
    stats = [dataclasses.replace(s, w_sq=np.where(np.arange(3) == 0, 0.0, s.w_sq)) if k >= 3 else s
             for k, s in enumerate(sim.stats)]
    cfg = ControllerConfig(guard=FAST_GUARD, cooldown_steps=0, guard_exact_events=guard_exact)
    ctrl = Controller(sim.groups, config=cfg)
    for s in stats:
        out = ctrl.observe(s)
        if out.events:
            break
    assert [d.index for d in out.events[0].decisions] == [0]  # only the exactly-zero group
    assert out.releases == (() if guard_exact else out.events)
    assert ctrl.guard.busy == guard_exact


def test_controller_config_flags_must_be_bools():
    with pytest.raises(InvalidArgumentError, match="ControllerConfig.guard_exact_events: expected True or False"):
        ControllerConfig(guard_exact_events="yes")


def test_the_budget_uses_the_backends_flops_when_reported():
    """Nominal group costs can overlap (residual channels cross every block); when the backend
    reports its FLOPs/token the saved fraction is the measured one (plus the estimate of
    decisions not yet applied), and it survives a state round trip."""
    sim = simulate(["collapsing", "learning", "learning"], "gd", n_reports=12, seed=5)
    cfg = ControllerConfig(guard=FAST_GUARD, cooldown_steps=0, model_flops=100.0)
    ctrl = Controller(sim.groups, config=cfg)
    stats = [dataclasses.replace(s, flops_per_token=1000.0) for s in sim.stats]
    ctrl.observe(stats[0])
    assert ctrl.fpt_ref == 1000.0 and ctrl.saved_fraction() == 0.0
    ctrl.status[0] = PRUNED  # a decision: estimated at flops_remove / model_flops
    ctrl._changed()
    est = ctrl.estimated_fraction()
    assert est > 0 and ctrl.saved_fraction() == pytest.approx(est)  # not applied yet: the estimate
    ctrl.observe(dataclasses.replace(stats[1], flops_per_token=700.0))  # the backend applied it
    assert ctrl.saved_fraction() == pytest.approx(0.3)  # measured, not the estimate
    clone = Controller(sim.groups, config=cfg)
    clone.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    assert clone.saved_fraction() == pytest.approx(0.3) and clone.fpt_ref == 1000.0


def test_without_reported_flops_the_estimate_is_used():
    sim = simulate(["collapsing", "learning"], "gd", n_reports=3, seed=5)
    ctrl = Controller(sim.groups, config=ControllerConfig(model_flops=100.0))
    ctrl.observe(sim.stats[0])  # flops_per_token NaN
    ctrl.status[0] = PRUNED
    ctrl._changed()
    ctrl.observe(sim.stats[1])
    assert ctrl.fpt_ref is None and ctrl.saved_fraction() == pytest.approx(ctrl.estimated_fraction())
