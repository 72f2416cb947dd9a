"""Per-group statistics in one fused pass over the parameters.

For every parameter ``p`` that belongs to some group, elementwise products
``e in {p^2, (p - p_prev)^2, g^2, g p, m^2}`` are reduced over all dimensions but one
axis dimension (``e.sum(other dims)``, a vector of length ``L``) and accumulated with
``index_add_`` into a device tensor ``out[5, n_groups + 1]`` through the precomputed map
position -> group index (slot ``n_groups`` collects positions in no group, the
unprunable remainder). A LAYER group adds ``e.sum()`` of every parameter of its block;
a CHANNEL group its columns across every residual-stream parameter. Every row/column of
a parameter belongs to at most one group per kind.

Cost: O(P) device work, a handful of kernels per parameter, and exactly ONE host
synchronisation per call (the final ``.cpu()``, which also carries the loss). Between
calls nothing runs except keeping the snapshot ``p_prev`` (a copy of every grouped
parameter, refreshed at each call: memory = one extra copy of those parameters).

Conventions: ``g`` is ``p.grad`` as seen after ``optimizer.step()`` (after any clipping the
user did); ``m`` is AdamW's ``exp_avg`` or SGD's ``momentum_buffer``. Groups with no
gradient (frozen) report NaN ``g_sq``/``gw``; with no first moment NaN ``m_sq``; pruned
groups report NaN everywhere; ``curv`` is always NaN here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lyactl.groups import GroupStats

from .groups import Layout

__all__ = ["PlanEntry", "ReductionPlan", "FIELDS", "momentum_of"]

FIELDS = ("w_sq", "dw_sq", "g_sq", "gw", "m_sq")


@dataclass(frozen=True, eq=False)
class PlanEntry:
    """One parameter: ``members`` are ``(dim, gidx)`` with ``gidx`` int64 ``[L]`` on the
    device; ``layer`` its LAYER group (or None); ``groups`` every group it feeds (host)."""

    param: nn.Parameter
    members: tuple[tuple[int, torch.Tensor], ...]
    layer: int | None
    groups: frozenset[int]
    member_groups: tuple[frozenset[int], ...] = ()

    def restricted(self, keep: set[int]) -> PlanEntry | None:
        """This entry with only the members (and layer) holding a group of ``keep``;
        None when none does."""
        mem = tuple((m, gs) for m, gs in zip(self.members, self.member_groups) if gs & keep)
        layer = self.layer if self.layer in keep else None
        if not mem and layer is None:
            return None
        return PlanEntry(self.param, tuple(m for m, _ in mem), layer, self.groups & keep, tuple(g for _, g in mem))


def momentum_of(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> torch.Tensor | None:
    """The optimizer's first moment of ``p`` (``exp_avg`` or ``momentum_buffer``), or None."""
    st = optimizer.state.get(p)
    if not st:
        return None
    m = st.get("exp_avg", st.get("momentum_buffer"))
    return m if isinstance(m, torch.Tensor) and m.shape == p.shape else None


