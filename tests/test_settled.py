"""The settled-group freeze certificate (lyactl.control.settled) on simulated trajectories
(tests/sim_training.py, which reports ``gdw`` as the torch backend does), its offline
re-verification, and the controller freezing on it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats as sst

from lyactl.control.controller import Controller
from lyactl.control.controller_config import ControllerConfig
from lyactl.control.decision_log import evaluate_condition, verify_certificate
from lyactl.control.groups import Action, GroupKind
from lyactl.control.monitors import Role, StatsWindow
from lyactl.control.settled import RemainingBenefit, settled_monitor
from lyactl.errors import InvalidArgumentError
from sim_training import simulate

SETTINGS = settings(max_examples=8, deadline=None)
W = 8


def _run(sim, total_steps: int, n_share: int = 4):
    mon = settled_monitor(total_steps, n_share)
    win = StatsWindow(len(sim.groups), W)
    first, last = np.full(len(sim.groups), -1), None
    for k, s in enumerate(sim.stats):
        win.push(s)
        last = mon.evaluate(win)
        first[(first < 0) & last.holds()] = k
    return first, last, win


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]))
def test_learning_groups_are_never_settled(seed, optimizer):
    sim = simulate(["learning"] * 4, optimizer, n_reports=40, seed=seed)
    first, _, _ = _run(sim, total_steps=2 * 40 * 10)
    assert (first == -1).all(), first


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball"]))
def test_converged_groups_settle_within_bounded_delay(seed, optimizer):
    sim = simulate(["converging"] * 4, optimizer, n_reports=40, seed=seed)
    first, _, _ = _run(sim, total_steps=2 * 40 * 10)
    assert ((first >= W - 1) & (first <= 30)).all(), first


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]))
def test_margin_matches_an_independent_computation_and_reevaluates(seed, optimizer):
    sim = simulate(["learning", "noise", "converging"], optimizer, n_reports=12, seed=seed)
    T = 400
    _, res, win = _run(sim, T, n_share=3)
    gdw, lr, K = win.field("gdw"), win.scalar("lr"), win.scalar("interval")
    b = -gdw[1:] / (lr[:-1, None] * K[:-1, None])
    n = b.shape[0]
    lo, hi = sst.t.interval(0.95, n - 1, loc=b.mean(0), scale=sst.sem(b, axis=0))
    dL = np.maximum(np.abs(lo), np.abs(hi)) * lr[-1] * (T - win.scalar("step")[-1])
    tol = 1e-3 * abs(win.scalar("loss")[-1]) / 3
    np.testing.assert_allclose(res.numbers["dL"], dL, rtol=1e-9)
    assert ((res.margin > 0) == (dL < tol)).all()
    for i in range(3):
        cert = res.certificate(i)
        margin, mismatches = evaluate_condition(cert.condition, cert.numbers)
        assert not mismatches and math.isclose(margin, cert.margin, rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10**6), T1=st.integers(400, 2000), extra=st.integers(1, 2000))
def test_more_learning_rate_to_come_never_helps(seed, T1, extra):
    sim = simulate(["learning", "noise", "converging"], "gd", n_reports=12, seed=seed)
    _, a, _ = _run(sim, T1)
    _, b, _ = _run(sim, T1 + extra)
    assert (b.margin <= a.margin + 1e-12).all()


def _window_with_benefit(b_rates: np.ndarray, lr: float = 1e-3, K: int = 10, step0: int = 100) -> StatsWindow:
    """A one-group window whose ``b`` values are ``b_rates`` (``gdw = -b lr K``)."""
    sim = simulate(["converging"], "gd", n_reports=len(b_rates) + 1, seed=0)
    win = StatsWindow(1, len(b_rates) + 1)
    for k, s in enumerate(sim.stats[: len(b_rates) + 1]):
        gdw = np.array([math.nan if k == 0 else -b_rates[k - 1] * lr * K])
        win.push(replace(s, step=step0 + k * K, lr=lr, interval=K, loss=3.0, gdw=gdw))
    return win


def test_two_sided_an_overshooting_group_is_not_settled():
    """A large NEGATIVE benefit rate (moving on would cost loss: the step overshot) fails, as
    a large positive one does; a small one either way holds."""
    mon = settled_monitor(total_steps=200, n_share=1)
    rng = np.random.default_rng(0)
    for centre, expect in ((-50.0, False), (50.0, False), (0.0, True)):
        win = _window_with_benefit(centre + 0.01 * rng.standard_normal(W - 1))
        assert bool(mon.evaluate(win).holds()[0]) is expect, centre


def test_nan_path_reading_gives_no_certificate():
    win = _window_with_benefit(np.zeros(W - 1))
    mon = settled_monitor(total_steps=200, n_share=1)
    assert mon.evaluate(win).holds()[0]
    sim = simulate(["converging"], "gd", n_reports=W, seed=0)
    fresh = StatsWindow(1, W)
    for s in sim.stats[:W]:
        fresh.push(replace(s, gdw=np.array([math.nan])))
    assert math.isnan(mon.evaluate(fresh).margin[0])


@pytest.mark.parametrize("kw,name", [({"total_steps": 0, "n_share": 1}, "total_steps"),
                                     ({"total_steps": 10, "n_share": 0}, "n_share"),
                                     ({"total_steps": 10, "n_share": 1, "eps": 0.0}, "eps"),
                                     ({"total_steps": 10, "n_share": 1, "alpha": 0.7}, "alpha")])
def test_bad_arguments_are_named(kw, name):
    with pytest.raises(InvalidArgumentError, match=name):
        RemainingBenefit(**kw)


def test_controller_freezes_a_settled_layer_with_its_certificate():
    """Blocks (LAYER groups), the settled monitor the only freeze rule: the converging ones
    settle and are frozen, the learning ones are not; every freeze carries a settled certificate
    that re-verifies offline (and only that: the built-in CONVERGED/BOUNDED roles have no monitor)."""
    labels = ["converging", "learning", "converging", "learning"]
    sim = simulate(labels, "gd", n_reports=40, seed=5, kind=GroupKind.LAYER)
    cfg = ControllerConfig(warmup_steps=0, hysteresis=2, allow_prune=False)
    mons = (settled_monitor(2 * 400, len(labels)),)
    ctl = Controller(sim.groups, config=cfg, monitors=mons)
    frozen = {}
    for s in sim.stats:
        for ev in ctl.observe(s).events:
            for d in ev.decisions:
                assert d.action is Action.FREEZE
                frozen[d.group] = d
    assert set(frozen) == {"converging.0", "converging.2"}, set(frozen)
    for d in frozen.values():
        assert [c.monitor for c in d.certificates] == ["settled"]
        for c in d.certificates:
            assert verify_certificate(c.to_json()) == []
    assert Role.SETTLED.value == "settled"


@pytest.mark.parametrize("last_freeze", [None, 400])
def test_freezes_alone_may_go_on_after_the_decision_window(last_freeze):
    """With ``last_freeze_step`` a settled block is frozen after ``last_decision_step`` (a freeze
    needs no recovery time); without it nothing is decided after the window; prunes never are."""
    labels = ["converging", "learning", "converging", "learning"]
    sim = simulate(labels, "gd", n_reports=40, seed=5, kind=GroupKind.LAYER)
    cfg = ControllerConfig(warmup_steps=0, hysteresis=2, last_decision_step=50, last_freeze_step=last_freeze)
    ctl = Controller(sim.groups, config=cfg, monitors=(settled_monitor(2 * 400, len(labels)),))
    decided = [(ev.step, d.action) for s in sim.stats for ev in ctl.observe(s).events for d in ev.decisions]
    if last_freeze is None:
        assert decided == []
    else:
        assert decided and all(a is Action.FREEZE and 50 < step <= 400 for step, a in decided)


def test_last_freeze_step_is_validated():
    with pytest.raises(InvalidArgumentError, match="last_freeze_step"):
        ControllerConfig(last_freeze_step=-1)


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball"]))
def test_settled_blocks_give_up_less_than_a_random_choice(seed, optimizer):
    """Against random: the groups are independent quadratics, so what freezing a group at report
    ``k`` gives up is exactly its own loss decrease from ``k`` to the end of the run. The certified
    set must give up less than the same number of groups drawn at random (averaged over every
    subset of that size), and each certified group less than the certificate's tolerance."""
    from itertools import combinations

    labels = ["converging", "learning"] * 3
    n_rep = 40
    sim = simulate(labels, optimizer, n_reports=n_rep, seed=seed)
    mon = settled_monitor(n_rep * 10, len(labels))
    win = StatsWindow(len(labels), W)
    for k, s in enumerate(sim.stats):
        win.push(s)
        res = mon.evaluate(win)
        S = np.flatnonzero(res.holds())
        if S.size:
            break
    assert S.size, "nothing settled"
    forgone = sim.group_loss[k] - sim.group_loss[-1]  # what training on would still have bought
    assert (forgone[S] <= res.numbers["tol"]).all(), (forgone[S], res.numbers["tol"])
    rand = np.mean([forgone[list(c)].sum() for c in combinations(range(len(labels)), S.size)])
    assert forgone[S].sum() < rand, (forgone[S].sum(), rand)
