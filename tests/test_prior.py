"""An importance prior for the budget actuator and the final-budget completion
(:mod:`lyactl.control.scoring`): it changes which groups are pushed and completed, in the
direction it says; without one the decisions are today's, bit for bit; bad priors are refused
by name; a NaN entry never leads to a pick; ``compress(prior="activation")`` records it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.app.runconfig import ControllerSection, build_controller
from lyactl.control.budget import BudgetConfig
from lyactl.control.controller import PRUNED, Controller, ControllerConfig
from lyactl.control.groups import GroupKind
from lyactl.control.guard import GuardConfig
from lyactl.control.scoring import Scoring, fixed_prior
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError
from sim_training import simulate

GUARD = GuardConfig(window=2, pre_window=4, tol_rel=0.5, z=3.0)
N_REPORTS, INTERVAL, N = 40, 10, 12


def _run(labels, seed, prior=None, target=0.35, kind="final", last=205):
    """A scripted run (equal-cost groups); returns the controller and its outputs."""
    sim = simulate(labels, "gd", n_reports=N_REPORTS, seed=seed, kind=GroupKind.MLP_BLOCK)
    cfg = ControllerConfig(guard=GUARD, cooldown_steps=0, last_decision_step=last,
                           budget=BudgetConfig(target, total_steps=N_REPORTS * INTERVAL, kind=kind))
    ctrl = Controller(sim.groups, config=cfg, prior=prior)
    return ctrl, [ctrl.observe(s) for s in sim.stats]


def _trace(outs, cert=lambda c: c):
    """Everything a run decided: penalties, and per event its decisions with their certificates."""
    return [(o.penalty.tolist(), [(e.step, [(d.group, d.action, [cert(c.to_json()) for c in d.certificates])
                                            for d in e.decisions]) for e in o.events]) for o in outs]


def _pruned(outs):
    return [d.index for o in outs for e in o.events for d in e.decisions]


def _pushed(outs):
    return sorted({int(i) for o in outs for i in np.flatnonzero(o.penalty > 0)})


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10**6), kind=st.sampled_from(["final", "average"]))
def test_without_a_prior_the_decisions_are_todays_bit_for_bit(seed, kind):
    """No prior, and a prior equal to today's ``|g . w|``, give identical penalties, events and
    certificates (the completion's ``score`` included) on the same scripted run; no event
    records a prior when none is given."""
    labels = ["collapsing"] * 3 + ["learning"] * 9
    _, none = _run(labels, seed, None, kind=kind)
    _, default = _run(labels, seed, kind=kind)  # the argument left out
    gw = lambda stats: np.abs(stats.gw)  # noqa: E731  today's importance, as a prior
    _, same = _run(labels, seed, gw, kind=kind)
    assert _trace(none) == _trace(default)
    assert _trace(none) == _trace(same, _drop_prior)  # the prior's value aside, the same certificates
    assert any(o.events for o in none) and any(o.penalty.any() for o in none)  # the run does decide
    assert all(not e.meta for o in none for e in o.events)
    assert all(e.meta == {"prior": "<lambda>"} for o in same for e in o.events)


def _drop_prior(cert):
    numbers = {k: v for k, v in cert["numbers"].items() if k != "prior"}
    return {**cert, "numbers": numbers}


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), perm_seed=st.integers(0, 10**6))
def test_the_lowest_prior_groups_are_pushed_and_completed(seed, perm_seed):
    """Equal-cost groups, nothing certifiable, distinct prior values: every group the actuator
    pushes, and every group the completion prunes, is less important than every group it
    keeps (max prior of the chosen < min prior of the rest); the target is met."""
    prior = np.random.default_rng(perm_seed).permutation(N).astype(float) + 1.0
    ctrl, outs = _run(["learning"] * N, seed, prior)
    pushed, pruned = _pushed(outs), _pruned(outs)
    assert pushed and pruned and ctrl.saved_fraction() >= 0.35
    for chosen in (pushed, pruned):
        rest = np.setdiff1d(np.arange(N), chosen)
        assert prior[chosen].max() < prior[rest].min()
    certs = [c for o in outs for e in o.events for d in e.decisions for c in d.certificates]
    assert all(c.monitor == "budget:final" and c.numbers["prior"] == prior[d.index]
               for o in outs for e in o.events for d in e.decisions for c in d.certificates) and certs
    assert all(e.meta == {"prior": "prior"} for o in outs for e in o.events)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_a_group_marked_important_is_kept_while_an_equal_cost_one_goes(seed):
    """Take the group today's rule pushes and prunes first; mark it important (prior 10, the
    rest 1): it is then neither pushed nor pruned, and the groups that go instead cost the same."""
    labels = ["learning"] * N
    _, today = _run(labels, seed)
    first = _pruned(today)[0]
    assert first in _pushed(today)
    prior = np.ones(N)
    prior[first] = 10.0
    ctrl, outs = _run(labels, seed, prior)
    assert first not in _pushed(outs) and first not in _pruned(outs)
    assert len(_pruned(outs)) == len(_pruned(today))  # equal costs: as many groups go
    assert ctrl.status[first] != PRUNED


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6), bad=st.integers(0, N - 1), which=st.sampled_from(["nan", "inf"]))
def test_a_non_finite_entry_is_never_picked(seed, bad, which):
    """A callable prior returning NaN for one group (or a fixed prior of +inf, "never ranked"),
    the group's importance otherwise the lowest: it is never pushed nor completed, others are."""
    values = np.arange(1.0, N + 1.0)
    values[bad] = 0.0  # would be first
    if which == "nan":
        prior = lambda stats: np.where(np.arange(N) == bad, np.nan, values)  # noqa: E731
    else:
        prior = np.where(np.arange(N) == bad, np.inf, values)
    ctrl, outs = _run(["learning"] * N, seed, prior)
    assert bad not in _pushed(outs) and bad not in _pruned(outs)
    assert _pushed(outs) and _pruned(outs) and ctrl.saved_fraction() >= 0.35


