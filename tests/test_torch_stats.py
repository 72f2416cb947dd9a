"""Fused per-group statistics against a slow reference built from hand-written masks."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from test_torch_groups import reference_masks, tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402



def step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 97, (2, 32), generator=g)
    opt.zero_grad()
    loss = model(x, x)[1]
    loss.backward()
    opt.step()
    return loss


def slow_reference(model, opt, masks, prev):
    """Python loop over groups and parameters, float64."""
    named = dict(model.named_parameters())
    G = len(masks)
    ref = {k: np.zeros(G) for k in ("w_sq", "dw_sq", "g_sq", "gw", "m_sq")}
    for gi in range(G):
        for n, p in named.items():
            m = masks[gi][n]
            w = p.detach().double()[m]
            g = p.grad.double()[m]
            mom = opt.state[p]["exp_avg"].double()[m]
            ref["w_sq"][gi] += float((w * w).sum())
            ref["dw_sq"][gi] += float(((w - prev[n].double()[m]) ** 2).sum())
            ref["g_sq"][gi] += float((g * g).sum())
            ref["gw"][gi] += float((g * w).sum())
            ref["m_sq"][gi] += float((mom * mom).sum())
    return ref


@pytest.mark.parametrize("kw", [{"n_kv_head": 2, "bias": True}, {"tie": False, "mlp_hidden": 200}])
def test_stats_match_slow_reference(kw):
    model = tiny(**kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt, stats_dtype=torch.float64)
    masks = reference_masks(model, backend.layout)
    step(model, opt, 0)
    backend.observe_step(torch.tensor(2.5))
    backend.statistics()
    prev = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [step(model, opt, s) for s in (1, 2, 3)]
    for loss in losses:
        backend.observe_step(loss)
    stats = backend.statistics()
    ref = slow_reference(model, opt, masks, prev)
    for name, arr in ref.items():
        np.testing.assert_allclose(getattr(stats, name), arr, rtol=1e-6, atol=1e-12, err_msg=name)
    assert stats.interval == 3 and stats.step == 4
    assert stats.loss == pytest.approx(float(losses[-1].detach()))
    assert np.isfinite(stats.curv).all()  # AdamW's second moment: checked in tests/test_torch_curvature.py
    stats.validate(len(backend.groups()))


def test_exactly_one_host_sync(request):
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    calls = request.getfixturevalue("host_syncs")  # counting starts here
    backend.statistics()
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}


def test_pruned_frozen_and_no_momentum_give_nan():
    model = tiny(n_layer=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: no first moment
    backend = L.TorchBackend(model, opt)
    groups = backend.groups()
    head = next(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD and g.layer == 0)
    layer1 = backend.layout.index["blocks.1"]
    layer2 = backend.layout.index["blocks.2"]
    backend.apply(Event(0, 0, (Decision(0, groups[head].name, head, Action.PRUNE),
                               Decision(0, groups[layer2].name, layer2, Action.PRUNE))))
    backend.apply(Event(1, 0, (Decision(0, groups[layer1].name, layer1, Action.FREEZE),)))
    backend.observe_step(step(model, opt, 1))
    s = backend.statistics()
    assert np.isnan(s.w_sq[head]) and np.isnan(s.w_sq[layer2])
    in_layer2 = [i for i, g in enumerate(groups) if g.layer == 2]
    assert np.isnan(s.w_sq[in_layer2]).all()
    assert np.isnan(s.g_sq[layer1]) and np.isfinite(s.w_sq[layer1]) and s.dw_sq[layer1] == 0.0
    assert np.isnan(s.m_sq).all()
    live = [i for i, g in enumerate(groups) if g.layer in (0, -1) and i != head]
    assert np.isfinite(s.g_sq[live]).all() and (s.w_sq[live] > 0).all()


def test_dw_sq_is_zero_without_update_and_refs_previous_call():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    first = backend.statistics()
    assert (first.dw_sq > 0).all()
    backend.observe_step(math.nan)
    again = backend.statistics()
    assert (again.dw_sq == 0).all() and math.isnan(again.loss)
    np.testing.assert_allclose(again.w_sq, first.w_sq, rtol=1e-6)


def test_a_frozen_block_inside_a_class_of_same_shape_parameters():
    """Blocks of one shape are reduced as one stack; with the bottom block frozen, the stack's
    gradients exist for some members only: the others must still match the reference, and the
    frozen block's gradient statistics must be NaN (not zero, not another block's)."""
    model = tiny(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt, stats_dtype=torch.float64)
    masks = reference_masks(model, backend.layout)
    groups = backend.groups()
    step(model, opt, 0)  # every parameter gets its Adam moments
    layer0 = backend.layout.index["blocks.0"]
    backend.apply(Event(0, 1, (Decision(1, groups[layer0].name, layer0, Action.FREEZE),)))
    assert any(len(c.entries) == 3 for c in backend.plan.classes), "the blocks should share classes"
    backend.observe_step(step(model, opt, 1))
    backend.statistics()
    prev = {n: p.detach().clone() for n, p in model.named_parameters()}
    backend.observe_step(step(model, opt, 2))
    s = backend.statistics()
    named = dict(model.named_parameters())
    for gi, g in enumerate(groups):
        if g.layer not in (0, 1, 2) or g.kind is GroupKind.CHANNEL_BLOCK:
            continue
        ref = {"w_sq": 0.0, "dw_sq": 0.0, "g_sq": 0.0, "gw": 0.0, "m_sq": 0.0}
        for n, p in named.items():
            m = masks[gi][n]
            w = p.detach().double()[m]
            ref["w_sq"] += float((w * w).sum())
            ref["dw_sq"] += float(((w - prev[n].double()[m]) ** 2).sum())
            ref["m_sq"] += float((opt.state[p]["exp_avg"].double()[m] ** 2).sum())
            if p.grad is not None:
                gr = p.grad.double()[m]
                ref["g_sq"] += float((gr * gr).sum())
                ref["gw"] += float((gr * w).sum())
        for name in ("w_sq", "dw_sq", "m_sq"):
            assert getattr(s, name)[gi] == pytest.approx(ref[name], rel=1e-6, abs=1e-12), (g.name, name)
        if g.layer == 0:
            assert np.isnan(s.g_sq[gi]) and np.isnan(s.gw[gi]) and s.dw_sq[gi] == 0.0, g.name
        else:
            assert s.g_sq[gi] == pytest.approx(ref["g_sq"], rel=1e-6) and s.gw[gi] == pytest.approx(ref["gw"], rel=1e-6)


def test_classes_are_chunked_and_give_the_same_statistics(monkeypatch):
    """A tiny stack limit splits every class into one-parameter chunks: the statistics must
    not change (the chunking only bounds the temporary memory)."""
    import lyactl_torch.stats as S

    def run(limit):
        monkeypatch.setattr(S, "MAX_STACK", limit)
        model = tiny(n_layer=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        backend = L.TorchBackend(model, opt, stats_dtype=torch.float64)
        backend.observe_step(step(model, opt, 0))
        backend.statistics()
        backend.observe_step(step(model, opt, 1))
        return backend, backend.statistics()

    big_b, big = run(S.MAX_STACK)
    small_b, small = run(1)
    assert max(len(c.entries) for c in big_b.plan.classes) > 1
    assert max(len(c.entries) for c in small_b.plan.classes) == 1
    for name in ("w_sq", "dw_sq", "g_sq", "gw", "m_sq"):
        np.testing.assert_allclose(getattr(small, name), getattr(big, name), rtol=1e-12, err_msg=name)


def test_statistics_carry_the_models_flops_per_token():
    from lyactl_torch.flops import model_flops_per_token

    model = tiny(n_layer=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backend = L.TorchBackend(model, opt)
    backend.observe_step(step(model, opt, 0))
    before = backend.statistics().flops_per_token
    assert before == model_flops_per_token(model) > 0
    groups = backend.groups()
    head = next(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD)
    backend.apply(Event(0, 1, (Decision(1, groups[head].name, head, Action.PRUNE),)))
    backend.observe_step(step(model, opt, 1))
    after = backend.statistics().flops_per_token
    assert after == model_flops_per_token(model) and after < before
