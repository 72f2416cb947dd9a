"""A budget that counts pruned groups only (``BudgetCounts.PRUNED_ONLY``, issue 15): a FROZEN
group changes its ``phi`` by nothing, freezes still happen where certified (also once the
target is met) but only prunes meet it; the default counts training FLOPs exactly as before;
``lyactl compress`` uses it and records the inference and training ratios apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.app.runconfig import ControllerSection, run_config_from_dict
from lyactl.control.accounting import FlopsAccount
from lyactl.control.budget import BudgetConfig, BudgetCounts
from lyactl.control.controller import ACTIVE, FROZEN, PRUNED, Controller, ControllerConfig
from lyactl.control.groups import Group, GroupKind
from lyactl.control.guard import GuardConfig
from lyactl.control.selection import Structure
from lyactl.errors import InvalidArgumentError
from sim_training import simulate

GUARD = GuardConfig(window=2, pre_window=4, tol_rel=0.5, z=3.0)
N_REPORTS, INTERVAL = 40, 10


# ------------------------------------------------------------------ accounting
def _groups(remove, freeze):
    return [Group(f"g{i}", GroupKind.LAYER if i % 2 else GroupKind.MLP_BLOCK, i, 4, float(r), float(f))
            for i, (r, f) in enumerate(zip(remove, freeze))]


def _account(groups, counts, flops_model=None):
    is_layer = np.array([g.kind is GroupKind.LAYER for g in groups])
    structure = Structure(is_layer, np.array([g.layer for g in groups], np.int64), ())
    return FlopsAccount(groups, structure, flops_model, None, counts)


def _overlapping(remove, freeze):
    """A flops model whose savings do not add up (pruned groups overlap): ``F = F0 - r.p - f.z
    + 0.1 (r.p)^2 / F0`` with ``p``, ``z`` the pruned / frozen masks."""
    r, f = np.asarray(remove, float), np.asarray(freeze, float)
    F0 = 10.0 * (r.sum() + f.sum())

    def count(status):
        rp = float(r @ (status == PRUNED))
        return F0 - rp - float(f @ (status == FROZEN)) + 0.1 * rp * rp / F0
    return count


costs = st.integers(2, 8).flatmap(lambda n: st.tuples(
    st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n), st.lists(st.floats(0.5, 30.0), min_size=n, max_size=n),
    st.lists(st.sampled_from([ACTIVE, FROZEN, PRUNED]), min_size=n, max_size=n), st.integers(0, n - 1)))


@settings(max_examples=40, deadline=None)
@given(costs=costs, exact=st.booleans())
def test_a_frozen_group_changes_pruned_only_phi_by_nothing_a_pruned_one_as_before(costs, exact):
    remove, freeze, status, j = costs
    groups = _groups(remove, freeze)
    fm = _overlapping(remove, freeze) if exact else None
    only, train = _account(groups, BudgetCounts.PRUNED_ONLY, fm), _account(groups, BudgetCounts.TRAINING_FLOPS, fm)
    s = np.array(status, np.int8)

    def phi(acc, st_):
        acc.changed()
        return acc.saved_fraction(st_)
    unfrozen = np.where(s == FROZEN, ACTIVE, s).astype(np.int8)
    assert phi(only, s) == phi(train, unfrozen)  # pruned-only phi = training phi with nothing frozen
    if s[j] != PRUNED:  # freezing group j: no change pruned-only, the freeze saving in training FLOPs
        a, f = s.copy(), s.copy()
        a[j], f[j] = ACTIVE, FROZEN
        assert phi(only, f) == phi(only, a)
        if not exact and not (a == PRUNED).any():  # nominal, nothing pruned: the freeze saving exactly
            assert phi(train, f) - phi(train, a) == pytest.approx(freeze[j] / train.model_flops)
        # pruning group j changes both by the same amount when nothing is frozen
        p = unfrozen.copy()
        p[j] = PRUNED
        assert phi(only, p) - phi(only, unfrozen) == pytest.approx(phi(train, p) - phi(train, unfrozen))
        assert phi(only, p) > phi(only, unfrozen)


def test_the_measured_source_is_not_used_by_a_pruned_only_budget():
    """The backend's FLOPs/token include the freeze saving: the training fraction takes it,
    the pruned-only budget counts by the decisions alone."""
    groups = _groups([100.0, 300.0], [30.0, 100.0])
    for counts in BudgetCounts:
        acc = _account(groups, counts)
        s = np.zeros(2, np.int8)
        acc.measure(s, 1000.0)  # the dense reference
        s[1] = FROZEN
        acc.changed()
        acc.measure(s, 900.0)  # 10 % saved by the freeze, as measured
        assert acc.training_fraction(s) == pytest.approx(0.1)
        assert acc.saved_fraction(s) == (0.0 if counts is BudgetCounts.PRUNED_ONLY else pytest.approx(0.1))


# ------------------------------------------------------------------ controller runs
def _sim_groups(labels, seed, layer_flops):
    """Simulated groups; the converging ones are LAYER groups (freezable) of
    ``layer_flops = (flops_remove, flops_freeze)``; model FLOPs = every group's removal sum."""
    sim = simulate(labels, "gd", n_reports=N_REPORTS, seed=seed, kind=GroupKind.MLP_BLOCK)
    groups = [dataclasses.replace(g, kind=GroupKind.LAYER, flops_remove=layer_flops[0], flops_freeze=layer_flops[1])
              if b == "converging" else g for g, b in zip(sim.groups, labels)]
    return sim, groups, float(sum(g.flops_remove for g in groups))