@pytest.mark.parametrize("prior, error, found", [
    (np.ones(N - 1), ShapeError, "(11,)"),
    (np.ones((N, 1)), ShapeError, "(12, 1)"),
    (np.where(np.arange(N) == 3, np.nan, 1.0), NonFiniteError, "NaN at index 3"),
    (np.where(np.arange(N) == 5, -0.5, 1.0), InvalidArgumentError, "-0.5 at index 5"),
    (np.where(np.arange(N) == 2, -np.inf, 1.0), InvalidArgumentError, "-inf at index 2"),
    (["a"] * N, InvalidArgumentError, "list"),
])
def test_bad_priors_are_refused_by_name(prior, error, found):
    sim = simulate(["learning"] * N, "gd", n_reports=1, seed=0)
    with pytest.raises(error, match=r"^prior: expected") as info:
        Controller(sim.groups, prior=prior)
    assert found in str(info.value)
    with pytest.raises(error, match=r"^prior: expected"):
        build_controller(ControllerSection(budget=0.3), 100, sim.groups, prior=prior)


@pytest.mark.parametrize("out, error", [(np.ones(N + 1), ShapeError), (-np.ones(N), InvalidArgumentError)])
def test_a_callable_prior_is_checked_when_called(out, error):
    """A callable's output is checked when the actuator first tops up; the error names it."""
    sim = simulate(["learning"] * N, "gd", n_reports=3, seed=0)

    def bad_prior(stats):
        return out

    cfg = ControllerConfig(budget=BudgetConfig(0.3, total_steps=300, kind="final"), last_decision_step=200)
    ctrl = Controller(sim.groups, config=cfg, prior=bad_prior)
    with pytest.raises(error, match=r"prior 'bad_prior' \(its output\): expected"):
        ctrl.observe(sim.stats[0])


