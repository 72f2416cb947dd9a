"""User Lyapunov candidates plug in through the same interface and change decisions."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.decision_log import verify_certificate
from lyactl.errors import InvalidArgumentError
from lyactl.control.groups import Action
from lyactl.control.monitors import LyapunovMonitor, Monitor, MonitorConfig, Role, StatsWindow, default_monitors
from lyactl.control.user_monitors import Below, CallableWindowCandidate, Decreases, SympyCandidate, user_monitor
from sim_training import simulate


def test_builtins_are_lyapunov_monitors_behind_the_protocol():
    for m in default_monitors(MonitorConfig()):
        assert isinstance(m, LyapunovMonitor) and isinstance(m, Monitor)


def test_sympy_and_callable_candidates_agree():
    sim = simulate(["collapsing", "noise", "converging"], "gd", n_reports=10, seed=1)
    win = StatsWindow(3, 8)
    for s in sim.stats:
        win.push(s)
    a = user_monitor("a", Role.COLLAPSED, sympy.sympify("w_sq + dw_sq/lr"), Decreases(0.2)).evaluate(win)
    b = user_monitor("b", Role.COLLAPSED, lambda x: x["w_sq"] + x["dw_sq"] / x["lr"], Decreases(0.2)).evaluate(win)
    assert np.allclose(a.V, b.V) and np.allclose(a.margin, b.margin, equal_nan=True)
    assert a.holds()[0] and not a.holds()[1]
    assert verify_certificate(a.certificate(0).to_json()) == []


def test_unknown_symbol_rejected():
    with pytest.raises(InvalidArgumentError, match="SympyCandidate.expr"):
        SympyCandidate(sympy.sympify("w_sq + banana"))


def test_user_monitor_changes_decisions():
    sim = simulate(["collapsing"] * 3 + ["learning"] * 3, "gd", n_reports=25, seed=2)
    base = Controller(sim.groups)
    got = {d.index for s in sim.stats for e in base.observe(s).events for d in e.decisions}
    assert got == {0, 1, 2}
    # a user "collapse" certificate: gradient energy below a bound (vetoes nothing, adds a
    # second COLLAPSED requirement that no group meets -> no prune by (b))
    veto = user_monitor("g_small", Role.COLLAPSED, "g_sq", Below(1e-300))
    strict = Controller(sim.groups, monitors=default_monitors(MonitorConfig())[:1] + (veto,))
    got = {d.index for s in sim.stats for e in strict.observe(s).events for d in e.decisions}
    assert got == set()
    # a permissive user certificate that prunes the learning groups too
    loose = user_monitor("always", Role.COLLAPSED, CallableWindowCandidate(lambda x: x["w_sq"] / (x["w_sq"] + 1.0)), Below(2.0))
    ctrl = Controller(sim.groups, monitors=(loose,), config=ControllerConfig(max_groups_per_event=6))
    outs = [ctrl.observe(s) for s in sim.stats]
    decs = [d for o in outs for e in o.events for d in e.decisions]
    assert {d.index for d in decs} == set(range(6)) and all(d.action is Action.PRUNE for d in decs)
    assert all(c.monitor == "always" for d in decs for c in d.certificates)
