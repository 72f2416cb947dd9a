"""Structural surgery: physically remove (and put back) units, with optimizer state.

Width surgery slices every parameter dimension an axis indexes (weights, biases, norm
weights) with ``p.data = p.data[..., keep, ...]``, so the ``Parameter`` objects (and the
optimizer's references to them) survive; every optimizer-state tensor of the parameter's
shape (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``) is sliced the
same way, scalar state (``step``) is kept. This state layout is the same for
``torch.optim.Adam``/``AdamW`` (for-loop, ``foreach`` and ``fused``) and ``SGD``.

Layer surgery deletes a block from the model's ``ModuleList`` and its parameters from the
optimizer's ``param_groups`` and ``state``.

Everything removed (values, optimizer state, positions) is kept on the HOST in a record
(:class:`AxisRemoval`, :class:`LayerRemoval`), so restore puts back bit-identical values in
the same places; dropping the record releases it. Removed device tensors are freed (no
reference is kept), so device memory in use falls. Gradients of touched parameters are
set to None (their shapes are stale).

Layout of an axis dimension of length ``S * n * W``: segment-major, then unit, then the
``W`` entries of a unit; :func:`split` views it as ``[S, n, W, *rest]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg

from .groups import Layout, ParamSlice

__all__ = [
    "replace_data",
    "split",
    "merge",
    "SliceRecord",
    "AxisRemoval",
    "LayerRemoval",
    "prune_units",
    "restore_units",
    "remove_layer",
    "restore_layer",
]


def replace_data(p: nn.Parameter, new: torch.Tensor) -> None:
    """``p.data = new``, also dropping the cached gradient accumulator of the old shape.

    ``Tensor.set_data`` keeps a parameter's cached ``AccumulateGrad`` node unless the dtype
    or device changes, and the previous step's graph (the loss the caller still holds)
    keeps that node alive: the next backward would then check gradients against the old
    shape. Passing through an empty tensor of another dtype forces the reset.
    """
    if new.shape != p.shape:
        other = torch.float32 if p.dtype == torch.float64 else torch.float64
        p.data = torch.empty(0, dtype=other, device=new.device)
    p.data = new


def split(x: torch.Tensor, s: ParamSlice) -> torch.Tensor:
    """View dimension ``s.dim`` of ``x`` as ``[S, n, W]`` moved to the front: ``[S, n, W, *rest]``."""
    y = x.movedim(s.dim, 0)
    return y.reshape(s.segments, -1, s.width, *y.shape[1:])


def merge(y: torch.Tensor, s: ParamSlice) -> torch.Tensor:
    """Inverse of :func:`split` (contiguous result)."""
    S, n, W = y.shape[:3]
    return y.reshape(S * n * W, *y.shape[3:]).movedim(0, s.dim).contiguous()


def _shaped_state(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> list[str]:
    """Keys of ``optimizer.state[p]`` holding tensors of ``p``'s shape."""
    st = optimizer.state.get(p, {})
    return [k for k, v in st.items() if isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim() > 0]


@dataclass(frozen=True, eq=False)
class SliceRecord:
    """Removed entries of one parameter along one axis (host tensors, ``[S, u, W, *rest]``)."""

    s: ParamSlice
    data: torch.Tensor
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class AxisRemoval:
    """Units ``units`` (original ids, sorted) removed from axis ``axis``."""

    axis: str
    units: tuple[int, ...]
    slices: tuple[SliceRecord, ...]


@dataclass(frozen=True, eq=False)
class LayerRemoval:
    """Block ``block_id`` removed: the module (on the host), each parameter's optimizer
    state ``{key: (host tensor or value, original device)}`` and param-group slot."""

    block_id: int
    module: nn.Module
    device: torch.device
    state: tuple[dict[str, tuple[Any, Any]], ...]
    slots: tuple[tuple[int, int] | None, ...]


def prune_units(layout: Layout, optimizer: torch.optim.Optimizer, axis_name: str, units: tuple[int, ...]) -> AxisRemoval:
    """Remove ``units`` (original ids) from an axis; return what is needed to undo it."""
    axis, ids = layout.axes[axis_name], layout.live[axis_name]
    gone = set(units)
    if not gone <= set(ids):
        raise InvalidArgumentError(bad_arg(f"units of {axis_name!r}", f"live unit ids {ids}", sorted(gone)))
    if len(gone) >= len(ids):
        raise InvalidArgumentError(bad_arg(f"units of {axis_name!r}", "to leave at least one unit", sorted(gone)))
    keep = torch.tensor([i for i, u in enumerate(ids) if u not in gone], dtype=torch.int64)
    rem = torch.tensor([i for i, u in enumerate(ids) if u in gone], dtype=torch.int64)
    records = []
    for s in layout.live_slices(axis):  # blocks removed earlier are left as they were
        p = s.param
        keys = _shaped_state(optimizer, p)
        y = split(p.data, s)
        k_dev, r_dev = keep.to(p.device), rem.to(p.device)
        saved = {}
        for key in keys:
            z = split(optimizer.state[p][key], s)
            saved[key] = z.index_select(1, r_dev).cpu()
            optimizer.state[p][key] = merge(z.index_select(1, k_dev), s)
        records.append(SliceRecord(s, y.index_select(1, r_dev).cpu(), saved))
        replace_data(p, merge(y.index_select(1, k_dev), s))
        p.grad = None
    layout.live[axis_name] = [u for u in ids if u not in gone]
    if axis.refresh is not None:
        axis.refresh()
    return AxisRemoval(axis_name, tuple(sorted(gone)), tuple(records))


