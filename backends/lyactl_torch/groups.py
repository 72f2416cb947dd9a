"""Group discovery: the prunable axes of a model and the groups cut from them.

A model family plugs in through :class:`ArchitectureAdapter` (the reference GPT's is
:mod:`.gpt_adapter`, next to its model; Hugging Face families are in :mod:`.hf`), a Protocol that lists the
model's transformer blocks and its prunable *axes*. An axis (:class:`AxisSpec`) is one
width that can shrink (the KV groups of one attention layer, the hidden neurons of one
MLP, the residual stream); it names every parameter dimension that is indexed by it
(:class:`ParamSlice`). A unit of an axis occupies ``width`` consecutive entries in each
of ``segments`` equal segments of that dimension, which also covers fused projections
(GPT-2's ``c_attn`` is 3 segments of ``n_head * head_dim`` rows).

:class:`Layout` cuts each axis into groups of ``block`` units (a remainder of fewer than
``block`` units is never prunable, so widths stay at multiples of ``block``), adds one
LAYER group per block, and keeps, per axis, the sorted list of *original* unit ids still
alive, so group index -> (axis, original unit ids) stays valid through every prune and
restore. Group order and names are fixed at discovery.

FLOPs convention (per token, training = forward + backward):

* matmul: ``6 * P`` for ``P`` matmul weights (Linear weights incl. the LM head; embedding
  lookups, norms and biases are not counted);
* attention scores: ``12 * T * head_dim`` per query head and layer (``QK^T`` and ``AV``,
  2 FLOPs per multiply-add, full ``T x T`` without a causal discount, times 3);
* ``flops_remove`` of a group: 6 x its matmul weights + its attention FLOPs;
* ``flops_freeze`` of a LAYER group: ``2 * P_block`` (the weight-gradient third of its
  matmul work); a frozen *prefix* also skips input gradients and the attention
  backward (see :mod:`lyactl_torch.flops`). Width groups cannot be frozen: 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, UnsupportedModelError, bad_arg
from lyactl.control.groups import Constraint, Group, GroupKind

__all__ = [
    "ParamSlice",
    "AxisSpec",
    "ModelCost",
    "ArchitectureAdapter",
    "GroupRef",
    "Layout",
    "adapter_for",
]


@dataclass(frozen=True, eq=False)
class ParamSlice:
    """Dimension ``dim`` of ``param``, laid out as ``segments x units x width``.

    ``matmul`` marks a matmul weight (counted in the 6N FLOPs rule). A parameter shared
    by two modules (tied embeddings) must appear once per axis.
    """

    name: str
    param: nn.Parameter = field(repr=False)
    dim: int
    width: int = 1
    segments: int = 1
    matmul: bool = False

    def per_unit_numel(self) -> int:
        """Entries of ``param`` owned by one unit (at the current shape)."""
        other = self.param.numel() // max(self.param.shape[self.dim], 1)
        return self.width * self.segments * other


@dataclass(frozen=True, eq=False)
class AxisSpec:
    """One prunable width of the model.

    ``layer`` is the original block index (-1 for model-wide axes), ``size`` the current
    number of units, ``block`` the units per group, ``attn_flops_per_unit`` the training
    attention FLOPs/token carried by one unit (scales with the sequence length),
    ``other_flops_per_unit`` its other non-matmul training FLOPs/token (a state-space
    layer's recurrence: per token, whatever the sequence length), ``refresh`` a callable run after every
    change of the axis (it updates module bookkeeping such as ``n_head``), ``unit_count``
    the :attr:`Group.units` one axis unit carries (query heads per KV group).
    """

    name: str
    kind: GroupKind
    layer: int
    size: int
    block: int
    slices: tuple[ParamSlice, ...]
    attn_flops_per_unit: float = 0.0
    refresh: Callable[[], None] | None = field(default=None, repr=False)
    unit_count: int = 1
    other_flops_per_unit: float = 0.0


@dataclass(frozen=True)
class ModelCost:
    """Current cost inputs: matmul weights and training attention FLOPs/token per block,
    matmul weights outside the blocks (LM head), and per block the training FLOPs/token of
    layers that are neither matmuls nor attention (``block_other``, e.g. a state-space
    scan; empty means none; not rescaled with the sequence length)."""

    block_matmul: tuple[int, ...]
    block_attn: tuple[float, ...]
    other_matmul: int
    block_other: tuple[float, ...] = ()

    def other(self, i: int) -> float:
        """``block_other[i]`` (0 when the adapter reports none)."""
        return self.block_other[i] if self.block_other else 0.0


@runtime_checkable
class ArchitectureAdapter(Protocol):
    """What a model family must tell lyactl_torch (see :class:`GPTAdapter`)."""

    def supports(self, model: nn.Module) -> bool:
        """True if this adapter understands ``model``."""
        ...

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The transformer blocks, bottom first (removal edits this list in place)."""
        ...

    def axes(self, model: nn.Module, block_ids: Sequence[int]) -> Sequence[AxisSpec]:
        """Prunable axes at the current shapes; ``block_ids`` are the original indices of
        the current blocks (use them in names and ``AxisSpec.layer``)."""
        ...

    def cost(self, model: nn.Module) -> ModelCost:
        """Matmul weights and attention FLOPs at the current shapes."""
        ...

    def set_frozen_prefix(self, model: nn.Module, p: int) -> None:
        """Make the first ``p`` blocks run without autograd."""
        ...


def adapter_for(model: nn.Module, adapters: Sequence[ArchitectureAdapter] = ()) -> ArchitectureAdapter:
    """The first of ``adapters`` (then the built-in :class:`GPTAdapter`) supporting ``model``.

    Raises :class:`UnsupportedModelError` naming the model's type when none does.
    """
    from .gpt_adapter import GPTAdapter  # the built-in model's adapter (it imports this module)

    for adapter in (*adapters, GPTAdapter()):
        if adapter.supports(model):
            return adapter
    raise UnsupportedModelError(bad_arg("model", "a model supported by an ArchitectureAdapter", type(model).__name__))


@dataclass(frozen=True)
class GroupRef:
    """Where group ``index`` lives: its axis name (None for a LAYER group), its original
    unit ids on that axis (the original block id for a LAYER group)."""

    axis: str | None
    units: tuple[int, ...]
    layer: int


class Layout:
    """Groups, constraints and the live bookkeeping of one model.

    Parameters
    ----------
    model : nn.Module
    adapter : ArchitectureAdapter
    block : int
        Units per width group (MLP neurons, residual channels); heads are one KV group each.
    live : mapping axis name -> original unit ids, optional
        Live units of an already pruned model (from a checkpoint); default ``range(size)``.
    block_ids : sequence of int, optional
        Original indices of the current blocks; default ``range(len(blocks))``.
    """

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, block: int = 64,
                 live: dict[str, Sequence[int]] | None = None, block_ids: Sequence[int] | None = None) -> None:
        if not (isinstance(block, int) and block >= 1):
            raise InvalidArgumentError(bad_arg("block", "an int >= 1", block))
        self.model, self.adapter, self.block = model, adapter, block
        n_blocks = len(adapter.blocks(model))
        self.block_ids: list[int] = list(range(n_blocks) if block_ids is None else block_ids)
        if len(self.block_ids) != n_blocks:
            raise InvalidArgumentError(bad_arg("block_ids", f"{n_blocks} ids", self.block_ids))
        self.axes: dict[str, AxisSpec] = {a.name: a for a in adapter.axes(model, self.block_ids)}
        given = {} if live is None else live
        self.live: dict[str, list[int]] = {n: sorted(given.get(n, range(a.size))) for n, a in self.axes.items()}
        for n, a in self.axes.items():
            if len(self.live[n]) != a.size:
                raise InvalidArgumentError(bad_arg(f"live[{n!r}]", f"{a.size} unit ids", self.live[n]))
        self.groups, self.refs, self.cons = self._discover()
        self.index = {g.name: i for i, g in enumerate(self.groups)}
        self.unit_group: dict[str, dict[int, int]] = {n: {} for n in self.axes}
        for i, r in enumerate(self.refs):
            if r.axis is not None:
                self.unit_group[r.axis].update({u: i for u in r.units})

    def _unit_block(self, axis: AxisSpec) -> int:
        return axis.block if axis.block > 0 else self.block

    def _axis_groups(self, axis: AxisSpec) -> list[tuple[Group, GroupRef]]:
        """Groups of ``block`` live units; the remainder stays unprunable."""
        k, ids, out = self._unit_block(axis), self.live[axis.name], []
        n_per = sum(s.per_unit_numel() for s in axis.slices)
        mm_per = sum(s.per_unit_numel() for s in axis.slices if s.matmul)
        for j in range(len(ids) // k):
            units = tuple(ids[j * k:(j + 1) * k])
            name = f"{axis.name}.{units[0] // k}"
            fl = 6.0 * mm_per * k + (axis.attn_flops_per_unit + axis.other_flops_per_unit) * k
            group = Group(name, axis.kind, axis.layer, n_per * k, fl, 0.0, k * axis.unit_count)
            out.append((group, GroupRef(axis.name, units, axis.layer)))
        return out

    def _discover(self) -> tuple[tuple[Group, ...], tuple[GroupRef, ...], tuple[Constraint, ...]]:
        groups: list[Group] = []
        refs: list[GroupRef] = []
        cons: list[Constraint] = []
        blocks, cost = self.adapter.blocks(self.model), self.adapter.cost(self.model)
        by_layer: dict[int, list[AxisSpec]] = {}
        for a in self.axes.values():
            by_layer.setdefault(a.layer, []).append(a)
        for pos, b in enumerate(self.block_ids):
            for axis in by_layer.get(b, []):
                made = self._axis_groups(axis)
                first = len(groups)
                for g, r in made:
                    groups.append(g)
                    refs.append(r)
                if made:
                    remainder = len(self.live[axis.name]) % self._unit_block(axis)
                    cons.append(Constraint(tuple(range(first, len(groups))), 1 if remainder == 0 else 0))
            n_params = sum(p.numel() for p in blocks[pos].parameters())
            mm, attn = cost.block_matmul[pos], cost.block_attn[pos] + cost.other(pos)
            groups.append(Group(f"blocks.{b}", GroupKind.LAYER, b, n_params, 6.0 * mm + attn, 2.0 * mm, 1))
            refs.append(GroupRef(None, (b,), b))
        layer_idx = tuple(i for i, g in enumerate(groups) if g.kind is GroupKind.LAYER)
        if layer_idx:
            cons.append(Constraint(layer_idx, 1))
        for axis in by_layer.get(-1, []):
            first = len(groups)
            for g, r in self._axis_groups(axis):
                groups.append(g)
                refs.append(r)
            if len(groups) > first:
                remainder = len(self.live[axis.name]) % self._unit_block(axis)
                cons.append(Constraint(tuple(range(first, len(groups))), 1 if remainder == 0 else 0))
        return tuple(groups), tuple(refs), tuple(cons)

    # ---- queries on the live state -------------------------------------------------
    def layer_live(self, b: int) -> bool:
        return b in self.block_ids

    def is_pruned(self, g: int) -> bool:
        """True if group ``g`` is gone (its units, or its whole block, removed)."""
        ref = self.refs[g]
        if ref.layer >= 0 and not self.layer_live(ref.layer):
            return True
        if ref.axis is None:
            return False
        return not set(ref.units) <= set(self.live[ref.axis])

    def pruned_mask(self) -> list[bool]:
        """``is_pruned`` of every group (sets built once per axis)."""
        live = {n: set(v) for n, v in self.live.items()}
        blocks = set(self.block_ids)
        return [(r.layer >= 0 and r.layer not in blocks) or (r.axis is not None and not set(r.units) <= live[r.axis])
                for r in self.refs]

    def live_slices(self, axis: AxisSpec, present: set[int] | None = None) -> list[ParamSlice]:
        """The slices of ``axis`` whose parameter is in the model now (not in a removed block);
        ``present``: the ids of the model's parameters, if the caller has them already."""
        present = {id(p) for p in self.model.parameters()} if present is None else present
        return [s for s in axis.slices if id(s.param) in present]

    def axis_of_param(self) -> dict[int, list[tuple[AxisSpec, ParamSlice]]]:
        """``id(param) -> [(axis, slice), ...]`` over axes whose block is live."""
        out: dict[int, list[tuple[AxisSpec, ParamSlice]]] = {}
        present = {id(p) for p in self.model.parameters()}  # once, not once per axis
        for axis in self.axes.values():
            if axis.layer >= 0 and not self.layer_live(axis.layer):
                continue
            for s in self.live_slices(axis, present):
                out.setdefault(id(s.param), []).append((axis, s))
        return out

    def unit_groups(self, axis: AxisSpec, n_groups_slot: int) -> torch.Tensor:
        """int64 ``[len(live)]``: group index of each live unit (``n_groups_slot`` for
        units in no group: the unprunable remainder)."""
        m = self.unit_group[axis.name]
        return torch.tensor([m.get(u, n_groups_slot) for u in self.live[axis.name]], dtype=torch.int64)
