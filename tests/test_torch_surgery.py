"""Surgery: pruned == zeroed original, optimizer state sliced exactly, restore bitwise."""

import copy

import pytest

torch = pytest.importorskip("torch")

from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl.control.groups import GroupKind  # noqa: E402
from test_torch_groups import reference_masks, tiny, zero_groups  # noqa: E402

from lyactl_torch.gpt_adapter import GPTAdapter  # noqa: E402
from lyactl_torch.groups import Layout  # noqa: E402
from lyactl_torch.surgery import prune_units, remove_layer, restore_layer, restore_units  # noqa: E402


OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam_foreach": lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=True, amsgrad=True),
    "adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=1e-2, fused=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
}


def batch(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 97, (B, 32), generator=g)


def train_steps(model, opt, n=2):
    for i in range(n):
        opt.zero_grad()
        x = batch(i)
        model(x, x)[1].backward()
        opt.step()


def pick(layout, kind, k=1, layer=0):
    idx = [i for i, g in enumerate(layout.groups) if g.kind is kind and (kind is GroupKind.CHANNEL_BLOCK or g.layer == layer)]
    return idx[:k]


def cut(layout, opt, gis):
    """Apply prunes for group indices (one axis per call) and return the records."""
    refs = [layout.refs[i] for i in gis]
    if refs[0].axis is None:
        return [remove_layer(layout, opt, r.layer) for r in refs]
    units = tuple(u for r in refs for u in r.units)
    return [prune_units(layout, opt, refs[0].axis, units)]


def snapshot(model, opt):
    params = dict(model.named_parameters())
    state = {n: {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)} for n, p in params.items()}
    return {n: p.detach().clone() for n, p in params.items()}, state


CASES = [
    (GroupKind.HEAD, 1, {"n_kv_head": 2, "bias": True}),
    (GroupKind.HEAD, 3, {}),
    (GroupKind.MLP_BLOCK, 2, {"bias": True}),
    (GroupKind.CHANNEL_BLOCK, 1, {"tie": False, "bias": True}),
    (GroupKind.CHANNEL_BLOCK, 1, {}),
    (GroupKind.LAYER, 1, {"n_layer": 3}),
]


