"""Non-finite loss, gradients or statistics never prune or freeze; the guard rolls back.

Loop-level tests with torch and the real lyactl Controller on the tiny run of
benchmarks/studies/fault_injection.py (a dead MLP block and a dead head: the uninterrupted run
prunes both at step 8; build() makes the guard watch that event although its weights are
exactly zero, which the controller would otherwise release on apply). Each test first
checks that the clean run does decide on the group concerned, so it can fail.
"""

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.studies.fault_injection import build  # noqa: E402
from lyactl.control.controller import ACTIVE  # noqa: E402
from lyactl_torch.train import train  # noqa: E402

MLP, HEAD = "blocks.0.mlp.block.0", "blocks.1.attn.head.0"



def decided(loop):
    return {d.group for e in loop.events for d in e.decisions}


def go(hook=None, wrap_stats=None, steps=24):
    model, opt, loop, batches, cfg = build(steps)
    if wrap_stats is not None:
        real = loop.backend.statistics
        loop.backend.statistics = lambda: wrap_stats(loop, real())
    hooks = [lambda s, loss: hook(s, loss, loop, model)] if hook else [lambda s, loss: loop.step(loss)]
    train(model, opt, batches, cfg, hooks=hooks)
    return loop, model, opt


@pytest.fixture(scope="module")
def clean():
    loop, _, _ = go()
    assert {MLP, HEAD} <= decided(loop)
    return loop


def test_nan_loss_holds_the_controller(clean):
    loop, _, _ = go(lambda s, loss, lp, m: lp.step(loss * math.nan))
    assert loop.outputs and all(o.held and not o.events for o in loop.outputs)
    assert not loop.events and all("non-finite" in o.reason for o in loop.outputs)
    assert all(not o.penalty.any() for o in loop.outputs)


def test_nan_loss_on_some_steps_blocks_decisions_there(clean):
    bad = set(range(6, 12))
    loop, _, _ = go(lambda s, loss, lp, m: lp.step(loss * math.nan if s in bad else loss))
    assert all(e.step - 1 not in bad for e in loop.events)
    assert any(o.held for o in loop.outputs)


def test_nan_gradients_in_one_group_never_decide_it(clean):
    def hook(step, loss, lp, model):
        model.blocks[0].mlp.fc.weight.grad[:64] = math.nan  # after optimizer.step: weights stay finite
        return lp.step(loss)

    loop, model, _ = go(hook)
    i = loop.backend.layout.index[MLP]
    assert all(math.isnan(s.g_sq[i]) for s in loop.stats)
    assert MLP not in decided(loop) and "blocks.0" not in decided(loop)
    assert HEAD in decided(loop)  # other groups still decided normally
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("field,value", [("w_sq", math.inf), ("dw_sq", math.inf), ("gw", -math.inf),
                                         ("w_sq", math.nan)])
def test_nonfinite_statistics_never_decide(clean, field, value):
    def corrupt(loop, stats):
        x = getattr(stats, field).copy()
        x[loop.backend.layout.index[MLP]] = value
        return dataclasses.replace(stats, **{field: x})

    loop, _, _ = go(wrap_stats=corrupt)
    assert MLP not in decided(loop)


def test_guard_rolls_back_the_event_exactly(clean):
    """A loss spike after the event: the guard restores it; the removed weights and
    optimizer state come back bit for bit (made non-zero just before the apply). The state is
    read right after the restore: later reports may certify the groups again (with the
    curvature statistic the contribution certificate can re-prune the dead block)."""
    saved, after, at_restore = [], [], []

    def restored(b, ev, model):
        b._real_restore(ev)
        after.append(_copy(model, b.optimizer))
        at_restore.append((dict(b.held), model.shapes()))

    def hook(step, loss, lp, model):
        b = lp.backend
        if not hasattr(b, "_real_apply"):
            b._real_apply, b._real_restore = b.apply, b.restore
            b.apply = lambda ev: (_fill_dead_units(model, b.optimizer, saved), b._real_apply(ev))[1]
            b.restore = lambda ev: restored(b, ev, model)
        return lp.step(loss + (10.0 if lp.events else 0.0))

    loop, model, opt = go(hook)
    assert [e.event_id for e in loop.restored] == [loop.events[0].event_id] and saved and len(after) == 1
    held, shapes = at_restore[0]
    assert not held and shapes == build()[0].shapes()
    params, state = after[0]
    for name, sl, value, moments in saved:
        assert torch.equal(params[name][sl], value), name
        for k, v in moments.items():
            assert torch.equal(state[name][k][sl], v), (name, k)
    idx = [d.index for d in loop.events[0].decisions]
    later = {d.index for e in loop.events[1:] for d in e.decisions}  # re-decided after the restore
    assert all(loop.controller.status[i] == ACTIVE for i in idx if i not in later)


def _copy(model, opt):
    """Parameters and optimizer state by name, right after the restore."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in model.named_parameters() if p in opt.state}
    return params, state


def _fill_dead_units(model, opt, saved):
    """Random values in the dead head / MLP block and in their Adam moments."""
    where = [("blocks.1.attn.q.weight", np.s_[:16]), ("blocks.1.attn.v.weight", np.s_[:16]),
             ("blocks.1.attn.o.weight", np.s_[:, :16]), ("blocks.0.mlp.fc.weight", np.s_[:64]),
             ("blocks.0.mlp.proj.weight", np.s_[:, :64])]
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, sl in where:
            p = params[name]
            p[sl] = 1e-3 * torch.randn(p[sl].shape, generator=g)
            st = opt.state[p]
            for k in ("exp_avg", "exp_avg_sq"):
                st[k][sl] = 1e-6 * torch.rand(st[k][sl].shape, generator=g)
            saved.append((name, sl, p[sl].clone(), {k: st[k][sl].clone() for k in ("exp_avg", "exp_avg_sq")}))
