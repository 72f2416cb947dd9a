"""The sceptic's baselines: a replayed schedule with random / magnitude / Taylor selection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyactl.control.baselines import (
    ReplayController,
    ScheduledEvent,
    magnitude_scores,
    random_scores,
    schedule_from_log,
    taylor_scores,
)
from lyactl.errors import InvalidArgumentError
from lyactl.control.groups import Action, Constraint, Group, GroupKind, GroupStats


def _model(n_layers: int = 3, n_heads: int = 4, n_mlp: int = 3):
    """Layer groups, then per layer its heads and MLP blocks; constraints as a backend sets them."""
    groups, cons = [], []
    for L in range(n_layers):
        groups.append(Group(f"blocks.{L}", GroupKind.LAYER, L, 100, 10.0, 3.0))
    for L in range(n_layers):
        heads = [len(groups) + i for i in range(n_heads)]
        groups += [Group(f"blocks.{L}.head.{i}", GroupKind.HEAD, L, 10, 1.0, 0.0) for i in range(n_heads)]
        mlp = [len(groups) + i for i in range(n_mlp)]
        groups += [Group(f"blocks.{L}.mlp.{i}", GroupKind.MLP_BLOCK, L, 20, 2.0, 0.0) for i in range(n_mlp)]
        cons += [Constraint(tuple(heads), 1), Constraint(tuple(mlp), 1)]
    cons.append(Constraint(tuple(range(n_layers)), 1))
    return groups, cons


def _stats(n: int, step: int, rng: np.random.Generator) -> GroupStats:
    arr = lambda: rng.random(n)  # noqa: E731
    return GroupStats(step, 1e-3, 2.0, arr(), arr(), arr(), rng.normal(size=n), arr(), np.full(n, np.nan))


def _pruned(events) -> list[int]:
    return [d.index for e in events for d in e.decisions if d.action is Action.PRUNE]


def test_layer_removal_voids_its_constraints_and_counts_match():
    groups, cons = _model()
    ctl = ReplayController(groups, cons, [ScheduledEvent(10, {"layer": 1, "head": 3, "mlp_block": 2})], taylor_scores)
    out = ctl.observe(_stats(len(groups), 10, np.random.default_rng(0)))
    idx = _pruned(out.events)
    kinds = [groups[i].kind for i in idx]
    assert kinds.count(GroupKind.LAYER) == 1
    assert kinds.count(GroupKind.HEAD) == 3 and kinds.count(GroupKind.MLP_BLOCK) == 2
    layer = groups[idx[0]].layer
    assert all(groups[i].layer != layer for i in idx[1:]), "a group inside the removed layer was counted"
    for c in cons:  # every constraint not voided still holds
        live = [m for m in c.members if groups[m].kind is GroupKind.LAYER or groups[m].layer != layer]
        if live:
            assert sum(m not in idx for m in live) >= min(c.min_keep, len(live))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 6), st.integers(0, 5))
def test_replay_respects_constraints_for_any_scores(seed, n_heads, n_mlp):
    groups, cons = _model()
    sched = [ScheduledEvent(5, {"head": n_heads}), ScheduledEvent(10, {"mlp_block": n_mlp, "layer": 1})]
    ctl = ReplayController(groups, cons, sched, random_scores(seed))
    rng = np.random.default_rng(seed)
    idx = _pruned(ctl.observe(_stats(len(groups), 5, rng)).events + ctl.observe(_stats(len(groups), 10, rng)).events)
    assert len(idx) == len(set(idx))
    heads_left = {L: sum(1 for i, g in enumerate(groups) if g.kind is GroupKind.HEAD and g.layer == L and i not in idx)
                  for L in range(3)}
    assert all(v >= 1 for v in heads_left.values())


def test_rules_pick_the_lowest_scores():
    groups, cons = _model(n_layers=1, n_heads=4, n_mlp=1)
    n = len(groups)
    stats = _stats(n, 3, np.random.default_rng(1))
    heads = [i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD]
    for rule in (magnitude_scores, taylor_scores):
        ctl = ReplayController(groups, cons, [ScheduledEvent(0, {"head": 2})], rule)
        chosen = _pruned(ctl.observe(stats).events)
        scores = rule(stats, groups)
        assert sorted(chosen) == sorted(sorted(heads, key=lambda i: scores[i])[:2])
        assert all(d.certificates[0].verdict.value == "unknown" for e in ctl.observe(stats).events for d in e.decisions)


def test_schedule_from_log_skips_groups_inside_removed_layers():
    groups, _ = _model()
    log = [{"step": 7, "decisions": [{"index": 0, "action": "prune"}, {"index": 3, "action": "prune"},
                                     {"index": 4, "action": "prune"}, {"index": 10, "action": "prune"}]}]
    (ev,) = schedule_from_log(log, groups)
    # group 3, 4 are heads of layer 0 (removed with it); group 10 is a head of layer 1
    assert ev.step == 7 and ev.prune == {"layer": 1, "head": 1}


def test_unknown_kind_and_nan_loss():
    groups, cons = _model()
    with pytest.raises(InvalidArgumentError, match="ScheduledEvent.prune"):
        ReplayController(groups, cons, [ScheduledEvent(0, {"neuron": 1})], taylor_scores)
    ctl = ReplayController(groups, cons, [ScheduledEvent(0, {"head": 1})], taylor_scores)
    s = _stats(len(groups), 0, np.random.default_rng(2))
    bad = GroupStats(0, 1e-3, float("nan"), s.w_sq, s.dw_sq, s.g_sq, s.gw, s.m_sq, s.curv)
    out = ctl.observe(bad)
    assert out.held and not out.events


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3))
def test_replay_resumes_from_its_state_with_identical_decisions(seed, split):
    """A baseline run checkpoints like a controlled one: stopping after ``split`` reports and
    resuming from a JSON round trip of the state gives the same events as running through."""
    import json

    groups, cons = _model()
    sched = [ScheduledEvent(5, {"head": 2}), ScheduledEvent(10, {"mlp_block": 2, "layer": 1}),
             ScheduledEvent(15, {"head": 1}, 1)]
    rng = np.random.default_rng(seed)
    stream = [_stats(len(groups), s, rng) for s in (5, 10, 15, 20)]
    through = ReplayController(groups, cons, sched, random_scores(seed))
    want = [_pruned(through.observe(s).events) for s in stream]
    first = ReplayController(groups, cons, sched, random_scores(seed))
    got = [_pruned(first.observe(s).events) for s in stream[:split]]
    resumed = ReplayController(groups, cons, sched, random_scores(seed))
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [_pruned(resumed.observe(s).events) for s in stream[split:]]
    assert got == want and any(want)
