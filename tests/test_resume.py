"""Crash and exact resume of train(): run checkpoints (lyactl_torch.run_state) in process.

A scripted controller with a state_dict prunes a layer, a residual-channel group and an MLP
block, freezes a block, restores the first event and releases the second, so every kind
of held record (cut, layer, freeze) is in some checkpoint; the real-controller runs with
kills in subprocesses are in test_faults.py. A "kill" here is an exception raised from a
hook at a chosen step (the checkpoints on disk are then what a SIGKILL would leave).
"""

import json
import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.decision_log import event_to_json  # noqa: E402
from lyactl.errors import CheckpointError, InvalidArgumentError  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch import run_state  # noqa: E402
from lyactl_torch.corpus import Batches  # noqa: E402
from lyactl_torch.train import TrainConfig, build_optimizer, train  # noqa: E402
from scripted import Out  # noqa: E402

STEPS = 16





class Scripted:
    """Report 2: prune blocks.1 + channels.1 + blocks.0.mlp.block.1; report 3: freeze
    blocks.0; report 5: restore the first event; report 6: release the second. A
    penalty on channels.0 from report 4 on (so the penalty strength is state too)."""

    def __init__(self, groups):
        idx = {g.name: i for i, g in enumerate(groups)}
        prune = ("blocks.1", "channels.1", "blocks.0.mlp.block.1")
        self.e0 = Event(0, 4, tuple(Decision(4, n, idx[n], Action.PRUNE) for n in prune))
        self.e1 = Event(1, 6, (Decision(6, "blocks.0", idx["blocks.0"], Action.FREEZE),))
        self.lam = np.zeros(len(groups))
        self.lam[idx["channels.0"]] = 0.05
        self.n = 0

    def observe(self, stats):
        self.n += 1
        out = {2: Out(events=(self.e0,)), 3: Out(events=(self.e1,)), 5: Out(restores=(self.e0,)),
               6: Out(releases=(self.e1,))}.get(self.n, Out())
        out.penalty = self.lam if self.n >= 4 else None
        return out

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


class Boom(Exception):
    pass


def build(controller=Scripted):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    cfg = L.GPTConfig(vocab_size=61, seq_len=16, d_model=128, n_layer=3, n_head=2, head_dim=16, mlp_hidden=128)
    model = L.GPT(cfg)
    tcfg = TrainConfig(steps=STEPS, lr=3e-3, warmup=3, log_every=3)
    opt = build_optimizer(model, tcfg)
    loop = L.Lyactl(model, opt, None, interval=2, block=64)
    loop.controller = controller(loop.backend.groups()) if controller else None
    batches = Batches(np.random.default_rng(1).integers(0, 61, 3000), 16, 4, 0)
    return model, opt, loop, batches, tcfg


def run(folder, kill=None, resume=False, every=2, draw_rng=False):
    model, opt, loop, batches, tcfg = build()

    def hook(step, loss):
        if draw_rng:  # the run consumes every generator: resume must restore them all
            loss = loss + 0 * (torch.rand(()) + np.random.rand() + random.random())
        if step == kill:
            raise Boom
        return False

    res = train(model, opt, batches, tcfg, loop=loop, hooks=[hook], checkpoint_dir=folder,
                checkpoint_every=every, resume=resume)
    return res, loop, model, opt, (torch.rand(()).item(), np.random.rand(), random.random())


def same(a, b):
    (ra, la, ma, oa, ga), (rb, lb, mb, ob, gb) = a, b
    assert ra.losses == rb.losses and ra.tokens == rb.tokens and ra.fpt == rb.fpt
    assert [event_to_json(e) for e in la.events] == [event_to_json(e) for e in lb.events]
    assert [e.event_id for e in la.restored] == [e.event_id for e in lb.restored]
    strip = lambda rec: [{k: v for k, v in r.items() if k != "seconds"} for r in rec]  # noqa: E731
    assert strip(la.backend.record) == strip(lb.backend.record)
    assert ma.shapes() == mb.shapes() and ma.frozen_prefix == mb.frozen_prefix
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pa, pb = dict(ma.named_parameters()), dict(mb.named_parameters())
    for n in pa:
        assert pa[n].requires_grad == pb[n].requires_grad, n
        st_a, st_b = oa.state.get(pa[n], {}), ob.state.get(pb[n], {})
        assert st_a.keys() == st_b.keys() and all(torch.equal(st_a[k], st_b[k]) for k in st_a), n
    assert ga == gb  # generators continue identically


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref"), draw_rng=True)


def test_reference_exercises_every_held_kind(reference):
    res, loop, model, _, _ = reference
    kinds = [r["kind"] for r in loop.backend.record]
    assert kinds == ["apply", "apply", "restore"]
    assert model.frozen_prefix == 1 and len(model.blocks) == 3 and not loop.backend.held