def test_the_score_is_the_prior_per_flop_and_today_without_one():
    """The residual of the documented equations ``s = p / F`` and ``s = |g . w| / F``."""
    sim = simulate(["learning"] * N, "gd", n_reports=1, seed=1)
    F = np.linspace(1.0, 5.0, N)
    p = np.linspace(0.1, 2.0, N)
    s = sim.stats[0]
    assert np.array_equal(Scoring(F)(s), np.abs(s.gw) / F)
    assert np.array_equal(Scoring(F, fixed_prior(p, N, "p"))(s), p / F)
    assert Scoring(F).label is None and Scoring(F, fixed_prior(p, N, "p")).label == "p"
    fixed = fixed_prior(p, N)(s)
    assert not fixed.flags.writeable and np.array_equal(fixed, p)
    p[0] = 99.0  # the caller's array changing later does not change the prior
    assert fixed_prior(np.linspace(0.1, 2.0, N), N)(s)[0] == fixed[0] != 99.0


# ---------------------------------------------------------------------------- backend
def test_compress_with_the_activation_prior_records_it(tmp_path):
    """``compress(prior="activation")`` on a tiny trained GPT (CPU): the activation importance
    of the original is the prior; only groups it scores (finite: heads, MLP blocks) are pushed;
    every logged event records ``"prior": "activation"``; the target is reached (the actuator
    counts only groups ``min_keep`` lets go, and the completion may overshoot rather than miss)."""
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    from lyactl.control.decision_log import DecisionLog, read_log
    from lyactl_torch.compress import CompressConfig, compress
    from lyactl_torch.corpus import Batches
    from lyactl_torch.groups import Layout, adapter_for
    from test_compress import BATCH, SEQ, stream, tiny_gpt

    model = tiny_gpt()
    groups = Layout(model, adapter_for(model), 16).groups  # the backend's order (indices are stable)
    cfg = CompressConfig(0.6, 60 * SEQ * BATCH, batch_size=BATCH, seq_len=SEQ, block=16, prior="activation")
    log = DecisionLog(tmp_path / "decisions.jsonl")
    result = compress(model, Batches(stream(), SEQ, BATCH, 2), cfg, on_report=log.write)
    r = result.record
    assert r["prior"] == "activation" and r["reached_target"] and r["flops_per_token_ratio"] <= 0.6
    events = [x for x in read_log(tmp_path / "decisions.jsonl") if x["type"] == "event"]
    assert events and all(x["meta"] == {"prior": "activation"} for x in events)
    assert all(e.meta == {"prior": "activation"} for e in result.events)
    pushed = {int(i) for o in result.outputs for i in np.flatnonzero(o.penalty > 0)}
    assert pushed and {groups[i].kind for i in pushed} <= {GroupKind.HEAD, GroupKind.MLP_BLOCK}
    finals = [(d, c) for e in result.events for d in e.decisions for c in d.certificates
              if c.monitor == "budget:final"]
    assert all(np.isfinite(c.numbers["prior"]) and groups[d.index].kind is not GroupKind.LAYER for d, c in finals)


def test_the_prior_is_refused_with_another_method_and_named_on_the_cli(tmp_path, capsys):
    pytest.importorskip("torch")
    from lyactl.app.cli import main
    from lyactl_torch.compress import CompressConfig

    with pytest.raises(InvalidArgumentError, match=r"^prior: expected"):
        CompressConfig(0.6, 100, method="oneshot", prior="activation")
    with pytest.raises(InvalidArgumentError, match=r"^prior: expected"):
        CompressConfig(0.6, 100, prior="gradient")
    (tmp_path / "m.pt").write_bytes(b"")
    rc = main(["compress", str(tmp_path / "m.pt"), "--target-flops", "0.5", "--tokens", "10", "--method", "oneshot",
               "--prior", "activation", "--no-progress"])
    assert rc == 2 and "prior" in capsys.readouterr().err
