"""Statistics of an FSDP2-sharded model: shard-local sums, one all-reduce.

Every additive statistic (``lyactl.control.groups.ADDITIVE_FIELDS``: ``w_sq``, ``dw_sq``,
``g_sq``, ``gw``, ``m_sq``) of group ``g`` is a sum over the group's elements,
``S_g = sum_{e in g} x_e``. The elements of a parameter are partitioned over the ranks by
rows (``Shard(0)``), so ``S_g = sum_r S_g^(r)`` with ``S_g^(r)`` the sum over rank ``r``'s
rows: each rank reduces its local shard (``DTensor.to_local()``) with the position ->
group map of :mod:`.stats` cut to its rows, and one all-reduce SUM adds the shards.

How a group's units map to shard rows: an axis dimension ``d`` of a parameter carries the
map ``gidx`` (length ``L`` = the dimension's size). If ``d = 0`` (the sharded dimension:
``q``/``k``/``v``/``fc`` rows of a head or MLP axis, ``o``/``proj`` rows of the channel
axis, norm weights) rank ``r`` holds rows ``[start, start + n)`` and uses
``gidx[start:start + n]``; if ``d > 0`` (a column axis) every rank holds all columns of its
rows and uses ``gidx`` whole. LAYER sums and the count-once correction of an element in a
group along two dims (:meth:`.stats._Class._count_once`) are elementwise, hence additive
too. The reduction itself is :class:`.stats._Class.reduce` with one parameter per class,
the same arithmetic as the single-process pass.

The packed result (``5 G`` sums, ``G`` has-gradient and ``G`` has-moment counts, the
loss) is all-reduced (SUM; the loss divided by ``R``: the mean of the ranks' losses) and
rank 0's copy broadcast, so every rank holds bitwise identical :class:`GroupStats`. Cost:
O(P / R) device work per rank, two collectives of ``7 G + 1`` float64 numbers, one host
sync. Launches: about 15 kernels per parameter (no stacking across parameters; fine at
the scale of a block list, a candidate for the stacked classes of :mod:`.stats` later).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from lyactl.control.groups import GroupStats

from .groups import Layout
from .fsdp_units import shard_rows
from .stats import FIELDS, PlanEntry, _Class, _overlaps, momentum_of

__all__ = ["ShardedReductionPlan", "local"]


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """The rank's shard of a DTensor (a plain tensor is returned as it is)."""
    return t.to_local() if isinstance(t, DTensor) else t


def _rows(p: torch.Tensor) -> tuple[int, int]:
    """``(start, n)`` of this rank's rows of ``p`` (all rows for a plain tensor)."""
    if not isinstance(p, DTensor):
        return 0, p.shape[0]
    mesh = p.device_mesh
    start, n = shard_rows(p.shape[0], mesh.size(), mesh.get_local_rank())
    if n != p.to_local().shape[0]:
        raise RuntimeError(f"FSDP2 shard of {tuple(p.shape)}: expected {n} rows from {start}, "
                           f"found {p.to_local().shape[0]}")
    return start, n