def _run(groups, stats, model_flops, target, counts=None, last=300):
    extra = {} if counts is None else {"counts": counts}
    cfg = ControllerConfig(guard=GUARD, cooldown_steps=0, last_decision_step=last, model_flops=model_flops,
                           budget=BudgetConfig(target, N_REPORTS * INTERVAL, kind="final", **extra))
    ctrl = Controller(groups, config=cfg)
    outs = [ctrl.observe(s) for s in stats]
    return ctrl, outs


def _pruned_saving(ctrl):
    """Nominal prune-only saving (the groups are disjoint): ``sum flops_remove[PRUNED] / F``."""
    return float(ctrl.flops_remove[ctrl.status == PRUNED].sum()) / ctrl.model_flops


LABELS = ["converging"] * 3 + ["collapsing"] * 6 + ["learning"] * 3


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_prunes_alone_reach_a_pruned_only_target_where_freezes_stop_a_training_budget(seed):
    """Freezes (larger gain, decided first) and prunes both fire: the training-FLOPs budget stops
    with the freezes counted, its prunes alone short of the target; the pruned-only budget
    freezes the same blocks and prunes until the prunes alone meet it, one prune fewer would not."""
    sim, groups, F = _sim_groups(LABELS, seed, (300.0, 100.0))
    target = 0.25
    train, _ = _run(groups, sim.stats, F, target, "training_flops")
    only, _ = _run(groups, sim.stats, F, target, "pruned_only")
    assert (train.status == FROZEN).any() and np.array_equal(train.status == FROZEN, only.status == FROZEN)
    assert train.saved_fraction() >= target > _pruned_saving(train)
    assert only.saved_fraction() == pytest.approx(_pruned_saving(only)) and _pruned_saving(only) >= target
    assert _pruned_saving(only) - float(only.flops_remove[only.status == PRUNED].min()) / F < target
    assert only.training_fraction() > only.saved_fraction()  # the freezes, reported apart
    assert (only.status == PRUNED).sum() > (train.status == PRUNED).sum()


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_freezes_still_happen_once_a_pruned_only_target_is_met(seed):
    """Prunes (larger gain) meet the target first: a training-FLOPs budget then blocks every
    decision, a pruned-only one still freezes the converged blocks (certified), no further prune."""
    sim, groups, F = _sim_groups(LABELS, seed, (96.0, 32.0))
    train, _ = _run(groups, sim.stats, F, 0.3, "training_flops")
    only, outs = _run(groups, sim.stats, F, 0.3, "pruned_only")
    assert not (train.status == FROZEN).any()
    assert (only.status == FROZEN).any() and np.array_equal(only.status == PRUNED, train.status == PRUNED)
    freezes = [d for o in outs for e in o.events for d in e.decisions if d.action.value == "freeze"]
    assert freezes and all(d.certificates and all(c.verdict.value == "holds" for c in d.certificates)
                           for d in freezes)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10**6), target=st.sampled_from([0.2, 0.35]))
