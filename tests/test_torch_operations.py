"""Reparametrise: a change of basis (and truncation) of parameters with an explicit
optimizer-state policy, exactly undone; plan() says what each action means."""

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lyactl.control.groups import Action, Decision, Event  # noqa: E402
from lyactl.errors import InvalidArgumentError, ShapeError  # noqa: E402
from lyactl_torch.operations import CutUnits, NewValue, RemoveLayer, Reparametrise, StatePolicy, plan  # noqa: E402


def _net(seed: int, n_in: int = 4, hidden: int = 8, n_out: int = 3) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, hidden, bias=False), torch.nn.Linear(hidden, n_out, bias=False))


def _rotate(Q: torch.Tensor, policy: StatePolicy):
    """``W1' = Q W1``, ``W2' = W2 Q^T``: the same function; for orthogonal ``Q`` the
    gradients map the same way, so momentum maps exactly (``m1' = Q m1``, ``m2' = m2 Q^T``)."""
    def fn(w):
        return {"w1": NewValue(Q @ w["w1"], {"momentum_buffer": (policy, lambda m: Q @ m)}),
                "w2": NewValue(w["w2"] @ Q.T, {"momentum_buffer": (policy, lambda m: m @ Q.T)})}
    return fn


def _train(net, opt, xs, ys):
    for x, y in zip(xs, ys):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_orthogonal_change_of_basis_with_transformed_momentum_follows_the_same_trajectory(seed):
    """SGD with momentum is equivariant under an orthogonal change of basis: the
    reparametrised network, its momentum TRANSFORMed, computes what the original computes
    after the same steps; with the momentum RESET it does not."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.randn(6, 5, 4, generator=g), torch.randn(6, 5, 3, generator=g)
    Q = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))[0].float()
    outs = {}
    for policy in (None, StatePolicy.TRANSFORM, StatePolicy.RESET):
        net = _net(seed)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        _train(net, opt, xs[:3], ys[:3])
        if policy is not None:
            Reparametrise("rot", {"w1": net[0].weight, "w2": net[1].weight}, _rotate(Q, policy)).apply(None, opt)
        _train(net, opt, xs[3:], ys[3:])
        outs[policy] = net(xs[0]).detach()
    assert torch.allclose(outs[StatePolicy.TRANSFORM], outs[None], atol=1e-5)
    assert not torch.allclose(outs[StatePolicy.RESET], outs[None], atol=1e-4)  # the check can fail


def _truncate(rank: int):
    """Balanced factorisation of ``W2 W1`` truncated to ``rank`` hidden units (exact when
    the product's rank is at most ``rank``); the moments are RESET (no map is claimed)."""
    def fn(w):
        U, S, Vh = torch.linalg.svd(w["w2"].double() @ w["w1"].double())
        r = S[:rank].sqrt()
        return {"w1": NewValue((r[:, None] * Vh[:rank]).float()), "w2": NewValue((U[:, :rank] * r).float())}
    return fn


def test_truncation_changes_shapes_keeps_the_function_and_undoes_bit_exactly():
    net = _net(0, n_in=4, hidden=8, n_out=3)  # W2 W1 has rank <= 3
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.randn(7, 4)
    _train(net, opt, [x], [torch.randn(7, 3)])
    before = net(x).detach()
    old = [p.detach().clone() for p in net.parameters()]
    old_state = [{k: v.clone() for k, v in opt.state[p].items() if v.dim() > 0} for p in net.parameters()]
    op = Reparametrise("svd", {"w1": net[0].weight, "w2": net[1].weight}, _truncate(3))
    rec = op.apply(None, opt)
    assert net[0].weight.shape == (3, 4) and net[1].weight.shape == (3, 3)
    assert torch.allclose(net(x), before, atol=1e-5)
    for p in net.parameters():  # RESET: zeros of the new shape
        assert opt.state[p]["exp_avg"].shape == p.shape and not opt.state[p]["exp_avg"].any()
    _train(net, opt, [x], [torch.randn(7, 3)])  # a step runs on the new shapes
    op.undo(None, opt, rec)  # back to the values before apply (training since is lost; step counts on)
    for p, o, s in zip(net.parameters(), old, old_state):
        assert torch.equal(p, o)
        for k, v in s.items():
            assert torch.equal(opt.state[p][k], v)


def test_a_map_of_the_wrong_shape_or_a_non_finite_value_is_refused():
    net = _net(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _train(net, opt, [torch.randn(2, 4)], [torch.randn(2, 3)])
    bad_map = lambda w: {"w1": NewValue(w["w1"], {"momentum_buffer": (StatePolicy.TRANSFORM, lambda m: m[:2])})}  # noqa: E731
    with pytest.raises(ShapeError, match="momentum_buffer of w1"):
        Reparametrise("bad", {"w1": net[0].weight}, bad_map).apply(None, opt)
    nan = lambda w: {"w1": NewValue(w["w1"] * float("nan"))}  # noqa: E731
    with pytest.raises(InvalidArgumentError, match="finite"):
        Reparametrise("nan", {"w1": net[0].weight}, nan).apply(None, opt)
    missing = lambda w: {}  # noqa: E731
    with pytest.raises(InvalidArgumentError, match="w1"):
        Reparametrise("missing", {"w1": net[0].weight}, missing).apply(None, opt)


def test_plan_says_once_what_each_action_means():
    from test_torch_groups import tiny

    from lyactl_torch.gpt_adapter import GPTAdapter
    from lyactl_torch.groups import Layout

    layout = Layout(tiny(), GPTAdapter(), 4)
    idx = {g.name: i for i, g in enumerate(layout.groups)}
    head = next(n for n in idx if ".attn.head." in n)
    layer = next(g.name for g in layout.groups if g.kind.value == "layer")
    ev = Event(0, 10, (Decision(10, head, idx[head], Action.PRUNE), Decision(10, layer, idx[layer], Action.PRUNE)))
    ops = plan(layout, ev)
    assert isinstance(ops[0], CutUnits) and ops[0].units == layout.refs[idx[head]].units
    assert isinstance(ops[1], RemoveLayer) and ops[1].block == layout.refs[idx[layer]].layer
    with pytest.raises(InvalidArgumentError, match="LAYER"):
        plan(layout, Event(1, 10, (Decision(10, head, idx[head], Action.FREEZE),)))
    with pytest.raises(InvalidArgumentError, match="Decision.index"):
        plan(layout, Event(2, 10, (Decision(10, head, idx[head] + 1, Action.PRUNE),)))
