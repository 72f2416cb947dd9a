"""FSDP2 (``torch.distributed.fsdp.fully_shard``): sharded statistics, per-unit surgery.

The model is wrapped bottom-up, per block and at the root, as FSDP2 wants::

    mesh = init_device_mesh("cuda", (world,))
    for blk in model.blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    ctl = Lyactl(model, optimizer, controller, interval=50, backend=FSDPBackend(model, optimizer))

Statistics (:mod:`.fsdp_stats`): shard-local sums, one all-reduce; bitwise identical on
every rank.

Penalty (:mod:`.fsdp_penalty`, the budget mode's actuator): the proximal group-lasso step
after ``optimizer.step()`` with each group's norm over all ranks (shard-local squared sums,
one all-reduce of ``G + 1`` numbers per step while a strength is > 0), each rank scaling
its own rows; the strengths are checked equal on every rank when set.

Decisions: the controller runs on EVERY rank on those identical statistics (lyactl's
controller is deterministic), so no event is pickled and broadcast and no rank waits on
rank 0's controller; :meth:`FSDPBackend.apply` checks that all ranks hold the same event
(one all-reduce of a CRC-32 of its decisions, MIN and MAX) and raises before touching the
model if they do not (a non-deterministic user controller fails safe).

Surgery: an event becomes the operations of :func:`.operations.plan`; each is split by
FSDP unit (the modules ``fully_shard`` was applied to) and the units are processed one at
a time in model order: :func:`.fsdp_units.open_unit` (gather that unit's parameters and
moments; FSDP removed from it), the unit's share of every operation (the single-process
:func:`.surgery.prune_units` / :func:`.surgery.remove_layer` / :func:`.freeze.freeze_layer`
on the plain full tensors), :func:`.fsdp_units.close_unit` (``fully_shard`` again, moments
cut to the rank's rows, the optimizer's references swapped). Peak extra memory: one unit's
full parameters and moments; the whole unsharded model never exists on a rank. A removed
block leaves as a plain module on the host (its record, for restore). Afterwards the root
re-runs FSDP's lazy init and the layout's axes are re-read (new parameter objects; group
numbering and live ids are kept). Every rank makes the same collectives in the same
order. Not supported here: :class:`~.operations.Reparametrise` extra operations (refused
by name).
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from lyactl.control.groups import Event, GroupStats
from lyactl.errors import InvalidArgumentError, bad_arg

from .backend import TorchBackend
from .flops import model_flops_per_token
from .freeze import freeze_layer, unfreeze_layer, update_prefix
from .fsdp_penalty import ShardedProximalGroupLasso, same_on_every_rank
from .fsdp_stats import ShardedReductionPlan
from .fsdp_units import adopt, close_unit, mesh_of, open_unit, reset_root, unit_params, units
from .groups import ArchitectureAdapter, Layout, adapter_for
from .operations import CutUnits, FreezeLayer, Operation, RemoveLayer, plan
from .surgery import AxisRemoval, SliceRecord, prune_units, remove_layer, restore_layer, restore_units

__all__ = ["FSDPBackend", "event_digest"]


def event_digest(event: Event) -> int:
    """CRC-32 of an event's id and decisions (group, index, action): equal events, equal digests."""
    key = [event.event_id, [(d.group, d.index, d.action.value) for d in event.decisions]]
    return zlib.crc32(json.dumps(key).encode())


class _UnitLayout:
    """The part of a :class:`Layout` that :func:`.surgery.prune_units` reads, restricted
    to the slices of one unit: the cut of one unit is the single-process cut."""

    def __init__(self, layout: Layout, axis: str, live: list[int], params: set[int]) -> None:
        spec = layout.axes[axis]
        self.axes = {axis: dataclasses.replace(spec, slices=tuple(s for s in spec.slices if id(s.param) in params))}
        self.live = {axis: list(live)}

    def live_slices(self, axis: Any, present: Any = None) -> list:
        return list(axis.slices)


