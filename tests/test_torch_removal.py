"""Measured removal on the torch side (:mod:`lyactl_torch.removal`), on the project's tiny GPT:

* ``zero_group`` then ``restore`` gives back every parameter bit for bit, for every group kind
  (head, MLP block, layer, residual channel block), also after earlier prunes (live positions
  no longer equal to the original unit ids); a pruned group cannot be zeroed;
* zeroing a head, an MLP block or a layer gives the logits of actually removing it with the
  backend (fp32, tight tolerance); zeroing a channel block changes the logits (exactness is not
  claimed there);
* ``batch_losses`` is the per-batch mean cross-entropy, ``ablation_losses`` the paired loss
  increase of each live group (a direct recomputation agrees; pruned groups are NaN columns;
  the model comes back unchanged);
* ``measured_round`` reaches its FLOPs target, its ``joint`` is the loss increase measured
  afterwards on the same batches, ``forwards`` = live groups + 2; ``MeasuredRounds`` acts at
  its steps only, each round meeting ``target^((k+1)/R)``;
* ``compress(method="measured")`` reaches the target in its rounds and prices the
  measurement in ``train_flops``; ``CompressConfig`` rejects bad round settings naming the field.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.decision_log import verify_certificate  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from lyactl.errors import InvalidArgumentError, ShapeError  # noqa: E402
from lyactl.verdict import Verdict  # noqa: E402
from lyactl_torch.backend import TorchBackend  # noqa: E402
from lyactl_torch.compress import CompressConfig, compress, logits  # noqa: E402
from lyactl_torch.corpus import Batches  # noqa: E402
from lyactl_torch.removal import (  # noqa: E402
    MeasuredRounds,
    ablation_losses,
    batch_losses,
    measured_round,
    restore,
    zero_group,
)
from test_compress import BATCH, SEQ, stream, tiny_gpt  # noqa: E402

M, ROWS = 4, 4  # calibration: M batches of ROWS sequences
KINDS = (GroupKind.HEAD, GroupKind.MLP_BLOCK, GroupKind.LAYER, GroupKind.CHANNEL_BLOCK)
EARLIER = ("blocks.0.attn.head.1", "blocks.1.mlp.block.2", "channels.1")  # pruned before, in some tests


@pytest.fixture(scope="module")
def trained():
    return tiny_gpt()


@pytest.fixture(scope="module")
def calib():
    """``(X, Y)``, ``[M * ROWS, SEQ]``: windows of a stream the training never saw."""
    toks = stream(M * ROWS * (SEQ + 1), seed=11).astype(np.int64).reshape(M * ROWS, SEQ + 1)
    xy = torch.from_numpy(toks)
    return xy[:, :-1], xy[:, 1:]


def backend_of(model, earlier=()):
    """A backend on ``model`` with the groups named in ``earlier`` already pruned (event 0)."""
    b = TorchBackend(model, torch.optim.AdamW(model.parameters(), lr=1e-3), block=16)
    if earlier:
        b.apply(prune_event(b, [b.layout.index[name] for name in earlier], event_id=0))
    return b


def prune_event(backend, indices, event_id=1):
    groups = backend.groups()
    return Event(event_id, 0, tuple(Decision(0, groups[i].name, i, Action.PRUNE) for i in indices))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@torch.no_grad()
def out(model, x):
    was = model.training
    model.eval()
    z = logits(model, x)
    model.train(was)
    return z


def live_of_kind(layout, kind):
    mask = layout.pruned_mask()
    return [i for i, g in enumerate(layout.groups) if g.kind is kind and not mask[i]]


# ---- zero_group / restore ----------------------------------------------------------------

@pytest.mark.parametrize("earlier", [(), EARLIER], ids=["fresh", "after-prunes"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_zero_then_restore_is_bitwise_identity(trained, kind, earlier):
    model = copy.deepcopy(trained)
    b = backend_of(model, earlier)
    before = snapshot(model)
    live = live_of_kind(b.layout, kind)
    assert live
    for i in live:
        saved = zero_group(b.layout, i)
        assert saved
        for p, dim, idx, values in saved:  # the group's entries are zero now, and were not all zero
            assert not p.index_select(dim, idx).any()
        assert any(values.any() for _, _, _, values in saved)
        changed = {n for n, p in model.named_parameters() if not bitwise_equal(p.detach(), before[n])}
        assert changed
        restore(saved)
        for n, p in model.named_parameters():
            assert bitwise_equal(p.detach(), before[n]), (b.layout.groups[i].name, n)


def test_a_pruned_group_cannot_be_zeroed(trained):
    cases = [(EARLIER, name) for name in EARLIER]  # pruned themselves
    cases += [(("blocks.1",), "blocks.1"), (("blocks.1",), "blocks.1.attn.head.0")]  # gone with their block
    for earlier, name in cases:
        b = backend_of(copy.deepcopy(trained), earlier)
        with pytest.raises(InvalidArgumentError, match=r"^group:"):
            zero_group(b.layout, b.layout.index[name])


# ---- zeroing = removing -------------------------------------------------------------------

@pytest.mark.parametrize("earlier", [(), EARLIER], ids=["fresh", "after-prunes"])
@pytest.mark.parametrize("kind", KINDS[:3], ids=lambda k: k.value)
def test_zeroing_a_head_mlp_block_or_layer_gives_the_logits_of_removing_it(trained, calib, kind, earlier):
    x = calib[0][:8]
    probe = backend_of(copy.deepcopy(trained), earlier)
    z_before = out(probe.model, x)
    for i in live_of_kind(probe.layout, kind):
        zeroed = copy.deepcopy(trained)
        bz = backend_of(zeroed, earlier)
        zero_group(bz.layout, i)
        removed = copy.deepcopy(trained)
        br = backend_of(removed, earlier)
        br.apply(prune_event(br, [i]))
        assert br.layout.is_pruned(i)
        z_zero, z_removed = out(zeroed, x), out(removed, x)
        torch.testing.assert_close(z_zero, z_removed, rtol=1e-5, atol=1e-5)
        assert (z_zero - z_before).abs().max() > 1e-3  # and the group mattered


@pytest.mark.parametrize("earlier", [(), EARLIER], ids=["fresh", "after-prunes"])
def test_zeroing_a_channel_block_changes_the_logits_and_restore_brings_them_back(trained, calib, earlier):
    x = calib[0][:8]
    model = copy.deepcopy(trained)
    b = backend_of(model, earlier)
    z0 = out(model, x)
    for i in live_of_kind(b.layout, GroupKind.CHANNEL_BLOCK):
        saved = zero_group(b.layout, i)
        assert (out(model, x) - z0).abs().max() > 1e-3
        restore(saved)
        assert torch.equal(out(model, x), z0)


# ---- batch_losses / ablation_losses ---------------------------------------------------------

def test_batch_losses_are_the_per_batch_mean_cross_entropy(trained, calib):
    X, Y = calib
    model = copy.deepcopy(trained).eval()
    got = batch_losses(model, X, Y, M, logits)
    assert got.shape == (M,)
    with torch.no_grad():
        want = torch.stack([model(X[j * ROWS:(j + 1) * ROWS], Y[j * ROWS:(j + 1) * ROWS])[1] for j in range(M)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match=r"^X/Y:"):
        batch_losses(model, X, Y[:, :-1], M, logits)
    with pytest.raises(ShapeError, match=r"^X/Y:"):
        batch_losses(model, X, Y, 3, logits)  # 16 rows are not 3 equal batches


def test_ablation_losses_equal_a_direct_recomputation(trained, calib):
    X, Y = calib
    model = copy.deepcopy(trained).train()
    b = backend_of(model)
    before = snapshot(model)
    dL, base = ablation_losses(b.layout, X, Y, M, logits)
    n = len(b.groups())
    assert dL.shape == (M, n) and base.shape == (M,) and dL.dtype == np.float64
    assert np.all(np.isfinite(dL)) and np.all(np.isfinite(base))
    assert model.training  # the mode comes back
    assert all(bitwise_equal(p.detach(), before[k]) for k, p in model.named_parameters())  # weights too
    ref_base = batch_losses(copy.deepcopy(trained).eval(), X, Y, M, logits).double().numpy()
    np.testing.assert_allclose(base, ref_base, rtol=1e-6, atol=1e-6)
    names = ("blocks.0.attn.head.2", "blocks.1.mlp.block.5", "blocks.0")
    for name in names:  # against the model with the group really removed
        i = b.layout.index[name]
        removed = copy.deepcopy(trained)
        br = backend_of(removed)
        br.apply(prune_event(br, [i]))
        direct = batch_losses(removed.eval(), X, Y, M, logits).double().numpy() - ref_base
        np.testing.assert_allclose(dL[:, i], direct, rtol=1e-4, atol=2e-5)
    i = b.layout.index["channels.2"]  # channels: against the zeroed model, by hand
    zeroed = copy.deepcopy(trained).eval()
    with torch.no_grad():
        for p in (zeroed.wte.weight, zeroed.wpe.weight):
            p[:, 32:48] = 0
        for blk in zeroed.blocks:
            blk.ln1.weight[32:48] = 0
            blk.ln2.weight[32:48] = 0
            for lin in (blk.attn.q, blk.attn.k, blk.attn.v, blk.mlp.fc):
                lin.weight[:, 32:48] = 0
            for lin in (blk.attn.o, blk.mlp.proj):
                lin.weight[32:48] = 0
        zeroed.ln_f.weight[32:48] = 0
    direct = batch_losses(zeroed, X, Y, M, logits).double().numpy() - ref_base
    np.testing.assert_allclose(dL[:, i], direct, rtol=1e-4, atol=2e-5)
    assert np.all(np.abs(dL).max(axis=0) > 0)  # every group's removal is felt


def test_ablation_losses_give_nan_columns_for_pruned_groups(trained, calib):
    X, Y = calib
    b = backend_of(copy.deepcopy(trained), EARLIER + ("blocks.1",))
    dL, base = ablation_losses(b.layout, X, Y, M, logits)
    pruned = np.array(b.layout.pruned_mask())
    assert pruned.sum() > len(EARLIER)  # the groups inside block 1 are gone with it
    assert np.all(np.isnan(dL[:, pruned])) and np.all(np.isfinite(dL[:, ~pruned]))
    assert np.all(np.isfinite(base))


# ---- measured_round / MeasuredRounds ---------------------------------------------------------

def check_certificates(event):
    for d in event.decisions:
        (cert,) = d.certificates
        problems = verify_certificate(cert.to_json())
        assert (problems == []) == (cert.verdict is Verdict.HOLDS), problems


def test_measured_round_reaches_the_target_and_measures_the_joint_cost(trained, calib):
    X, Y = calib
    model = copy.deepcopy(trained)
    b = backend_of(model)
    n = len(b.groups())
    size = lambda: b.flops_model(np.zeros(n, np.int8))  # noqa: E731
    size_before = size()
    base = batch_losses(model.eval(), X, Y, M, logits).double().numpy()
    model.train()
    event, rec = measured_round(b, b.constraints(), X, Y, M, 0.6, step=3, eps=1e-3, event_id=0, logits=logits)
    assert event.decisions and rec["taken"] == len(event.decisions)
    assert rec["flops_ratio"] <= 0.6 and event.flops_before == pytest.approx(size_before)
    assert size() / size_before <= 0.6 + 1e-12  # the model really is that small now
    assert size() / size_before == pytest.approx(rec["flops_ratio"])
    assert all(b.layout.is_pruned(d.index) for d in event.decisions)
    assert rec["forwards"] == n + 2  # every group live: one forward each, the base and the joint check
    after = batch_losses(model.eval(), X, Y, M, logits).double().numpy()
    assert rec["base_loss"] == pytest.approx(base.mean(), rel=1e-6)
    assert rec["joint"] == pytest.approx((after - base).mean(), rel=1e-5, abs=1e-6)
    assert rec["certified"] == sum(d.certificates[0].verdict is Verdict.HOLDS for d in event.decisions)
    check_certificates(event)
    # a second round on the smaller model: only the live groups are measured
    live = n - sum(b.layout.pruned_mask())
    size_mid = size()
    event2, rec2 = measured_round(b, b.constraints(), X, Y, M, 0.8, step=4, eps=1e-3, event_id=1, logits=logits)
    assert rec2["forwards"] == live + 2
    assert rec2["flops_ratio"] <= 0.8 and size() / size_mid <= 0.8 + 1e-12
    assert not {d.index for d in event2.decisions} & {d.index for d in event.decisions}


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_measured_round_rejects_a_bad_target(trained, calib, target):
    b = backend_of(copy.deepcopy(trained))
    with pytest.raises(InvalidArgumentError, match=r"^target:"):
        measured_round(b, b.constraints(), *calib, M, target, step=0, eps=1e-3, event_id=0, logits=logits)


def test_measured_rounds_act_at_their_steps_and_meet_each_rounds_target(trained, calib):
    X, Y = calib
    b = backend_of(copy.deepcopy(trained))
    n = len(b.groups())
    size = lambda: b.flops_model(np.zeros(n, np.int8))  # noqa: E731
    size0 = size()
    rounds = MeasuredRounds(b, b.constraints(), X, Y, M, [0, 3], 0.5, 1e-3, size, size0, logits)
    assert rounds(1) is False and not rounds.records  # not a round step: nothing happens
    for k, step in enumerate((0, 3)):
        fpt_before = size()
        rounds(step)
        assert size() / size0 <= 0.5 ** ((k + 1) / 2) + 1e-12
        rec = rounds.records[-1]
        assert rec["flops"] == pytest.approx(rec["forwards"] * X.numel() * fpt_before / 3.0)
    assert rounds(5) is False and len(rounds.records) == len(rounds.events) == 2
    for ev in rounds.events:
        check_certificates(ev)
    for steps in ([], [2, 2]):
        with pytest.raises(InvalidArgumentError, match=r"^steps:"):
            MeasuredRounds(b, b.constraints(), X, Y, M, steps, 0.5, 1e-3, size, size0, logits)


# ---- compress(method="measured") ------------------------------------------------------------

def measured_config(**kw):
    args = dict(method="measured", rounds=3, round_frac=0.2, batch_size=BATCH, seq_len=SEQ, block=16,
                calib_rows=4, distill=2.0)
    args.update(kw)
    return CompressConfig(0.5, 20 * SEQ * BATCH, **args)


def test_compress_measured_reaches_the_target_and_counts_the_measurement(trained):
    model = copy.deepcopy(trained)
    r = compress(model, Batches(stream(), SEQ, BATCH, 2), measured_config())
    rec = r.record
    assert rec["method"] == "measured" and rec["reached_target"] and rec["flops_per_token_ratio"] <= 0.5
    assert len(rec["rounds"]) == 3 and [x["step"] for x in rec["rounds"]] == [0, 4, 8]
    assert all(x["flops_ratio"] <= x["target"] for x in rec["rounds"])
    assert rec["measure_flops"] == pytest.approx(sum(x["flops"] for x in rec["rounds"])) and rec["measure_flops"] > 0
    assert rec["train_flops"] == pytest.approx(rec["student_flops"] + rec["teacher_flops"] + rec["measure_flops"])
    assert rec["train_flops"] > rec["student_flops"] + rec["teacher_flops"]
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in trained.parameters())
    assert r.events
    for ev in r.events:
        check_certificates(ev)


def test_compress_measured_needs_two_calibration_batches(trained):
    with pytest.raises(InvalidArgumentError, match=r"^calib_batches:"):
        compress(copy.deepcopy(trained), Batches(stream(), SEQ, BATCH, 2), measured_config(calib_batches=1))


@pytest.mark.parametrize("kw, field", [
    (dict(rounds=0), "rounds"),
    (dict(rounds=-1), "rounds"),
    (dict(rounds=3, round_frac=0.5), "round_frac"),  # (rounds - 1) * round_frac = 1
    (dict(rounds=2, round_frac=1.0), "round_frac"),
    (dict(round_frac=0.0), "round_frac"),
    (dict(remove_eps=0.0), "remove_eps"),
    (dict(remove_eps=-1e-3), "remove_eps"),
    (dict(calib_rows=BATCH + 1), "calib_rows"),
    (dict(calib_rows=0), "calib_rows"),
])
def test_compress_config_rejects_bad_round_settings_naming_the_field(kw, field):
    with pytest.raises(InvalidArgumentError, match=rf"^{field}:"):
        measured_config(**kw)


def test_compress_config_accepts_the_edges_of_the_round_settings():
    assert measured_config(rounds=1, round_frac=5.0).rounds == 1  # one round: no spacing needed
    cfg = measured_config(rounds=3, round_frac=0.45)
    assert cfg.round_steps[-1] < cfg.steps and len(set(cfg.round_steps)) == 3


@pytest.mark.parametrize("kw", [dict(rounds=3, round_frac=0.49), dict(rounds=3, round_frac=0.01)])
def test_rounds_that_collide_or_fall_after_the_last_step_are_refused(kw):
    """A round at ``steps`` would never run (the target missed); two on one step are one."""
    cfg = dict(method="measured", batch_size=BATCH, seq_len=SEQ, block=16)
    with pytest.raises(InvalidArgumentError, match=r"^round_frac:"):
        CompressConfig(0.5, 20 * SEQ * BATCH, **cfg, **kw)
    assert measured_config(calib_rows=BATCH).calib_rows == BATCH and measured_config(calib_rows=None)


def test_flops_saved_are_counted_from_the_model_as_it_is(trained):
    """After a block's heads and neurons are gone, removing the block saves only what is left
    of it (``Group.flops_remove``, fixed at discovery, would overstate it)."""
    from lyactl.control.groups import PRUNED
    from lyactl.control.removal_cost import flops_saved
    from lyactl_torch.flops import model_flops_per_token

    model = copy.deepcopy(trained)
    backend = TorchBackend(model, torch.optim.AdamW(model.parameters()), block=16)
    groups = backend.groups()
    inner = []
    for kind in (GroupKind.HEAD, GroupKind.MLP_BLOCK):  # all but one of each kind in block 1
        inner += [i for i, g in enumerate(groups) if g.layer == 1 and g.kind is kind][:-1]
    backend.apply(prune_event(backend, inner))
    layer = next(i for i, g in enumerate(groups) if g.kind is GroupKind.LAYER and g.layer == 1)
    status = np.where(backend.layout.pruned_mask(), PRUNED, 0).astype(np.int8)
    saves = flops_saved(len(groups), backend.flops_model, status, np.ones(len(groups), bool))
    before = model_flops_per_token(model)
    backend.apply(prune_event(backend, [layer], event_id=2))
    assert saves[layer] == pytest.approx(before - model_flops_per_token(model))
    assert saves[layer] < groups[layer].flops_remove
    assert np.all(saves[status == PRUNED] == 0)
