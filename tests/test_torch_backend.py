"""TorchBackend and the plain-loop driver with a scripted fake controller."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.errors import InvalidArgumentError, ShapeError  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402
from lyactl.control.protocol import Backend  # noqa: E402
from test_torch_groups import tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402
from scripted import Out  # noqa: E402



def event(backend, eid, names, action=Action.PRUNE):
    idx = backend.layout.index
    return Event(eid, backend.step, tuple(Decision(backend.step, n, idx[n], action) for n in names))


def data():
    seq = torch.arange(33) % 13
    return seq[:-1].repeat(4, 1), seq[1:].repeat(4, 1)




class ScriptedController:
    """Answers report number i with script[i] (a function of the stats) or an empty Out."""

    def __init__(self, script):
        self.script, self.seen = script, []

    def observe(self, stats):
        self.seen.append(stats)
        f = self.script.get(len(self.seen))
        return f(stats) if f else Out()


def test_is_a_backend_and_records_events():
    model = tiny(n_layer=3, n_kv_head=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    b = L.TorchBackend(model, opt)
    assert isinstance(b, Backend)
    ev = event(b, 0, ["blocks.0.attn.head.1", "blocks.0.mlp.block.3", "blocks.1.mlp.block.0", "blocks.2", "channels.1"])
    b.apply(ev)
    rec = b.record[-1]
    assert rec["flops_per_token_after"] < rec["flops_per_token_before"] and rec["seconds"] >= 0
    assert rec["cuda_allocated_before"] is None
    assert model.blocks[0].attn.n_kv_head == 1 and model.d_live == 64 and len(model.blocks) == 2
    b.apply(event(b, 1, ["blocks.1"], Action.FREEZE))
    assert b.layout.pruned_mask().count(True) == sum(
        1 for g in b.groups() if g.layer == 2 or g.name in {"blocks.0.attn.head.1", "blocks.0.mlp.block.3",
                                                           "blocks.1.mlp.block.0", "channels.1"})
    b.restore(Event(9, 0, (Decision(0, "blocks.2", b.layout.index["blocks.2"], Action.RESTORE),)))
    assert len(model.blocks) == 3 and model.d_live == 128 and b.layout.pruned_mask().count(True) == 0
    assert b.record[-1]["kind"] == "restore"
    b.release(ev)  # already restored: nothing held, no error
    b.release(event(b, 1, []))
    with pytest.raises(InvalidArgumentError):
        b.restore(event(b, 1, ["blocks.1"], Action.RESTORE))


def test_failed_event_is_rolled_back():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    b = L.TorchBackend(model, opt)
    w0 = [p.detach().clone() for p in model.parameters()]
    bad = event(b, 0, ["blocks.0.mlp.block.0", "blocks.1.attn.head.0", "blocks.1.attn.head.1",
                       "blocks.1.attn.head.2", "blocks.1.attn.head.3"])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        b.apply(bad)
    assert all(torch.equal(a, p) for a, p in zip(w0, model.parameters()))
    with pytest.raises(InvalidArgumentError, match="LAYER"):
        b.apply(event(b, 1, ["channels.0"], Action.FREEZE))
    wrong = Event(2, 0, (Decision(0, "channels.0", 0, Action.PRUNE),))
    with pytest.raises(InvalidArgumentError, match="index"):
        b.apply(wrong)


def test_proximal_penalty_formula_and_validation():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    b = L.TorchBackend(model, opt)
    G = len(b.groups())
    with pytest.raises(ShapeError):
        b.set_penalty(np.zeros(G + 1))
    with pytest.raises(InvalidArgumentError):
        b.set_penalty(-np.ones(G))
    gi = b.layout.index["blocks.0.mlp.block.2"]
    fc = model.blocks[0].mlp.fc.weight
    rows = slice(128, 192)
    w0 = fc.detach().clone()
    with torch.no_grad():
        norm = math.sqrt(float((fc[rows] ** 2).sum() + (model.blocks[0].mlp.proj.weight[:, rows] ** 2).sum()))
    lam = np.zeros(G)
    lam[gi] = 0.5 * norm / 0.1  # halves the group: 1 - lr * lam / norm = 0.5
    b.set_penalty(lam)
    b.apply_penalty()
    torch.testing.assert_close(fc[rows], 0.5 * w0[rows])
    assert torch.equal(fc[:128], w0[:128]) and torch.equal(fc[192:], w0[192:])
    lam[gi] = 1e6
    b.set_penalty(lam)
    b.apply_penalty()
    assert float(fc[rows].detach().abs().max()) == 0.0
    b.set_penalty(np.full(G, np.nan))  # NaN: no action
    assert not b.prox.active


def test_loop_applies_scripted_events_and_training_continues():
    model = tiny(n_layer=3, n_kv_head=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    names = ["blocks.0.attn.head.1", "blocks.1.mlp.block.0", "blocks.1.mlp.block.1", "channels.1"]

    def prune(stats):
        idx = ctl.backend.layout.index
        return Out(events=(Event(0, stats.step, tuple(Decision(stats.step, n, idx[n], Action.PRUNE) for n in names)),),
                   penalty=np.zeros(stats.n_groups))

    def freeze(stats):
        i = ctl.backend.layout.index["blocks.0"]
        return Out(events=(Event(1, stats.step, (Decision(stats.step, "blocks.0", i, Action.FREEZE),)),))

    controller = ScriptedController({2: prune, 3: freeze})
    hooks = []
    ctl = L.Lyactl(model, opt, controller, interval=5, on_event=lambda c, evs: hooks.append([e.event_id for e in evs]))
    x, y = data()
    losses, changed = [], []
    for _ in range(40):
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)[1]
        loss.backward()
        opt.step()
        changed.append(ctl.step(loss))
        losses.append(float(loss.detach()))
    assert [s.step for s in controller.seen] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert hooks == [[0], [1]] and [e.event_id for e in ctl.events] == [0, 1]
    assert [i for i, c in enumerate(changed) if c] == [9, 14]
    assert model.frozen_prefix == 1 and model.d_live == 64
    assert losses[-1] < 0.5 * losses[15]  # still learning after both events
    assert all(s.interval == 5 for s in controller.seen)
    later = controller.seen[-1]
    pruned = [ctl.backend.layout.index[n] for n in names]
    assert np.isnan(later.w_sq[pruned]).all()


def test_loop_does_not_sync_loss_between_reports(monkeypatch):
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl = L.Lyactl(model, opt, ScriptedController({}), interval=3)
    calls = []
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or 0.0)
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: calls.append(1) or 0.0)
    for _ in range(2):
        assert ctl.step(torch.tensor(1.0)) is False
    assert calls == []
    assert ctl.controller.seen == []
    with pytest.raises(InvalidArgumentError):
        L.Lyactl(model, opt, None, interval=0)