@pytest.mark.parametrize("kind,k,kw", CASES)
def test_pruned_equals_zeroed_original(kind, k, kw):
    model = tiny(**kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_steps(model, opt)
    layout = Layout(model, GPTAdapter(), 64)
    gis = pick(layout, kind, k, layer=1 if kind is GroupKind.LAYER else 0)
    masks = reference_masks(model, layout)
    zeroed = copy.deepcopy(model)
    for gi in gis:
        zero_groups(zeroed, masks[gi])
    if kind is GroupKind.LAYER:  # a removed block is the identity: zero its residual writers
        blk = zeroed.blocks[1]
        with torch.no_grad():
            for lin in (blk.attn.o, blk.mlp.proj):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()
    n_before = sum(p.numel() for p in model.parameters())
    cut(layout, opt, gis)
    assert sum(p.numel() for p in model.parameters()) < n_before
    x = batch(7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed(x), rtol=1e-5, atol=1e-5)
    train_steps(model, opt, 1)  # the same optimizer keeps working


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_sliced_exactly_and_restored_bitwise(name):
    model = tiny(n_kv_head=2, bias=True)
    opt = OPTIMIZERS[name](model.parameters())
    train_steps(model, opt)
    layout = Layout(model, GPTAdapter(), 64)
    masks = reference_masks(model, layout)
    w0, s0 = snapshot(model, opt)
    gi = pick(layout, GroupKind.HEAD)[0]
    (rec,) = cut(layout, opt, [gi])
    named = dict(model.named_parameters())
    for n, p in named.items():
        keep = ~masks[gi][n]
        if keep.all():
            assert torch.equal(p, w0[n])
            continue
        expect = w0[n][keep].reshape(p.shape)
        assert torch.equal(p.detach(), expect), n
        for key, v in s0[n].items():
            if v.shape == w0[n].shape:
                assert torch.equal(opt.state[p][key], v[keep].reshape(p.shape)), (n, key)
            else:
                assert torch.equal(opt.state[p][key], v), (n, key)  # 'step' kept
    restore_units(layout, opt, rec)
    w1, s1 = snapshot(model, opt)
    for n in w0:
        assert torch.equal(w0[n], w1[n]), n
        for key in s0[n]:
            assert torch.equal(s0[n][key], s1[n][key]), (n, key)


def test_layer_removal_and_restore_round_trip():
    model = tiny(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_steps(model, opt)
    layout = Layout(model, GPTAdapter(), 64)
    w0, s0 = snapshot(model, opt)
    n_opt = sum(len(pg["params"]) for pg in opt.param_groups)
    rec = remove_layer(layout, opt, 1)
    assert len(model.blocks) == 2 and layout.block_ids == [0, 2]
    assert sum(len(pg["params"]) for pg in opt.param_groups) == n_opt - len(list(rec.module.parameters()))
    assert all(p.device.type == "cpu" for p in rec.module.parameters())
    train_steps(model, opt, 1)  # the other blocks train on; block 1 must come back untouched
    restore_layer(layout, opt, rec)
    assert layout.block_ids == [0, 1, 2] and model.blocks[1] is rec.module
    for n, p in model.blocks[1].named_parameters():
        assert torch.equal(p, w0[f"blocks.1.{n}"])
        for key, v in s0[f"blocks.1.{n}"].items():
            assert torch.equal(opt.state[p][key], v)
    assert sum(len(pg["params"]) for pg in opt.param_groups) == n_opt
    train_steps(model, opt, 1)


def test_out_of_order_restore_within_axis_and_cross_axis_guard():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_steps(model, opt)
    layout = Layout(model, GPTAdapter(), 64)
    w0, s0 = snapshot(model, opt)
    a, b = pick(layout, GroupKind.MLP_BLOCK, 2)
    ra = cut(layout, opt, [a])[0]
    rb = cut(layout, opt, [b])[0]
    restore_units(layout, opt, ra)  # not LIFO: b still removed
    restore_units(layout, opt, rb)
    w1, s1 = snapshot(model, opt)
    assert all(torch.equal(w0[n], w1[n]) for n in w0)
    assert all(torch.equal(s0[n][k], s1[n][k]) for n in s0 for k in s0[n])
    h = cut(layout, opt, pick(layout, GroupKind.HEAD))[0]
    cut(layout, opt, pick(layout, GroupKind.CHANNEL_BLOCK))
    with pytest.raises(InvalidArgumentError, match="restore"):
        restore_units(layout, opt, h)


def test_cannot_remove_every_unit():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    layout = Layout(model, GPTAdapter(), 64)
    heads = pick(layout, GroupKind.HEAD, 99)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        cut(layout, opt, heads)


def test_training_continues_and_loss_falls_after_surgery():
    model = tiny(n_layer=3, n_kv_head=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    layout = Layout(model, GPTAdapter(), 64)
    seq = torch.arange(33) % 11
    x, y = seq[:-1].repeat(4, 1), seq[1:].repeat(4, 1)

    def run(n):
        losses = []
        for _ in range(n):
            opt.zero_grad()
            loss = model(x, y)[1]
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    run(15)
    for kind in (GroupKind.HEAD, GroupKind.MLP_BLOCK, GroupKind.CHANNEL_BLOCK):
        cut(layout, opt, pick(layout, kind, 1 if kind is not GroupKind.MLP_BLOCK else 4))
    remove_layer(layout, opt, 2)
    after = run(30)
    assert after[-1] < 0.5 * after[0]


def test_surgery_while_previous_graph_is_alive():
    """A training loop still holds the last loss (and its graph) when an event lands."""
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    layout = Layout(model, GPTAdapter(), 64)
    x = batch(0)
    loss = model(x, x)[1]
    loss.backward()
    opt.step()
    cut(layout, opt, pick(layout, GroupKind.CHANNEL_BLOCK))
    cut(layout, opt, pick(layout, GroupKind.MLP_BLOCK))
    opt.zero_grad()
    loss2 = model(x, x)[1]  # `loss` is still alive here
    loss2.backward()
    opt.step()
    assert model.wte.weight.grad.shape == model.wte.weight.shape == (97, 64)
    del loss


def test_channel_cut_while_a_layer_is_removed():
    model = tiny(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    layout = Layout(model, GPTAdapter(), 64)
    train_steps(model, opt, 1)
    held = remove_layer(layout, opt, 1)
    shapes = [p.shape for p in held.module.parameters()]
    chan = cut(layout, opt, pick(layout, GroupKind.CHANNEL_BLOCK))[0]
    assert [p.shape for p in held.module.parameters()] == shapes  # the held block is left alone
    train_steps(model, opt, 1)
    with pytest.raises(InvalidArgumentError, match="block 1"):
        restore_layer(layout, opt, held)
    restore_units(layout, opt, chan)
    restore_layer(layout, opt, held)
    train_steps(model, opt, 1)
    assert model.d_live == 128 and len(model.blocks) == 3