def test_the_completion_meets_a_pruned_only_target_with_prunes(seed, target):
    """Nothing collapses: at ``last_decision_step`` the completion (rule 9) prunes until the
    prunes alone meet the target, the frozen blocks not counted."""
    labels = ["converging"] * 3 + ["learning"] * 9
    sim, groups, F = _sim_groups(labels, seed, (96.0, 32.0))
    only, _ = _run(groups, sim.stats, F, target, "pruned_only", last=205)
    assert (only.status == FROZEN).any()
    assert _pruned_saving(only) >= target and only.saved_fraction() == pytest.approx(_pruned_saving(only))


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10**6), kind=st.sampled_from(["average", "final"]))
def test_the_default_counts_training_flops_as_before(seed, kind):
    """No ``counts``: the same decisions as ``training_flops`` named, and at every report the
    budget's phi is the training phi, the freezes' ``flops_freeze`` included (the sum of before)."""
    sim, groups, F = _sim_groups(LABELS, seed, (300.0, 100.0))
    runs = []
    for extra in ({}, {"counts": "training_flops"}):
        cfg = ControllerConfig(guard=GUARD, cooldown_steps=0, last_decision_step=300, model_flops=F,
                               budget=BudgetConfig(0.25, N_REPORTS * INTERVAL, kind=kind, **extra))
        ctrl, trace = Controller(groups, config=cfg), []
        for s in sim.stats:
            out = ctrl.observe(s)
            nominal = (ctrl.flops_remove[ctrl.status == PRUNED].sum() + ctrl.flops_freeze[ctrl.status == FROZEN].sum())
            assert ctrl.saved_fraction() == ctrl.training_fraction() == pytest.approx(nominal / F)
            trace.append(([(e.step, [(d.index, d.action) for d in e.decisions], e.flops_before, e.flops_after)
                           for e in out.events], out.reason, out.penalty.tolist()))
        runs.append(trace)
    assert runs[0] == runs[1] and any(t[0] for t in runs[0])


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("make, name", [
    (lambda: BudgetConfig(0.3, 100, counts="pruned"), "BudgetConfig.counts"),
    (lambda: BudgetConfig(0.3, 100, counts=None), "BudgetConfig.counts"),
    (lambda: ControllerSection(budget_counts="inference"), "controller.budget_counts"),
    (lambda: ControllerSection(budget_counts=["pruned_only"]), "controller.budget_counts"),
    (lambda: ControllerSection(budget_kind=["final"]), "controller.budget_kind"),
    (lambda: run_config_from_dict({"controller": {"budget_counts": 1}}), "controller.budget_counts"),
    (lambda: _account(_groups([1.0], [1.0]), "pruned_only"), "counts"),
])
def test_bad_values_are_refused_by_name(make, name):
    with pytest.raises(InvalidArgumentError, match=name):
        make()


def test_the_config_key_reaches_the_budget():
    for value in BudgetCounts:
        cfg = ControllerSection(budget=0.3, budget_counts=value.value).config(100)
        assert cfg.budget.counts is value
    assert ControllerSection(budget=0.3).config(100).budget.counts is BudgetCounts.TRAINING_FLOPS