@pytest.mark.parametrize("kill", [3, 4, 5, 6, 9, 13])
def test_kill_and_resume_is_bitwise_identical(tmp_path, reference, kill):
    with pytest.raises(Boom):
        run(tmp_path, kill=kill, draw_rng=True)
    assert len(run_state.list_checkpoints(tmp_path)) <= 2  # the newest 2 kept
    same(run(tmp_path, resume=True, draw_rng=True), reference)


def test_checkpoint_holds_held_slices_and_loads_weights_only(tmp_path, reference):
    with pytest.raises(Boom):
        run(tmp_path, kill=7, draw_rng=True)  # after event 0 (cut + layer) and event 1 (freeze)
    st = run_state.load_run(tmp_path)
    assert st.step == 6 and not st.skipped
    held = st.payload["loop"]["held"]
    assert sorted(held) == [0, 1]
    assert [p["kind"] for p in held[0]] == ["cut", "cut", "layer"] and held[1][0]["kind"] == "freeze"
    manifest = json.loads(st.path.read_text())
    torch.load(tmp_path / manifest["payload"], weights_only=True)  # no pickle of objects needed


def test_resume_of_a_finished_run_returns_its_result(tmp_path, reference):
    first = run(tmp_path, draw_rng=True)
    again = run(tmp_path, resume=True, draw_rng=True)
    assert again[0].losses == first[0].losses == reference[0].losses
    assert math.isclose(again[0].wall_s, first[0].wall_s, rel_tol=0.5)


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference):
    same(run(tmp_path / "empty", resume=True, draw_rng=True), reference)


def test_saved_dw_snapshot_matters(tmp_path):
    """Re-basing the dw_sq snapshot on resume would change the first report: the
    checkpoint must carry it (this is what makes the resumed decisions identical)."""
    model, opt, loop, batches, tcfg = build(controller=None)
    tcfg3 = TrainConfig(steps=3, lr=3e-3, warmup=3, log_every=3)
    train(model, opt, batches, tcfg3, loop=loop, checkpoint_dir=tmp_path, checkpoint_every=3)
    st = run_state.load_run(tmp_path)
    prev = st.payload["loop"]["prev"]
    moved = [n for n, p in model.named_parameters() if n in prev and not torch.equal(prev[n], p.detach())]
    assert moved  # the snapshot is older than the weights: re-basing would zero dw_sq
    m2, o2, l2, _, _ = build(controller=None)
    run_state.restore_run(st, m2, o2, l2)
    got = {id(p): n for n, p in m2.named_parameters()}
    assert all(torch.equal(t, prev[got[k]]) for k, t in l2.backend.plan.prev.items())


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path, reference):
    with pytest.raises(Boom):
        run(tmp_path, kill=5)
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        run(tmp_path)


def test_resume_into_another_model_is_a_checkpoint_error(tmp_path):
    with pytest.raises(Boom):
        run(tmp_path, kill=7)
    st = run_state.load_run(tmp_path)
    torch.manual_seed(0)
    other = L.GPT(L.GPTConfig(vocab_size=61, seq_len=16, d_model=128, n_layer=2, n_head=2, head_dim=16,
                              mlp_hidden=128))
    opt = torch.optim.AdamW(other.parameters())
    loop = L.Lyactl(other, opt, Scripted(L.TorchBackend(other, opt).groups()), interval=2)
    with pytest.raises(CheckpointError, match="loop"):
        run_state.restore_run(st, other, opt, loop)
    with pytest.raises(CheckpointError, match="loop"):
        run_state.restore_run(st, other, opt, None)


def test_bad_checkpoint_options(tmp_path):
    model, opt, loop, batches, tcfg = build()
    for kw, name in [({"checkpoint_every": -1, "checkpoint_dir": tmp_path}, "checkpoint_every"),
                     ({"checkpoint_every": 2}, "checkpoint_dir"), ({"resume": True}, "checkpoint_dir"),
                     ({"checkpoint_every": 2, "checkpoint_dir": tmp_path, "keep_checkpoints": 0}, "keep")]:
        with pytest.raises(InvalidArgumentError, match=name):
            train(model, opt, batches, tcfg, loop=loop, **kw)
    loop.controller = object()  # no state_dict: cannot be checkpointed
    with pytest.raises(InvalidArgumentError, match="loop.controller"):
        train(model, opt, batches, tcfg, loop=loop, checkpoint_dir=tmp_path, checkpoint_every=2)


def test_rng_round_trip():
    state = run_state.capture_rng()
    a = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    run_state.restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
