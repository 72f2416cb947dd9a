"""Property tests of the built-in monitors on simulated trajectories (tests/sim_training.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.control.decision_log import evaluate_condition
from lyactl.errors import ShapeError
from lyactl.control.monitors import MonitorConfig, Role, StatsWindow, default_monitors
from sim_training import simulate

CFG = MonitorConfig()
SETTINGS = settings(max_examples=6, deadline=None)


def first_holds(sim, role_names=("convergence", "collapse", "movement", "contribution")):
    """Report index at which each monitor first holds per group (-1: never); also every-holds mask."""
    mons = [m for m in default_monitors(CFG) if m.name in role_names]
    win = StatsWindow(len(sim.groups), CFG.window, CFG.curv_factor)
    first = {m.name: np.full(len(sim.groups), -1) for m in mons}
    for k, s in enumerate(sim.stats):
        win.push(s)
        for m in mons:
            h = m.evaluate(win).holds()
            f = first[m.name]
            f[(f < 0) & h] = k
    return first


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]))
def test_learning_diverging_noise_never_certified(seed, optimizer):
    labels = ["learning"] * 4 + ["diverging"] * 4 + ["noise"] * 4
    first = first_holds(simulate(labels, optimizer, n_reports=50, seed=seed),
                        ("convergence", "collapse", "movement"))
    for name, f in first.items():
        assert (f == -1).all(), (name, f)


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]))
def test_converging_certified_within_bounded_delay(seed, optimizer):
    decay = 0.98 if optimizer == "adamw" else 1.0  # constant-step Adam hovers at ~eta: no convergence
    first = first_holds(simulate(["converging"] * 6, optimizer, n_reports=40, seed=seed, lr_decay=decay),
                        ("convergence",))
    assert ((first["convergence"] >= CFG.window - 1) & (first["convergence"] <= 30)).all(), first


@SETTINGS
@given(seed=st.integers(0, 10**6), optimizer=st.sampled_from(["gd", "heavy_ball", "adamw"]))
def test_collapsing_certified_within_bounded_delay(seed, optimizer):
    first = first_holds(simulate(["collapsing"] * 6, optimizer, n_reports=60, seed=seed), ("collapse",))
    assert ((first["collapse"] >= CFG.window - 1) & (first["collapse"] <= 55)).all(), first


def test_converging_not_collapsing():
    first = first_holds(simulate(["converging"] * 6, "gd", n_reports=40, seed=3), ("collapse",))
    assert (first["collapse"] == -1).all()


def test_unknown_until_window_full_and_on_nan():
    sim = simulate(["collapsing"] * 3, "gd", n_reports=12, seed=0)
    win = StatsWindow(3, CFG.window)
    mons = default_monitors(CFG)
    for k, s in enumerate(sim.stats):
        if k == 9:
            s.dw_sq[1] = np.nan
            s.w_sq[1] = np.nan
        win.push(s)
        for m in mons:
            r = m.evaluate(win)
            if k < CFG.window - 1:
                assert np.isnan(r.margin).all()
            if k >= 9:
                assert np.isnan(r.margin[1]) and not r.holds()[1]


def test_certificate_text_reevaluates_to_margin():
    sim = simulate(["collapsing", "converging", "noise"], "gd", n_reports=12, seed=5)
    win = StatsWindow(3, CFG.window)
    for s in sim.stats:
        win.push(s)
    for m in default_monitors(CFG):
        r = m.evaluate(win)
        for i in np.flatnonzero(r.holds()):
            cert = r.certificate(int(i))
            margin, mismatches = evaluate_condition(cert.condition, cert.numbers)
            assert not mismatches
            assert margin == pytest.approx(cert.margin, rel=1e-9, abs=1e-12)


def test_curvature_absent_uses_edge_of_stability_or_unknown():
    sim = simulate(["collapsing"] * 2, "gd", n_reports=10, seed=1, curvature=False)
    for factor in (2.0, None):
        win = StatsWindow(2, CFG.window, factor)
        for s in sim.stats:
            win.push(s)
        used = win.field("curv_used")[-1]
        if factor is None:
            assert np.isnan(used).all()
            r = [m for m in default_monitors(CFG) if m.role is Role.HARMLESS][0].evaluate(win)
            assert np.isnan(r.margin).all()
        else:
            assert np.allclose(used, factor / sim.stats[-1].lr)


def test_push_rejects_wrong_shape():
    sim = simulate(["noise"] * 3, "gd", n_reports=1)
    with pytest.raises(ShapeError, match="GroupStats.w_sq"):
        StatsWindow(4, 8).push(sim.stats[0])


def test_incremental_ratios_match_direct_and_survive_state_roundtrip():
    sim = simulate(["collapsing", "noise", "converging", "learning"], "gd", n_reports=13, seed=2)
    win = StatsWindow(4, 6)
    for s in sim.stats:
        win.push(s)
    other = StatsWindow(4, 6)
    other.load_state_dict(win.state_dict())
    for f, lag in (("w_sq", 1), ("dw_sq", 2)):
        V = win.field(f)
        direct = np.max(V[lag:] / (V[:-lag] + 1e-300), axis=0)
        assert np.array_equal(win.max_ratio(f, lag), direct)
        assert np.array_equal(other.max_ratio(f, lag), direct)