class ShardedReductionPlan:
    """Position -> group maps of every grouped parameter, cut to this rank's rows.

    The counterpart of :class:`.stats.ReductionPlan` for DTensor parameters; its
    ``classes`` are the per-parameter reducers (one entry each, maps cut to the rank's
    rows), which :mod:`.fsdp_penalty` reduces and scales. Rebuild after every structural
    change (the backend does).
    """

    def __init__(self, layout: Layout, group: Any = None, dtype: torch.dtype = torch.float32) -> None:
        self.n_groups, self.dtype, self.group = len(layout.groups), dtype, group
        G = self.n_groups
        by_param: dict[int, tuple[Any, list, set]] = {}
        for axis_slices in layout.axis_of_param().values():
            for axis, s in axis_slices:
                ug = layout.unit_groups(axis, G)
                n = ug.numel()
                gidx = ug.view(1, n, 1).expand(s.segments, n, s.width).reshape(-1)
                if s.dim == 0:
                    start, rows = _rows(s.param)
                    gidx = gidx[start:start + rows]
                entry = by_param.setdefault(id(s.param), (s.param, [], set()))
                entry[1].append((s.dim, gidx.to(local(s.param).device)))
                entry[2].update(int(g) for g in ug.unique().tolist() if g < G)
        layer_of: dict[int, int] = {}
        for pos, b in enumerate(layout.block_ids):
            for p in layout.adapter.blocks(layout.model)[pos].parameters():
                layer_of[id(p)] = layout.index[f"blocks.{b}"]
                by_param.setdefault(id(p), (p, [], set()))[2].add(layer_of[id(p)])
        self.entries = tuple(PlanEntry(p, tuple(m), layer_of.get(k), frozenset(gs)) for k, (p, m, gs) in by_param.items())
        self.device = local(self.entries[0].param).device if self.entries else torch.device("cpu")
        self.reducers = tuple(self._reducer(e) for e in self.entries)
        self.classes = self.reducers  # the stacked-class interface of .stats.ReductionPlan, one parameter each
        self._prev = {id(e.param): local(e.param).detach().clone() for e in self.entries}

    def _reducer(self, e: PlanEntry) -> _Class:
        dev = local(e.param).device
        gidx = tuple(g.view(1, -1) for _, g in e.members)
        layers = None if e.layer is None else torch.tensor([e.layer], device=dev)
        return _Class((e,), tuple(d for d, _ in e.members), gidx, layers, (), _overlaps(gidx, self.n_groups))

    @property
    def prev(self) -> dict[int, torch.Tensor]:
        """``id(param) ->`` its value at the last report, as a DTensor laid out like the
        parameter (what :func:`.backend_state.loop_state` saves)."""
        return {id(e.param): (DTensor.from_local(self._prev[id(e.param)], e.param.device_mesh, e.param.placements,
                                                 run_check=False, shape=e.param.shape, stride=e.param.stride())
                              if isinstance(e.param, DTensor) else self._prev[id(e.param)]) for e in self.entries}

    @prev.setter
    def prev(self, value: dict[int, torch.Tensor]) -> None:
        self._prev = {k: local(v).detach().clone() for k, v in value.items()}

    def path_gradient(self) -> bool:
        """Not measured under FSDP (``gdw`` is NaN): nothing to do."""
        return False

    def compute(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Local ``[(len(FIELDS) + 2) G]`` float64: the shard sums per group, has-gradient, has-moment."""
        G = self.n_groups
        out = torch.zeros(len(FIELDS), G + 1, dtype=self.dtype, device=self.device)
        has = torch.zeros(2, G + 1, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for e, c in zip(self.entries, self.reducers):
                P = local(e.param).float()
                D = P - self._prev[id(e.param)].float()
                c.reduce(out[0], (P * P)[None], None)
                c.reduce(out[1], (D * D)[None], None)
                g = e.param.grad
                if g is not None and g.shape == e.param.shape:
                    g = local(g).float()
                    c.reduce(out[2], (g * g)[None], None)
                    c.reduce(out[3], (g * P)[None], None)
                    has[0, sorted(e.groups)] = 1.0
                m = momentum_of(optimizer, e.param)
                if m is not None:
                    m = local(m).float()
                    c.reduce(out[4], (m * m)[None], None)
                    has[1, sorted(e.groups)] = 1.0
        return torch.cat([out[:, :G].to(torch.float64).reshape(-1), has[:, :G].reshape(-1)])

    def statistics(self, optimizer: torch.optim.Optimizer, pruned: list[bool], *, step: int, lr: float,
                   loss: torch.Tensor | float, interval: int, weight_decay: float) -> GroupStats:
        """Synchronised :class:`GroupStats` (identical on every rank); refreshes the snapshot."""
        G, group = self.n_groups, self.group
        loss_t = torch.as_tensor(loss).detach().to(self.device, torch.float64).reshape(1)
        t = torch.cat([self.compute(optimizer), loss_t])
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        t[-1] /= dist.get_world_size(group)
        dist.broadcast(t, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        host = t.cpu().numpy()  # one host sync here
        nf = len(FIELDS)
        F = host[:nf * G].reshape(nf, G).copy()
        has_g, has_m = host[nf * G:(nf + 1) * G] > 0, host[(nf + 1) * G:(nf + 2) * G] > 0
        F[2:4, ~has_g] = math.nan
        F[4, ~has_m] = math.nan
        F[FIELDS.index("gdw")] = math.nan  # the path-end gradient is not measured under FSDP
        F[:, np.asarray(pruned, dtype=bool)] = math.nan
        self._prev = {id(e.param): local(e.param).detach().clone() for e in self.entries}
        arrays = {name: F[i].copy() for i, name in enumerate(FIELDS)}
        return GroupStats(step=step, lr=float(lr), loss=float(host[-1]), curv=np.full(G, math.nan),
                          interval=interval, weight_decay=float(weight_decay), **arrays)
