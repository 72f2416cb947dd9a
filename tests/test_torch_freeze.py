"""Freezing: frozen blocks get no gradients, a frozen prefix runs no backward at all."""

import math

import pytest

torch = pytest.importorskip("torch")

from test_torch_groups import tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch.freeze import freeze_layer, frozen_prefix, unfreeze_layer  # noqa: E402
from lyactl_torch.gpt_adapter import GPTAdapter  # noqa: E402
from lyactl_torch.groups import Layout  # noqa: E402



def backward_once(model):
    x = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    model(x, x)[1].backward()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_frozen_prefix_runs_no_backward():
    model = tiny(n_layer=3)
    layout = Layout(model, GPTAdapter(), 64)
    fired = []
    for i, blk in enumerate(model.blocks):
        blk.register_full_backward_hook(lambda mod, gin, gout, i=i: fired.append(i))
    freeze_layer(layout, 0)
    assert model.frozen_prefix == 1
    backward_once(model)
    assert fired == [2, 1]  # block 0 never ran a backward
    assert all(p.grad is None for p in model.blocks[0].parameters())
    assert all(p.grad is not None for p in model.blocks[1].parameters())
    assert model.wpe.weight.grad is None  # nothing below the prefix gets a gradient


def test_frozen_block_above_trainable_one_passes_input_grads():
    model = tiny(n_layer=3)
    layout = Layout(model, GPTAdapter(), 64)
    rec = freeze_layer(layout, 1)
    assert model.frozen_prefix == 0
    backward_once(model)
    assert all(p.grad is None for p in model.blocks[1].parameters())
    assert all(p.grad is not None for p in model.blocks[0].parameters())
    freeze_layer(layout, 0)
    assert model.frozen_prefix == 2 == frozen_prefix(layout)
    unfreeze_layer(layout, rec)
    assert model.frozen_prefix == 1
    assert all(p.requires_grad for p in model.blocks[1].parameters())


def test_optimizer_leaves_frozen_block_untouched():
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    layout = Layout(model, GPTAdapter(), 64)
    backward_once(model)
    opt.step()
    freeze_layer(layout, 1)
    before = [p.detach().clone() for p in model.blocks[1].parameters()]
    for _ in range(2):
        backward_once(model)
        opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.blocks[1].parameters()))


def test_freeze_flops_match_group_and_prefix_formula():
    model = tiny(n_layer=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    backend = L.TorchBackend(model, opt)
    f0 = L.model_flops_per_token(model)
    g1 = backend.groups()[backend.layout.index["blocks.1"]]
    layout = backend.layout
    freeze_layer(layout, 1)
    f1 = L.model_flops_per_token(model)
    assert math.isclose(f0 - f1, g1.flops_freeze, rel_tol=1e-12)
    freeze_layer(layout, 0)  # prefix of 2: forward only for both
    cost = GPTAdapter().cost(model)
    expect = 6 * cost.other_matmul + sum(2 * m + a / 3 for m, a in zip(cost.block_matmul[:2], cost.block_attn[:2]))
    expect += 6 * cost.block_matmul[2] + cost.block_attn[2]
    assert math.isclose(L.model_flops_per_token(model), expect, rel_tol=1e-12)