class ReductionPlan:
    """Position -> group maps for all grouped parameters of the current shapes.

    Rebuild after every structural change (the backend does).
    """

    def __init__(self, layout: Layout, dtype: torch.dtype = torch.float32) -> None:
        self.n_groups = len(layout.groups)
        self.dtype = dtype
        G = self.n_groups
        by_param: dict[int, tuple[nn.Parameter, list, set]] = {}
        for axis_slices in layout.axis_of_param().values():
            for axis, s in axis_slices:
                ug = layout.unit_groups(axis, G)
                n = ug.numel()
                gidx = ug.view(1, n, 1).expand(s.segments, n, s.width).reshape(-1).to(s.param.device)
                entry = by_param.setdefault(id(s.param), (s.param, [], set()))
                gs = frozenset(int(g) for g in ug.unique().tolist() if g < G)
                entry[1].append(((s.dim, gidx), gs))
                entry[2].update(gs)
        layer_of: dict[int, int] = {}
        blocks = layout.adapter.blocks(layout.model)
        for pos, b in enumerate(layout.block_ids):
            g = layout.index[f"blocks.{b}"]
            for p in blocks[pos].parameters():
                layer_of[id(p)] = g
                by_param.setdefault(id(p), (p, [], set()))[2].add(g)
        self.entries = tuple(
            PlanEntry(p, tuple(m for m, _ in mem), layer_of.get(key), frozenset(gs), tuple(g for _, g in mem))
            for key, (p, mem, gs) in by_param.items()
        )
        self.device = self.entries[0].param.device if self.entries else torch.device("cpu")
        self.prev: dict[int, torch.Tensor] = {}
        self.snapshot()

    def snapshot(self) -> None:
        """Copy every grouped parameter (the reference for ``dw_sq``)."""
        self.prev = {id(e.param): e.param.detach().clone() for e in self.entries}

    def accumulate(self, out: torch.Tensor, e: PlanEntry, E: torch.Tensor, rows: list[int]) -> None:
        """Add the reductions of ``E`` (``[len(rows), *p.shape]``) into ``out[rows]``."""
        total = None
        for dim, gidx in e.members:
            other = [d + 1 for d in range(E.dim() - 1) if d != dim]
            R = (E.sum(dim=other) if other else E).to(out.dtype)
            total = R.sum(1) if total is None else total
            if len(rows) == out.shape[0]:
                out.index_add_(1, gidx, R)
            else:
                for j, row in enumerate(rows):
                    out[row].index_add_(0, gidx, R[j])
        if e.layer is not None:
            total = E.reshape(len(rows), -1).sum(1).to(out.dtype) if total is None else total
            out[rows, e.layer] += total

    def compute(self, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Device ``out[5, n_groups + 1]`` plus host masks ``has_g``, ``has_m`` (no sync)."""
        G = self.n_groups
        out = torch.zeros(len(FIELDS), G + 1, dtype=self.dtype, device=self.device)
        has_g = np.zeros(G + 1, dtype=bool)
        has_m = np.zeros(G + 1, dtype=bool)
        with torch.no_grad():
            for e in self.entries:
                p = e.param.detach().float()
                d = p - self.prev[id(e.param)].float()
                parts, rows = [p * p, d * d], [0, 1]
                g = e.param.grad
                if g is not None and g.shape == p.shape:
                    gf = g.detach().float()
                    parts += [gf * gf, gf * p]
                    rows += [2, 3]
                    has_g[list(e.groups)] = True
                m = momentum_of(optimizer, e.param)
                if m is not None:
                    mf = m.detach().float()
                    parts.append(mf * mf)
                    rows.append(4)
                    has_m[list(e.groups)] = True
                self.accumulate(out, e, torch.stack(parts), rows)
        return out, has_g, has_m

    def statistics(self, optimizer: torch.optim.Optimizer, pruned: list[bool], *, step: int, lr: float,
                   loss: torch.Tensor | float, interval: int, weight_decay: float) -> GroupStats:
        """One :class:`GroupStats`; ONE host sync here (the ``.cpu()`` below). Refreshes the
        snapshot afterwards."""
        G = self.n_groups
        out, has_g, has_m = self.compute(optimizer)
        loss_t = torch.as_tensor(loss).detach().to(self.device, self.dtype).reshape(1)
        host = torch.cat([out[:, :G].reshape(-1), loss_t]).cpu().numpy().astype(np.float64)  # one host sync here
        F = host[:-1].reshape(len(FIELDS), G)
        F[2:4, ~has_g[:G]] = math.nan
        F[4, ~has_m[:G]] = math.nan
        F[:, np.asarray(pruned, dtype=bool)] = math.nan
        self.snapshot()
        arrays = {name: F[i].copy() for i, name in enumerate(FIELDS)}
        return GroupStats(step=step, lr=float(lr), loss=float(host[-1]), curv=np.full(G, math.nan),
                          interval=interval, weight_decay=float(weight_decay), **arrays)
