"""An axis that slices two dimensions of one parameter (a dense state matrix A, rows and
columns), with FLOPs outside matmuls and attention: statistics count each element once,
surgery restores exactly (in reverse order), and the FLOPs model prices it."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from lyactl.control.groups import FROZEN, PRUNED, GroupKind  # noqa: E402
from lyactl_torch.flops import model_flops_per_token  # noqa: E402
from lyactl_torch.flops_model import flops_with  # noqa: E402
from lyactl_torch.groups import AxisSpec, Layout, ModelCost, ParamSlice  # noqa: E402
from lyactl_torch.stats import ReductionPlan  # noqa: E402
from lyactl_torch.surgery import prune_units, restore_units  # noqa: E402

N, D, SCAN = 16, 8, 5.0  # states, channels, non-matmul FLOPs/token per state


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.B = nn.Linear(D, N, bias=False)          # weight [N, D]: states on dim 0
        self.A = nn.Parameter(0.1 * torch.randn(N, N))  # states on dims 0 and 1
        self.C = nn.Linear(N, D, bias=False)          # weight [D, N]: states on dim 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.C(torch.tanh(self.B(h) @ self.A.T))


class Toy(nn.Module):
    def __init__(self, n_blocks: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(n_blocks))
        self.frozen_prefix = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            h = blk(h)
        return h


class ToyAdapter:
    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, Toy)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.blocks

    def axes(self, model: nn.Module, block_ids):
        out = []
        for b, blk in zip(block_ids, model.blocks):
            p = f"blocks.{b}"
            slices = (ParamSlice(f"{p}.B.weight", blk.B.weight, 0, matmul=True),
                      ParamSlice(f"{p}.A.rows", blk.A, 0, matmul=True), ParamSlice(f"{p}.A.cols", blk.A, 1),
                      ParamSlice(f"{p}.C.weight", blk.C.weight, 1, matmul=True))
            out.append(AxisSpec(f"{p}.state", GroupKind.STATE_BLOCK, b, blk.A.shape[0], 4, slices,
                                other_flops_per_unit=SCAN))
        return out

    def cost(self, model: nn.Module) -> ModelCost:
        mm = tuple(sum(p.numel() for p in blk.parameters()) for blk in model.blocks)
        return ModelCost(mm, (0.0,) * len(mm), 0, tuple(SCAN * blk.A.shape[0] for blk in model.blocks))

    def set_frozen_prefix(self, model: nn.Module, p: int) -> None:
        model.frozen_prefix = p


def _layout(seed: int = 0) -> Layout:
    torch.manual_seed(seed)
    return Layout(Toy(), ToyAdapter(), 4)


def _state_groups(layout: Layout) -> list[int]:
    return [i for i, g in enumerate(layout.groups) if g.kind is GroupKind.STATE_BLOCK]


def test_w_sq_counts_each_element_of_a_two_dim_slice_once():
    layout = _layout()
    stats = ReductionPlan(layout).statistics(torch.optim.SGD(layout.model.parameters(), lr=0.1), [False] * len(layout.groups),
                                             step=1, lr=0.1, loss=0.0, interval=1, weight_decay=0.0)
    for gi in _state_groups(layout):
        ref = layout.refs[gi]
        blk = layout.model.blocks[layout.block_ids.index(ref.layer)]
        rows = torch.zeros(N, dtype=torch.bool)
        rows[list(ref.units)] = True
        A_mask = rows[:, None] | rows[None, :]  # the union: the corner block once
        expected = float((blk.B.weight[rows] ** 2).sum().detach()) + float((blk.A[A_mask] ** 2).sum().detach()) + float((blk.C.weight[:, rows] ** 2).sum().detach())
        assert stats.w_sq[gi] == pytest.approx(float(expected), rel=1e-5)


def test_prune_then_restore_of_a_two_dim_axis_is_bit_exact():
    layout = _layout(1)
    model = layout.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, D)).pow(2).sum().backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: opt.state[p]["exp_avg"].clone() for n, p in model.named_parameters()}
    rec = prune_units(layout, opt, "blocks.0.state", (4, 5, 6, 7))
    assert model.blocks[0].A.shape == (N - 4, N - 4) and opt.state[model.blocks[0].A]["exp_avg"].shape == (N - 4, N - 4)
    restore_units(layout, opt, rec)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and torch.equal(opt.state[p]["exp_avg"], state[n])


def test_flops_model_prices_the_scan_term_as_surgery_does():
    layout = _layout(2)
    opt = torch.optim.SGD(layout.model.parameters(), lr=0.1)
    status = np.zeros(len(layout.groups), np.int8)
    state = _state_groups(layout)
    status[state[:2]] = PRUNED
    predicted = flops_with(layout, status)
    dense = model_flops_per_token(layout.model, layout.adapter)
    assert predicted < dense
    for gi in state[:2]:
        prune_units(layout, opt, layout.refs[gi].axis, layout.refs[gi].units)
    assert model_flops_per_token(layout.model, layout.adapter) == pytest.approx(predicted, rel=1e-12)
    # the scan term is in it: the same cut without it would price SCAN * 8 FLOPs less saving
    assert dense - predicted > 6.0 * 8 * (D + D) + SCAN * 8 - 1e-9
    layer = next(i for i, g in enumerate(layout.groups) if g.kind is GroupKind.LAYER)
    assert layout.groups[layer].flops_remove >= SCAN * N and status[layer] != FROZEN
