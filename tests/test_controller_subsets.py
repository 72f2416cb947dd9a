"""Monitors evaluated on a subset of the groups (ColumnWindow) give the full window's numbers
in those columns, and the controller, which evaluates HARMLESS and BOUNDED monitors only
where CONVERGED holds, decides exactly as if it evaluated every monitor everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.control.controller import Controller, ControllerConfig
from lyactl.errors import InvalidArgumentError
from lyactl.control.groups import Action, GroupKind
from lyactl.control.guard import GuardConfig
from lyactl.control.monitors import MonitorConfig, Role, StatsWindow, default_monitors
from lyactl.control.user_monitors import Below, user_monitor
from sim_training import BEHAVIOURS, simulate

FAST_GUARD = GuardConfig(window=2, pre_window=4, tol_rel=0.5, z=3.0)


def _monitors(cfg: MonitorConfig):
    user = user_monitor("user_gw", Role.HARMLESS, "Abs(gw) + 0*w_sq", Below(1e-2))
    return default_monitors(cfg) + (user,)


def _json(cert) -> str:
    return json.dumps(cert.to_json(), sort_keys=True)  # NaN == NaN here, unlike in the dataclass


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), labels=st.lists(st.sampled_from(BEHAVIOURS), min_size=2, max_size=10),
       optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]), pick=st.integers(1, 2**10 - 1))
def test_a_column_window_gives_the_full_windows_numbers(seed, labels, optimizer, pick):
    sim = simulate(labels, optimizer, n_reports=12, seed=seed)
    cfg = MonitorConfig()
    window = StatsWindow(len(labels), cfg.window, cfg.curv_factor)
    for s in sim.stats:
        window.push(s)
    idx = np.array([i for i in range(len(labels)) if pick >> i & 1] or [0])
    for m in _monitors(cfg):
        full, part = m.evaluate(window), m.evaluate(window.columns(idx))
        assert part.columns is not None and np.array_equal(part.columns, idx)
        assert _same(part.margin, full.margin[idx])
        assert np.array_equal(part.holds(len(labels))[idx], full.holds()[idx])
        assert not part.holds(len(labels))[np.setdiff1d(np.arange(len(labels)), idx)].any()
        for name, value in full.numbers.items():
            assert _same(part.numbers[name], value[idx] if np.ndim(value) else value), (m.name, name)
        for i in idx:
            assert _json(part.certificate(int(i))) == _json(full.certificate(int(i)))


def test_a_certificate_for_a_group_outside_the_subset_is_refused():
    sim = simulate(["converging"] * 4, "gd", n_reports=10)
    window = StatsWindow(4, 8)
    for s in sim.stats:
        window.push(s)
    part = default_monitors(MonitorConfig())[0].evaluate(window.columns(np.array([1, 3])))
    with pytest.raises(InvalidArgumentError, match="group index"):
        part.certificate(2)


class FullController(Controller):
    """The reference: every monitor on every group."""

    def _evaluate(self, eligible):
        return [m.evaluate(self.window) for m in self.monitors]


def _events(outs):
    return [(e.step, [(d.index, d.action, [_json(c) for c in d.certificates]) for d in e.decisions])
            for o in outs for e in o.events + o.restores]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), labels=st.lists(st.sampled_from(BEHAVIOURS), min_size=3, max_size=12),
       optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]), kind=st.sampled_from([GroupKind.LAYER, GroupKind.HEAD]),
       tol_abs=st.sampled_from([None, 1e-2, 1.0]))
def test_subset_evaluation_decides_exactly_as_full_evaluation(seed, labels, optimizer, kind, tol_abs):
    sim = simulate(labels, optimizer, n_reports=30, seed=seed, kind=kind)
    cfg = ControllerConfig(MonitorConfig(tol_abs=tol_abs), guard=FAST_GUARD, hysteresis=2, cooldown_steps=0)
    monitors = _monitors(cfg.monitors)
    fast, ref = Controller(sim.groups, config=cfg, monitors=monitors), FullController(sim.groups, config=cfg,
                                                                                         monitors=monitors)
    outs_fast = [fast.observe(s) for s in sim.stats]
    outs_ref = [ref.observe(s) for s in sim.stats]
    assert _events(outs_fast) == _events(outs_ref)
    assert np.array_equal(fast.status, ref.status)


def test_the_equivalence_test_sees_freezes_and_convergence_prunes():
    """The property above is not vacuous: on this stream the reference freezes layers (BOUNDED
    evaluated) and prunes converged groups through HARMLESS (not only through collapse)."""
    labels = ["converging"] * 4 + ["collapsing"] * 2 + ["learning"] * 2
    sim = simulate(labels, "gd", n_reports=30, seed=3, kind=GroupKind.LAYER)
    cfg = ControllerConfig(MonitorConfig(tol_abs=1.0), guard=FAST_GUARD, hysteresis=2, cooldown_steps=0)
    layers = [type(sim.groups[0])(g.name, GroupKind.LAYER, g.layer, g.n_params, g.flops_remove, g.flops_freeze * 10)
              for g in sim.groups]
    ref = FullController(layers, config=cfg)
    fast = Controller(layers, config=cfg)
    outs = [ref.observe(s) for s in sim.stats]
    assert _events([fast.observe(s) for s in sim.stats]) == _events(outs)
    roles = {(d.action, c.monitor) for o in outs for e in o.events for d in e.decisions for c in d.certificates}
    assert (Action.FREEZE, "movement") in roles
    assert (Action.PRUNE, "contribution") in roles
