"""The backend's FLOPs model counts a hypothetical state exactly: it equals the FLOPs/token of
the model after the same decisions are carried out (channels, heads, MLP blocks, layers,
frozen layers; GPT, GPT-2 and a GQA family of Hugging Face), where the sum of the groups'
own costs over-counts channel and head cuts made together. The controller then accounts
with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.budget import BudgetConfig  # noqa: E402
from lyactl.control.controller import FROZEN, PRUNED, Controller, ControllerConfig  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from lyactl.control.protocol import CountsFlops  # noqa: E402
from test_torch_groups import tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch.flops import model_flops_per_token  # noqa: E402


def _hf(family: str):
    pytest.importorskip("transformers")
    from test_torch_hf import gpt2, llama_like

    from lyactl_torch import hf
    return (gpt2() if family == "GPT2" else llama_like(family)), hf.hf_adapters()


def _backend(make: str) -> L.TorchBackend:
    if make in ("gpt", "gpt-untied", "gpt-gqa"):
        model = tiny(n_layer=3, tie=make != "gpt-untied", n_kv_head=2 if make == "gpt-gqa" else None, mlp_hidden=256)
        return L.TorchBackend(model, torch.optim.AdamW(model.parameters(), lr=1e-3), block=32)
    model, adapters = _hf(make)
    return L.TorchBackend(model, torch.optim.AdamW(model.parameters(), lr=1e-3), adapters=adapters, block=32)


def _random_state(b: L.TorchBackend, rng: np.random.Generator, p: float) -> np.ndarray:
    """Each active group pruned with probability ``p`` (a layer not frozen yet is frozen
    instead half the time), keeping every constraint's ``min_keep`` and at least one member."""
    blocks = b.adapter.blocks(b.model)
    frozen = {bid for bid, blk in zip(b.layout.block_ids, blocks) if L.freeze.is_frozen(blk)}
    status = np.array([PRUNED if gone else 0 for gone in b.layout.pruned_mask()], np.int8)
    for c in b.constraints():
        alive = [m for m in c.members if status[m] == 0]
        rng.shuffle(alive)
        for m in alive[: max(len(alive) - max(c.min_keep, 1), 0)]:
            if rng.random() < p:
                g = b.groups()[m]
                freeze = g.kind is GroupKind.LAYER and g.layer not in frozen and rng.random() < 0.5
                status[m] = FROZEN if freeze else PRUNED
    return status


def _apply(b: L.TorchBackend, status: np.ndarray, eid: int) -> None:
    """The event a controller would send for ``status``: one decision per group not gone
    yet, none for the groups inside a block that goes (they go with it)."""
    groups, gone = b.groups(), b.layout.pruned_mask()
    dead = {g.layer for g, s in zip(groups, status) if s == PRUNED and g.kind is GroupKind.LAYER}
    acts = {PRUNED: Action.PRUNE, FROZEN: Action.FREEZE}
    ds = tuple(Decision(b.step, g.name, i, acts[int(s)]) for i, (g, s) in enumerate(zip(groups, status))
               if int(s) in acts and not gone[i] and (g.kind is GroupKind.LAYER or g.layer not in dead))
    b.apply(Event(eid, b.step, ds))


@pytest.mark.parametrize("make", ["gpt", "gpt-untied", "gpt-gqa", "GPT2", "Qwen2", "Llama"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counted_state_equals_the_model_after_surgery(make, seed):
    b = _backend(make)
    assert isinstance(b, CountsFlops)
    rng = np.random.default_rng(seed)
    for eid, p in enumerate((0.3, 0.3)):  # a second event on top of the first: gone groups stay gone
        status = _random_state(b, rng, p)
        predicted = b.flops_model(status)
        _apply(b, status, eid)
        assert math.isclose(predicted, model_flops_per_token(b.model, b.adapter), rel_tol=1e-12), (make, seed, eid)


def test_summed_group_costs_over_count_a_channel_and_a_head_cut_together():
    b = _backend("gpt")
    groups = b.groups()
    chan = next(i for i, g in enumerate(groups) if g.kind is GroupKind.CHANNEL_BLOCK)
    head = next(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD)
    status = np.zeros(len(groups), np.int8)
    f0 = b.flops_model(status)
    status[[chan, head]] = PRUNED
    exact = f0 - b.flops_model(status)
    summed = groups[chan].flops_remove + groups[head].flops_remove
    assert exact < summed  # the intersection (a head's 32 dims x 32 channels per matrix) counted twice
    status[head] = 0
    assert math.isclose(f0 - b.flops_model(status), groups[chan].flops_remove, rel_tol=1e-12)  # alone: exact


def test_the_controller_accounts_with_the_backends_count():
    b = _backend("gpt")
    cfg = ControllerConfig(budget=BudgetConfig(target=0.3, total_steps=100))
    exact = Controller(b.groups(), b.constraints(), cfg, flops_model=b.flops_model)
    summed = Controller(b.groups(), b.constraints(), cfg)
    f0 = model_flops_per_token(b.model, b.adapter)
    assert math.isclose(exact.model_flops, f0, rel_tol=1e-12)
    groups = b.groups()
    pick = [next(i for i, g in enumerate(groups) if g.kind is k) for k in (GroupKind.CHANNEL_BLOCK, GroupKind.HEAD)]
    for ctl in (exact, summed):
        ctl.status[pick] = PRUNED
        ctl._changed()
    saved_exact = exact.estimated_fraction() * exact.model_flops
    assert math.isclose(f0 - saved_exact, b.flops_model(exact.status), rel_tol=1e-12)
    assert saved_exact < summed.estimated_fraction() * summed.model_flops  # the sum counts the overlap twice
