"""Checkpoints of pruned models: shapes, live ids, frozen flags, optimizer state."""

import pytest

torch = pytest.importorskip("torch")

from lyactl.errors import CheckpointError  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402
from test_torch_groups import tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402



def train(model, opt, n, seed=0):
    for i in range(n):
        x = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(seed + i))
        opt.zero_grad()
        model(x, x)[1].backward()
        opt.step()


def pruned_run(tie=True):
    model = tiny(n_layer=3, n_kv_head=2, tie=tie, bias=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    b = L.TorchBackend(model, opt)
    train(model, opt, 2)
    names = ["blocks.1.attn.head.0", "blocks.0.mlp.block.1", "blocks.2.mlp.block.0", "channels.0", "blocks.1"]
    idx = b.layout.index
    b.apply(Event(0, 2, tuple(Decision(2, n, idx[n], Action.PRUNE) for n in names)))
    b.apply(Event(1, 2, (Decision(2, "blocks.0", idx["blocks.0"], Action.FREEZE),)))
    train(model, opt, 2, seed=10)
    return model, opt, b


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_outputs_state_and_groups(tmp_path, tie):
    model, opt, b = pruned_run(tie)
    path = tmp_path / "ck.pt"
    L.save(path, model, live=b.layout.live, block_ids=b.layout.block_ids, optimizer=opt, extra={"step": 4})
    ck = L.load(path)
    m2 = ck.model
    assert m2.shapes() == model.shapes() and m2.d_live == model.d_live == 64
    assert m2.frozen_prefix == model.frozen_prefix == 1 and ck.extra == {"step": 4}
    assert (m2.lm_head.weight is m2.wte.weight) == tie
    x = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        assert torch.equal(m2(x), model(x))
    opt2 = torch.optim.AdamW([p for p in m2.parameters()], lr=123.0)
    L.load_optimizer_state(opt2, m2, ck.optimizer)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    p1, p2 = dict(model.named_parameters()), dict(m2.named_parameters())
    for n in p1:
        s1, s2 = opt.state.get(p1[n], {}), opt2.state.get(p2[n], {})
        assert s1.keys() == s2.keys(), n
        for k in s1:
            assert torch.equal(s1[k], s2[k]), (n, k)
    b2 = L.TorchBackend(m2, opt2, live=ck.live, block_ids=ck.block_ids, block=ck.block)
    live_names = {g.name for i, g in enumerate(b.groups()) if not b.layout.is_pruned(i)}
    assert {g.name for g in b2.groups()} == live_names
    train(model, opt, 2, seed=20)  # both continue identically
    train(m2, opt2, 2, seed=20)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), model(x), rtol=1e-5, atol=1e-6)


def test_bad_files_raise_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        L.load(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format"):
        L.load(tmp_path / "other.pt")
    with pytest.raises(CheckpointError):
        L.load(tmp_path / "missing.pt")