def restore_units(layout: Layout, optimizer: torch.optim.Optimizer, rec: AxisRemoval) -> None:
    """Put the units of ``rec`` back at their original positions, with optimizer state.

    Raises :class:`InvalidArgumentError` if a parameter's other dimensions changed since
    the removal (restore events in reverse order of application when axes interact).
    """
    ids = layout.live[rec.axis]
    if set(ids) & set(rec.units):
        raise InvalidArgumentError(bad_arg(f"restore of {rec.axis!r}", "units not live", rec.units))
    combined = ids + list(rec.units)
    order = torch.tensor(sorted(range(len(combined)), key=combined.__getitem__), dtype=torch.int64)
    for r in reversed(rec.slices):  # reverse order: an axis may slice two dims of one parameter
        p, s = r.s.param, r.s
        y = split(p.data, s)
        if y.shape[2:] != r.data.shape[2:]:
            raise InvalidArgumentError(
                bad_arg(f"restore of {s.name}", f"other dims {tuple(r.data.shape[2:])}", tuple(y.shape[2:]))
            )
        o = order.to(p.device)
        for key in _shaped_state(optimizer, p):
            z = split(optimizer.state[p][key], s)
            back = r.state[key].to(z.device, z.dtype) if key in r.state else torch.zeros_like(r.data, device=z.device, dtype=z.dtype)
            optimizer.state[p][key] = merge(torch.cat([z, back], 1).index_select(1, o), s)
        replace_data(p, merge(torch.cat([y, r.data.to(p.device, p.dtype)], 1).index_select(1, o), s))
        p.grad = None
    layout.live[rec.axis] = sorted(combined)
    axis = layout.axes[rec.axis]
    if axis.refresh is not None:
        axis.refresh()


def remove_layer(layout: Layout, optimizer: torch.optim.Optimizer, block_id: int) -> LayerRemoval:
    """Delete block ``block_id`` (original index) from the model and the optimizer."""
    if block_id not in layout.block_ids or len(layout.block_ids) <= 1:
        raise InvalidArgumentError(bad_arg("block_id", f"one of {layout.block_ids} (and not the last)", block_id))
    pos = layout.block_ids.index(block_id)
    blocks = layout.adapter.blocks(layout.model)
    blk = blocks[pos]
    params = list(blk.parameters())
    where = {id(p): i for i, p in enumerate(params)}
    slots: list[tuple[int, int] | None] = [None] * len(params)
    for gi, pg in enumerate(optimizer.param_groups):
        for j, q in enumerate(pg["params"]):
            if id(q) in where:
                slots[where[id(q)]] = (gi, j)
        pg["params"] = [q for q in pg["params"] if id(q) not in where]
    state = []
    for p in params:
        st = optimizer.state.pop(p, {})
        state.append({k: ((v.cpu(), v.device) if isinstance(v, torch.Tensor) else (v, None)) for k, v in st.items()})
    device = params[0].device if params else torch.device("cpu")
    for t in (*params, *blk.buffers()):
        t.data = t.data.cpu()
    for p in params:
        p.grad = None
    del blocks[pos]
    layout.block_ids.pop(pos)
    return LayerRemoval(block_id, blk, device, tuple(state), tuple(slots))


def _check_block_fits(layout: Layout, rec: LayerRemoval) -> None:
    mine = {id(p) for p in rec.module.parameters()}
    for axis in layout.axes.values():
        if axis.layer >= 0:
            continue
        n = len(layout.live[axis.name])
        for s in axis.slices:
            if id(s.param) in mine and s.param.shape[s.dim] != s.segments * n * s.width:
                raise InvalidArgumentError(
                    bad_arg(f"restore of block {rec.block_id}: {s.name}", f"size {s.segments * n * s.width}", s.param.shape[s.dim])
                )


def restore_layer(layout: Layout, optimizer: torch.optim.Optimizer, rec: LayerRemoval) -> None:
    """Put block ``rec.block_id`` back at its original position, with optimizer state."""
    if rec.block_id in layout.block_ids:
        raise InvalidArgumentError(bad_arg("restore of block", "a removed block", rec.block_id))
    _check_block_fits(layout, rec)
    params = list(rec.module.parameters())
    for t in (*params, *rec.module.buffers()):
        t.data = t.data.to(rec.device)
    for p, slot, st in zip(params, rec.slots, rec.state):
        if slot is not None:
            pg = optimizer.param_groups[slot[0]]["params"]
            pg.insert(min(slot[1], len(pg)), p)
        if st:
            optimizer.state[p] = {k: (v.to(dev) if dev is not None else v) for k, (v, dev) in st.items()}
    pos = sum(1 for b in layout.block_ids if b < rec.block_id)
    layout.adapter.blocks(layout.model).insert(pos, rec.module)
    layout.block_ids.insert(pos, rec.block_id)