class FSDPBackend(TorchBackend):
    """:class:`TorchBackend` for a model wrapped with ``fully_shard`` per block and at the root.

    Parameters
    ----------
    model, optimizer
        The FSDP2 model (every parameter a DTensor) and an optimizer over its parameters.
    block, adapter, adapters, stats_dtype
        As for :class:`TorchBackend`.
    group : process group, optional
        Of the mesh (default: the world).
    fsdp_kwargs : dict, optional
        The ``fully_shard`` arguments besides ``mesh`` used when a unit is sharded again
        (give the ones you wrapped with, e.g. ``mp_policy``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, block: int = 64,
                 adapter: ArchitectureAdapter | None = None, adapters: Sequence[ArchitectureAdapter] = (),
                 stats_dtype: torch.dtype = torch.float32, group: Any = None,
                 fsdp_kwargs: dict[str, Any] | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise InvalidArgumentError(bad_arg("torch.distributed", "an initialised process group", None))
        if not units(model) or units(model)[0] is not model:
            raise InvalidArgumentError(bad_arg("model", "a model with fully_shard applied at the root", type(model).__name__))
        self.model, self.optimizer, self.group = model, optimizer, group
        self.fsdp_kwargs = dict(fsdp_kwargs or {})
        self.adapter = adapter_for(model, adapters) if adapter is None else adapter
        self.layout = Layout(model, self.adapter, block)
        self.stats_dtype = stats_dtype
        self.plan = ShardedReductionPlan(self.layout, group, stats_dtype)
        self.prox = ShardedProximalGroupLasso(self.plan)  # collective: the strengths' check
        self.record: list[dict[str, Any]] = []
        self.held: dict[int, list[tuple[Operation, Any]]] = {}
        self.held_groups: dict[int, set[int]] = {}
        self.step, self.last_stats_step = 0, 0
        self.loss: torch.Tensor | float = float("nan")
        self.lr: float | torch.Tensor | None = None
        update_prefix(self.layout)

    # ---- statistics (the penalty is TorchBackend's, on the sharded prox) ----------
    def statistics(self) -> GroupStats:
        """Synchronised statistics (:mod:`.fsdp_stats`); collective."""
        interval = max(self.step - self.last_stats_step, 1)
        self.last_stats_step = self.step
        stats = self.plan.statistics(self.optimizer, self.layout.pruned_mask(), step=self.step,
                                     lr=float(self.current_lr()), loss=self.loss, interval=interval,
                                     weight_decay=self.weight_decay())
        return dataclasses.replace(stats, flops_per_token=model_flops_per_token(self.model, self.adapter))

    # ---- structural events --------------------------------------------------------
    def _measure(self) -> tuple[float, int | None]:
        dev = self.plan.device
        mem = None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            mem = torch.cuda.memory_allocated(dev)
        return model_flops_per_token(self.model, self.adapter), mem

    def _agree(self, event: Event) -> None:
        if not same_on_every_rank(event_digest(event), self.group, self.plan.device):
            raise InvalidArgumentError(bad_arg(f"event {event.event_id} across ranks", "the same decisions on every "
                                               "rank (a deterministic controller)", "different events"))

    def _unit_of(self) -> dict[int, nn.Module]:
        return {id(p): u for u in units(self.model) for p in unit_params(u)}

    def _touched(self, ops: Sequence[Operation]) -> list[nn.Module]:
        """The units whose parameters ``ops`` change, in model order."""
        owner, wanted = self._unit_of(), set()
        blocks = self.adapter.blocks(self.model)
        for op in ops:
            if isinstance(op, CutUnits):
                for s in self.layout.live_slices(self.layout.axes[op.axis]):
                    wanted.add(id(owner[id(s.param)]))
            elif isinstance(op, (RemoveLayer, FreezeLayer)):
                pos = self.layout.block_ids.index(op.block) if op.block in self.layout.block_ids else None
                if pos is None:
                    raise InvalidArgumentError(bad_arg("block", f"a live block of {self.layout.block_ids}", op.block))
                wanted.update(id(owner[id(p)]) for p in blocks[pos].parameters())
            else:
                raise InvalidArgumentError(bad_arg("operation under FSDP2", "a cut, layer removal or freeze",
                                                   type(op).__name__))
        return [u for u in units(self.model) if id(u) in wanted]

    def _run_on_unit(self, unit: nn.Module, ops: Sequence[Operation], lives: list, out: list) -> None:
        """Open ``unit``, apply its share of each op (records appended to ``out[i]``), close it."""
        opened = open_unit(unit, self.optimizer, self.fsdp_kwargs)
        mine = {id(p) for p in unit_params(unit)}
        removed = False
        self._reread_axes()
        for i, op in enumerate(ops):
            if isinstance(op, CutUnits):
                sub = _UnitLayout(self.layout, op.axis, lives[i], mine)
                if sub.axes[op.axis].slices:
                    out[i].append(prune_units(sub, self.optimizer, op.axis, op.units))
            elif any(u is unit for u in self._block_units(op.block)):
                if isinstance(op, RemoveLayer):
                    out[i].append(remove_layer(self.layout, self.optimizer, op.block))
                    removed = True
                else:
                    out[i].append(freeze_layer(self.layout, op.block))
        if not removed:
            close_unit(opened, self.optimizer)

    def _block_units(self, block: int) -> list[nn.Module]:
        if block not in self.layout.block_ids:
            return []
        return [self.adapter.blocks(self.model)[self.layout.block_ids.index(block)]]

    def _rebuild(self) -> None:
        """After a change of shapes (apply or the inherited restore): the root's lazy state,
        the axes, the frozen prefix, the sharded statistics plan, the penalty's maps
        (strengths kept) and the held cut records' slices (:meth:`_relink`); collective."""
        reset_root(self.model)
        self._reread_axes()
        update_prefix(self.layout)
        self.plan = ShardedReductionPlan(self.layout, self.group, self.stats_dtype)
        self.prox.rebuild(self.plan)
        for eid, done in self.held.items():
            self.held[eid] = self._relink(done)

    def _relink(self, done: list[tuple[Operation, Any]]) -> list[tuple[Operation, Any]]:
        """``done`` with each cut record's slices pointing at the current parameter of their
        name (an undo looks slices up by name): the parameter a slice was cut from has been
        gathered full or re-sharded since, and a record holding it kept it on the device."""
        out = []
        for op, rec in done:
            if isinstance(rec, AxisRemoval):
                spec = self.layout.axes.get(rec.axis)
                now = {s.name: s for s in spec.slices} if spec is not None else {}
                rec = AxisRemoval(rec.axis, rec.units,
                                  tuple(SliceRecord(now.get(r.s.name, r.s), r.data, r.state) for r in rec.slices))
            out.append((op, rec))
        return out

    def apply(self, event: Event, extra: Sequence[Operation] = ()) -> None:
        """Carry out ``event`` on every rank alike, unit by unit (see the module doc);
        collective. On an error the model is left as the failing unit left it (no undo
        across ranks): the error is raised on every rank."""
        if event.event_id in self.held:
            raise InvalidArgumentError(bad_arg("event.event_id", "an event not applied yet", event.event_id))
        if extra:
            raise InvalidArgumentError(bad_arg("extra operations under FSDP2", "none", len(extra)))
        self._agree(event)
        t0, before = time.perf_counter(), self._measure()
        ops = plan(self.layout, event)
        lives = [list(self.layout.live[op.axis]) if isinstance(op, CutUnits) else None for op in ops]
        parts: list[list[Any]] = [[] for _ in ops]
        for unit in self._touched(ops):
            self._run_on_unit(unit, ops, lives, parts)
        for op, live in zip(ops, lives):
            if isinstance(op, CutUnits):
                self.layout.live[op.axis] = [u for u in live if u not in set(op.units)]
        self._rebuild()
        self._hold(event, self._relink([(op, _merge(op, p)) for op, p in zip(ops, parts)]))
        self._log("apply", event, before, t0)

    def _reread_axes(self) -> None:
        """Point the axes of live blocks at the current parameter objects (shapes, sizes)."""
        self.layout.axes.update({a.name: a for a in self.adapter.axes(self.model, self.layout.block_ids)})

    def _undo(self, op: Operation, rec: Any) -> None:
        """Undo one held operation; a removed block comes back and is sharded again."""
        if isinstance(op, RemoveLayer):
            restore_layer(self.layout, self.optimizer, rec)
            close_unit(adopt(rec.module, mesh_of(self.model), self.fsdp_kwargs), self.optimizer)
            return
        if isinstance(op, FreezeLayer):
            opened = open_unit(self._block_units(rec.block_id)[0], self.optimizer, self.fsdp_kwargs)
            unfreeze_layer(self.layout, rec)
            close_unit(opened, self.optimizer)
            return
        self._reread_axes()  # an undo before this one made new parameter objects: stale slices look absent
        owner = self._unit_of()
        touched = {id(owner[id(s.param)]) for s in self.layout.live_slices(self.layout.axes[op.axis])}
        live = list(self.layout.live[op.axis])
        for unit in [u for u in units(self.model) if id(u) in touched]:
            opened = open_unit(unit, self.optimizer, self.fsdp_kwargs)
            self._reread_axes()
            mine = {id(p) for p in unit_params(unit)}
            by_name = {s.name: s for s in self.layout.axes[op.axis].slices if id(s.param) in mine}
            slices = tuple(SliceRecord(by_name[r.s.name], r.data, r.state) for r in rec.slices if r.s.name in by_name)
            restore_units(_UnitLayout(self.layout, op.axis, live, mine), self.optimizer,
                          AxisRemoval(op.axis, rec.units, slices))
            close_unit(opened, self.optimizer)
        self.layout.live[op.axis] = sorted(live + list(rec.units))


def _merge(op: Operation, parts: list[Any]) -> Any:
    """One record per operation: a cut's per-unit removals joined (in unit order)."""
    if isinstance(op, CutUnits):
        return AxisRemoval(op.axis, tuple(sorted(op.units)), tuple(r for part in parts for r in part.slices))
    if len(parts) != 1:
        raise InvalidArgumentError(bad_arg(f"records of {op}", "one", len(parts)))
    return parts[0]
