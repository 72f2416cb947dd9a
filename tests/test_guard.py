"""Closed-loop guard: restore on a loss rise above the pre-event trend, else release."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from lyactl.control.controller import ACTIVE, PRUNED, Controller, ControllerConfig
from lyactl.control.groups import Decision, Event, Action
from lyactl.control.guard import Guard, GuardConfig, trend_fit
from sim_training import simulate

EV = Event(0, 100, (Decision(100, "g", 0, Action.PRUNE),))


def feed(guard, steps, losses):
    out = []
    for s, l in zip(steps, losses):
        guard.record(s, l, np.nan)
        out.append(guard.observe(s, l, np.nan))
    return out


@settings(max_examples=20, deadline=None)
@given(a=st.floats(1, 10), b=st.floats(-0.01, 0.0), jump=st.floats(0.2, 2.0), seed=st.integers(0, 1000))
def test_rise_restores_trend_releases(a, b, jump, seed):
    rng = np.random.default_rng(seed)
    pre = np.arange(20, 101, 10)
    post = np.arange(110, 200, 10)
    noise = lambda n: 1e-3 * a * rng.normal(size=n)  # noqa: E731
    for rise, expect_restore in ((0.0, False), (jump * a, True)):
        g = Guard(GuardConfig(window=4, pre_window=9, tol_rel=0.05, z=3.0))
        feed(g, pre, a + b * (pre - 100) + noise(pre.size))
        g.watch(EV)
        out = feed(g, post, a + b * (post - 100) + rise + noise(post.size))
        restores = [e for r, _ in out for e in r]
        releases = [e for _, r in out for e in r]
        assert (restores == [EV]) == expect_restore and (releases == [EV]) != expect_restore


def test_trend_fit_recovers_line():
    x = np.arange(10.0)
    a, b, sigma = trend_fit(x, 3 - 0.5 * (x - 4), 4)
    assert np.allclose([a, b, sigma], [3, -0.5, 0], atol=1e-9)


def test_controller_restores_and_cools_down():
    sim = simulate(["collapsing"] * 2 + ["learning"] * 2, "gd", n_reports=30, seed=3)
    ctrl = Controller(sim.groups, config=ControllerConfig(guard=GuardConfig(window=3), cooldown_steps=10**6))
    restored = None
    for s in sim.stats:
        if ctrl.guard.busy:
            s = type(s)(**{**s.__dict__, "loss": s.loss * 3})  # the event hurt the loss
        out = ctrl.observe(s)
        if out.restores:
            restored = out.restores[0]
            break
        if out.events:
            assert (ctrl.status[[d.index for d in out.events[0].decisions]] == PRUNED).all()
    assert restored is not None
    idx = [d.index for d in restored.decisions]
    assert (ctrl.status[idx] == ACTIVE).all() and (ctrl.cool_until[idx] > s.step).all()