def test_the_runner_prices_a_frozen_block_trainable_for_a_pruned_only_budget():
    """``lyactl train``'s controller (runner.build_controller): with ``budget_counts =
    "pruned_only"`` its FLOPs model ignores a freeze the backend applied; with the default it
    counts it (the backend's training FLOPs)."""
    torch = pytest.importorskip("torch")
    from lyactl.app.runconfig import RunConfig
    from lyactl.control.groups import Action, Decision, Event
    from lyactl_torch import GPT, GPTConfig, Lyactl
    from lyactl_torch.runner import build_controller

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, seq_len=8, d_model=32, n_layer=2, n_head=2, head_dim=16, mlp_hidden=64))
    loop = Lyactl(model, torch.optim.AdamW(model.parameters()), None, interval=1, block=32)
    groups = loop.backend.groups()
    b0 = next(i for i, g in enumerate(groups) if g.kind is GroupKind.LAYER)
    zero = np.zeros(len(groups), np.int8)
    counts = {}
    for value in BudgetCounts:
        cfg = RunConfig(controller=ControllerSection(budget=0.3, budget_counts=value.value))
        counts[value] = build_controller(cfg, loop).account.flops_model
    before = {v: f(zero) for v, f in counts.items()}
    loop.backend.apply(Event(0, 1, (Decision(1, groups[b0].name, b0, Action.FREEZE),)))
    assert counts[BudgetCounts.PRUNED_ONLY](zero) == before[BudgetCounts.PRUNED_ONLY]
    assert counts[BudgetCounts.TRAINING_FLOPS](zero) < before[BudgetCounts.TRAINING_FLOPS]


# ------------------------------------------------------------------ lyactl compress (torch, CPU)
def _tiny(target, steps, freeze, **kw):
    """A tiny GPT (tests/test_compress.py) and the compress config of ``steps`` steps."""
    pytest.importorskip("torch")
    from lyactl_torch.compress import CompressConfig
    from test_compress import BATCH, SEQ, tiny_gpt

    return tiny_gpt(), CompressConfig(target, steps * SEQ * BATCH, batch_size=BATCH, seq_len=SEQ, block=16,
                                      freeze=freeze, **kw)


def _batches():
    from lyactl_torch.corpus import Batches
    from test_compress import BATCH, SEQ, stream

    return Batches(stream(), SEQ, BATCH, 1)


class _FreezeAt:
    """The compress controller, plus one scripted freeze of LAYER group ``index`` (released at
    once, no certificate) at the first report at or after ``step`` without an event of its own."""

    def __init__(self, ctrl, index, step):
        self.ctrl, self.index, self.step, self.pending = ctrl, index, step, True

    def __getattr__(self, name):
        return getattr(self.ctrl, name)

    def observe(self, stats):
        out = self.ctrl.observe(stats)
        if self.pending and stats.step >= self.step and not out.events:
            self.pending = False
            event = self.ctrl._event(stats.step, [(self.index, FROZEN)], lambda i, a: ())
            out = dataclasses.replace(out, events=(event,), releases=out.releases + (event,))
        return out


def _scripted(config, block):
    """``method="replay"`` factory: the controller ``compress`` builds for ``method="lyactl"``
    (its section and flops model), block ``block`` frozen at step 3."""
    from lyactl.app.runconfig import build_controller
    from lyactl_torch.compress import _flops_model, controller_section

    def factory(backend, cons):
        groups = backend.groups()
        ctrl = build_controller(controller_section(config), config.steps, groups, cons, _flops_model(backend, config))
        index = next(i for i, g in enumerate(groups) if g.kind is GroupKind.LAYER and g.layer == block)
        return _FreezeAt(ctrl, index, 3)
    return factory


