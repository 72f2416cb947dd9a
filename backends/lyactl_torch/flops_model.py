"""Training FLOPs per token of a hypothetical state, counted from the shapes (no surgery).

The controller decides an event before the backend carries it out, and the groups' own
costs do not add up: a block of residual channels crosses every head and MLP block, so
cutting a channel block and a head removes their intersection once, where the sum of their
``flops_remove`` counts it twice. :func:`flops_with` counts the state exactly instead: for
every matmul weight it takes the shape it would have after the cuts (each cut axis removes
``units x width x segments`` entries along its dimension, as :func:`~.surgery.prune_units`
does), drops the removed blocks, marks the frozen ones, and prices the result with
:func:`~.flops.flops_per_token` (the convention of :mod:`.flops`). It therefore equals
:func:`~.flops.model_flops_per_token` after the same decisions are applied
(``tests/test_torch_flops_model.py`` checks that on random states).

Cost: one pass over the layout's slices, no tensor work (shapes only): about 2 ms on a
2-core CPU for the 500 groups of the H200 benchmark's model. The controller counts once per
change of the statuses, plus O(log n) counts in a report where its budget actuator tops up
the groups it pushes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lyactl.control.groups import FROZEN, PRUNED
from lyactl.errors import InvalidArgumentError, bad_arg

from .flops import flops_per_token
from .freeze import is_frozen
from .groups import Layout, ModelCost

__all__ = ["flops_with"]


def flops_with(layout: Layout, status: Sequence[int] | np.ndarray, *, trainable: bool = False) -> float:
    """Training FLOPs/token with ``status[i]`` (0 active, 1 frozen, 2 pruned) applied to the
    model as it is now. Groups already gone stay gone; a status of "active" does not bring
    them back (restores are the backend's to carry out). ``trainable``: price every kept
    block trainable, the model's frozen flags and FROZEN statuses ignored: the pruned model's
    cost alone, three times its forward (inference) FLOPs; what a budget that counts pruned
    groups only needs (:class:`lyactl.control.budget.BudgetCounts`)."""
    status = np.asarray(status)
    if status.shape != (len(layout.groups),):
        raise InvalidArgumentError(bad_arg("status", f"shape ({len(layout.groups)},)", status.shape))
    refs, was = layout.refs, layout.pruned_mask()  # a group's units are all live or all gone
    gone = {r.layer for r, s, w in zip(refs, status, was) if s == PRUNED and r.axis is None and not w}
    freeze = {r.layer for r, s in zip(refs, status) if s == FROZEN and r.axis is None}
    cut: dict[str, int] = {}  # axis -> number of live units it loses
    for r, s, w in zip(refs, status, was):
        if s == PRUNED and r.axis is not None and not w and r.layer not in gone:
            cut[r.axis] = cut.get(r.axis, 0) + len(r.units)
    return _priced(layout, cut, gone, freeze, trainable)


def _priced(layout: Layout, cut: dict[str, int], gone: set[int], freeze: set[int], trainable: bool = False) -> float:
    """:func:`flops_per_token` of the model with ``cut`` units per axis gone, blocks
    ``gone`` removed and blocks ``freeze`` frozen (original block ids)."""
    cost = layout.adapter.cost(layout.model)
    blocks = layout.adapter.blocks(layout.model)
    pos_of = {id(p): i for i, blk in enumerate(blocks) for p in blk.parameters()}
    mm, attn, other = list(cost.block_matmul), list(cost.block_attn), float(cost.other_matmul)
    extra = [cost.other(i) for i in range(len(mm))]
    for pairs in layout.axis_of_param().values():
        if not any(sl.matmul for _, sl in pairs):
            continue
        p, shape = pairs[0][1].param, list(pairs[0][1].param.shape)
        for axis, sl in pairs:
            shape[sl.dim] -= cut.get(axis.name, 0) * sl.width * sl.segments
        dropped = p.numel() - math.prod(shape)
        if id(p) in pos_of:
            mm[pos_of[id(p)]] -= dropped
        else:
            other -= dropped
    for name, k in cut.items():
        axis = layout.axes[name]
        if axis.layer >= 0 and k:
            pos = layout.block_ids.index(axis.layer)
            attn[pos] -= axis.attn_flops_per_unit * k
            extra[pos] -= axis.other_flops_per_unit * k
    keep = [i for i, b in enumerate(layout.block_ids) if b not in gone]
    frozen = [not trainable and (is_frozen(blocks[i]) or layout.block_ids[i] in freeze) for i in keep]
    prefix = next((j for j, f in enumerate(frozen) if not f), len(frozen))
    priced = ModelCost(tuple(mm[i] for i in keep), tuple(attn[i] for i in keep), int(other),
                       tuple(extra[i] for i in keep))
    return flops_per_token(priced, frozen, prefix)