def test_compress_with_freezing_allowed_reaches_its_inference_target_and_records_both_ratios():
    from lyactl_torch.compress import compress, controller_section

    model, cfg = _tiny(0.6, 60, True)
    assert controller_section(cfg).budget_counts == "pruned_only" and controller_section(cfg).allow_freeze
    off = controller_section(dataclasses.replace(cfg, freeze=False))
    assert off.budget_counts == "training_flops" and not off.allow_freeze  # --no-freeze: as before
    r = compress(model, _batches(), cfg).record
    assert r["reached_target"] and r["inference_flops_ratio"] <= 0.6 and r["freeze"]
    assert r["inference_flops_ratio"] == r["flops_per_token_ratio"]
    assert r["inference_flops_per_token_after"] * 3 == pytest.approx(r["flops_per_token_after"])
    # training FLOPs at the end: as large as the model's unless a block froze, never larger
    frozen_saving = r["flops_per_token_after"] - r["training_flops_per_token_after"]
    assert frozen_saving >= 0 and (frozen_saving > 0) == (r["frozen_blocks"] > 0)
    assert r["training_flops_saving"] == pytest.approx(1 - r["training_flops_per_token_after"]
                                                       / r["training_flops_per_token_before"])


def test_a_frozen_block_does_not_meet_the_compress_target():
    """Block 0 frozen early (scripted): with freezing allowed (pruned-only budget) the model is
    still pruned to the target, the freeze's training saving reported on top; the training-FLOPs
    budget (``freeze=False``) counts the freeze and stops with the model larger than asked."""
    from lyactl_torch.compress import compress

    records = {}
    for freeze in (True, False):
        model, cfg = _tiny(0.6, 60, freeze, method="replay")
        records[freeze] = compress(model, _batches(), cfg, controller=_scripted(cfg, 0)).record
    on, off = records[True], records[False]
    assert on["frozen_blocks"] >= 1 and off["frozen_blocks"] == 1  # freezing allowed: certificates may add some
    assert on["reached_target"] and on["inference_flops_ratio"] <= 0.6
    assert on["training_flops_saving"] > 1 - on["inference_flops_ratio"]  # the freeze saves training compute too
    assert off["training_flops_saving"] >= 1 - 0.6 > 1 - off["inference_flops_ratio"]  # met by the freeze
    assert not off["reached_target"]


def test_the_trainable_count_ignores_frozen_blocks():
    """``flops_with(..., trainable=True)``: a frozen block priced as what it costs to run."""
    from lyactl_torch.flops import flops_per_token, model_flops_per_token
    from lyactl_torch.flops_model import flops_with
    from lyactl_torch.freeze import freeze_layer
    from lyactl_torch.groups import Layout, adapter_for

    model, _ = _tiny(0.6, 1, True)
    layout = Layout(model, adapter_for(model), 16)
    dense = flops_per_token(layout.adapter.cost(model))
    status = np.zeros(len(layout.groups), np.int8)
    freeze_layer(layout, 1)
    assert model_flops_per_token(model) < dense == flops_with(layout, status, trainable=True)
    assert flops_with(layout, status) == pytest.approx(model_flops_per_token(model))


def test_cli_no_freeze_gives_the_training_flops_budget(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    import json

    from lyactl.app.cli import main
    from lyactl_torch.checkpoint import save
    from lyactl_torch.groups import Layout, adapter_for
    from test_compress import BATCH, SEQ

    model, _ = _tiny(0.6, 1, True)
    lay = Layout(model, adapter_for(model), 16)
    save(tmp_path / "t.pt", model, live=lay.live, block_ids=lay.block_ids, block=16)
    for flag, out in (([], "on"), (["--no-freeze"], "off")):
        rc = main(["compress", str(tmp_path / "t.pt"), "--target-flops", "0.6", "--tokens", str(30 * SEQ * BATCH),
                   "--out", str(tmp_path / out), "--no-progress", "--seq-len", str(SEQ), "--batch-size", str(BATCH),
                   "--block", "16", *flag])
        summary = json.loads((tmp_path / out / "summary.json").read_text())["arms"][0]
        assert summary["freeze"] is (not flag) and rc == (0 if summary["reached_target"] else 1)
        assert summary["reached_target"] == (summary["inference_flops_ratio"] <= 0.6)
        assert {"training_flops_per_token_after", "training_flops_saving", "frozen_blocks"} <= set(summary)
    capsys.readouterr()
