"""Per-group statistics in one fused pass over the parameters.

For every parameter ``p`` that belongs to some group, elementwise products
``e in {p^2, (p - p_prev)^2, g^2, g p, m^2}`` are reduced over all dimensions but one
axis dimension (``e.sum(other dims)``, a vector of length ``L``) and accumulated with
``index_add_`` into a device tensor ``out[5, n_groups + 1]`` through the precomputed map
position -> group index (slot ``n_groups`` collects positions in no group, the
unprunable remainder). A LAYER group adds ``e.sum()`` of every parameter of its block;
a CHANNEL group its columns across every residual-stream parameter. Every row/column of
a parameter belongs to at most one group per kind.

Parameters of the same shape and group layout (the same matrix in every block, until
surgery makes blocks differ) form a *class* and are reduced together: stacked once, so the
products, reductions and ``index_add_`` run once per class instead of once per parameter
(about 30 kernels per class; a GPT-2-small report went from ~2,000 kernel launches to a few
hundred: on a GPU the pass was bound by launches, not by its O(P) arithmetic).

Cost: O(P) device work, exactly ONE host synchronisation per call (the final ``.cpu()``,
which also carries the loss). Between calls nothing runs; the snapshot ``p_prev`` is the
stacked copy the pass made anyway (memory = one extra copy of the grouped parameters).

Conventions: ``g`` is ``p.grad`` as seen after ``optimizer.step()`` (after any clipping the
user did); ``m`` is AdamW's ``exp_avg`` or SGD's ``momentum_buffer``. Groups with no
gradient (frozen) report NaN ``g_sq``/``gw``; with no first moment NaN ``m_sq``; pruned
groups report NaN everywhere.

Path-end gradient (``gdw``, opt-in with ``measure_path``): at a report the pass keeps the
interval's displacement ``D = w(k) - w(k - K)`` (it computes it for ``dw_sq`` anyway; memory: one
float32 copy of the grouped parameters between a report and the next step); at the NEXT optimizer
step :meth:`ReductionPlan.path_gradient` reduces ``sum_i g_i D_i`` per group on the device, with
``g`` that step's gradient, taken at ``w(k)`` on a mini-batch the path never saw, so
``E[g . D | path] = grad L(w(k)) . D`` (no bias from the path's own noise, which ``g . dw`` over
the same interval would have). The value travels with the next report's host sync (no extra
sync): ``gdw`` at a report describes the interval before the previous one. NaN when the
structure changed in between (the plan is rebuilt), on the first reports, and without
``measure_path``.

Curvature (``curv``, not additive): the Rayleigh quotient of the diagonal second moment
that Adam already keeps, along the group's weights,

    curv_g = s * sum_{i in g} v_i w_i^2 / sum_{i in g} w_i^2,   v_i = exp_avg_sq_i / (1 - beta2^t)

(bias-corrected; ``s`` = ``curv_scale``). The numerator is one more additive row of the same
fused pass (one stack, one product, the same reductions: no extra backward, no extra host
sync); the division by ``w_sq`` happens on the host. What it estimates: ``v_i`` is an EMA
(horizon ``1/(1 - beta2)`` steps) of the squared MINI-BATCH gradient, ``E[gbar_i^2] =
(E g_i)^2 + Var(gbar_i)``. With ``N`` independent examples per step, the per-example
empirical Fisher diagonal ``F_ii = E[g_i^2]`` satisfies ``v_i <= F_ii <= N v_i``, and ``F``
approximates the Gauss-Newton matrix, i.e. the Hessian of the mean loss near a minimum of a
log-likelihood (the loss must be a mean negative log-likelihood in nats: scaling the loss by
``c`` scales ``v`` by ``c^2`` but ``H`` by ``c``). So ``s = 1`` gives a low estimate,
``s = N`` (tokens per step) a high one;
neither bounds ``w^T H w / ||w||^2``: the diagonal drops the off-diagonal terms, the
empirical Fisher uses the data's labels (not the model's) and ignores negative curvature,
and the EMA lags the weights by ~``1/(1 - beta2)`` steps. NaN where a member parameter has
no ``exp_avg_sq`` with ``betas`` and ``step`` (SGD), where ``w_sq = 0``, and on pruned groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lyactl.control.groups import ADDITIVE_FIELDS, GroupStats

from .groups import Layout

__all__ = ["PlanEntry", "ReductionPlan", "FIELDS", "MAX_STACK", "momentum_of", "second_moment_of"]

FIELDS = ADDITIVE_FIELDS  # the fused pass computes the additive statistics (lyactl.control.groups.STATS)
CURV_ROW = len(FIELDS)  # the extra additive row: sum_i v_i w_i^2, divided by w_sq on the host
GDW_ROW = FIELDS.index("gdw")


@dataclass(frozen=True, eq=False)
class PlanEntry:
    """One parameter: ``members`` are ``(dim, gidx)`` with ``gidx`` int64 ``[L]`` on the
    device; ``layer`` its LAYER group (or None); ``groups`` every group it feeds (host)."""

    param: nn.Parameter
    members: tuple[tuple[int, torch.Tensor], ...]
    layer: int | None
    groups: frozenset[int]


def momentum_of(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> torch.Tensor | None:
    """The optimizer's first moment of ``p`` (``exp_avg`` or ``momentum_buffer``), or None."""
    st = optimizer.state.get(p)
    if not st:
        return None
    m = st.get("exp_avg", st.get("momentum_buffer"))
    return m if isinstance(m, torch.Tensor) and m.shape == p.shape else None


def second_moment_of(optimizer: torch.optim.Optimizer, p: nn.Parameter,
                     betas: dict[int, float] | None = None) -> tuple[torch.Tensor, torch.Tensor | float] | None:
    """``(exp_avg_sq, 1 / (1 - beta2^t))`` of ``p`` (Adam-style state), or None without one.

    ``betas`` maps ``id(param)`` to its group's ``beta2`` (built by the caller once per pass).
    The correction is a float when the step counter is a number or a CPU tensor (read with no
    device synchronisation) and a 0-dim device tensor otherwise (``capturable`` / fused Adam).
    """
    st = optimizer.state.get(p)
    beta2 = (betas or {}).get(id(p))
    if not st or beta2 is None or "step" not in st:
        return None
    v, t = st.get("exp_avg_sq"), st["step"]
    if not isinstance(v, torch.Tensor) or v.shape != p.shape:
        return None
    if isinstance(t, torch.Tensor):
        if t.device.type != "cpu":
            return v, 1.0 / (1.0 - beta2 ** t.to(torch.float32))
        t = float(t)  # a CPU scalar: no device synchronisation
    return (v, 1.0 / (1.0 - beta2 ** t)) if t > 0 else None


def _betas(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """``id(param) -> beta2`` for param groups that have ``betas``."""
    return {id(p): float(g["betas"][1]) for g in optimizer.param_groups if "betas" in g for p in g["params"]}


class ReductionPlan:
    """Position -> group maps for all grouped parameters of the current shapes.

    Rebuild after every structural change (the backend does).
    """

    def __init__(self, layout: Layout, dtype: torch.dtype = torch.float32, measure_path: bool = False) -> None:
        self.n_groups = len(layout.groups)
        self.dtype, self.measure_path = dtype, measure_path
        self._path: list[torch.Tensor] | None = None  # per class, the last interval's displacement
        self._gdw: tuple[torch.Tensor, np.ndarray] | None = None  # (device row, has-gradient mask)
        G = self.n_groups
        by_param: dict[int, tuple[nn.Parameter, list, set]] = {}
        for axis_slices in layout.axis_of_param().values():
            for axis, s in axis_slices:
                ug = layout.unit_groups(axis, G)
                n = ug.numel()
                gidx = ug.view(1, n, 1).expand(s.segments, n, s.width).reshape(-1).to(s.param.device)
                entry = by_param.setdefault(id(s.param), (s.param, [], set()))
                entry[1].append((s.dim, gidx))
                entry[2].update(int(g) for g in ug.unique().tolist() if g < G)
        layer_of: dict[int, int] = {}
        blocks = layout.adapter.blocks(layout.model)
        for pos, b in enumerate(layout.block_ids):
            g = layout.index[f"blocks.{b}"]
            for p in blocks[pos].parameters():
                layer_of[id(p)] = g
                by_param.setdefault(id(p), (p, [], set()))[2].add(g)
        self.entries = tuple(
            PlanEntry(p, tuple(mem), layer_of.get(key), frozenset(gs))
            for key, (p, mem, gs) in by_param.items()
        )
        self.device = self.entries[0].param.device if self.entries else torch.device("cpu")
        self.classes = _classes(self.entries, MAX_STACK, G)
        self._prev: dict[int, torch.Tensor] | None = None  # built from the stacks on demand
        self._prev_stacks: list[torch.Tensor] | None = None  # per class, when prev came from them
        self.snapshot()

    @property
    def prev(self) -> dict[int, torch.Tensor]:
        """``id(param) -> `` its value at the last report (the reference for ``dw_sq``);
        views of the stacked snapshot, made on first read (checkpoints read it)."""
        if self._prev is None:
            self._prev = {id(e.param): P[k] for c, P in zip(self.classes, self._prev_stacks)
                          for k, e in enumerate(c.entries)}
        return self._prev

    @prev.setter
    def prev(self, value: dict[int, torch.Tensor]) -> None:  # e.g. loaded from a checkpoint
        self._prev, self._prev_stacks = dict(value), None

    def snapshot(self, stacks: list[torch.Tensor] | None = None) -> None:
        """Take ``stacks`` (per class ``[K, *shape]``, current values) or a fresh stacked copy
        of every grouped parameter as the reference for the next ``dw_sq``."""
        if stacks is None:
            with torch.no_grad():
                stacks = [torch.stack([e.param for e in c.entries]) for c in self.classes]
        self._prev, self._prev_stacks = None, stacks

    def _prev_of(self, ci: int) -> torch.Tensor:
        if self._prev_stacks is not None:
            return self._prev_stacks[ci]
        return torch.stack([self._prev[id(e.param)] for e in self.classes[ci].entries])

    def path_gradient(self) -> bool:
        """``sum_i g_i D_i`` per group into a device row (no sync), with ``g`` the gradients now
        and ``D`` the displacement kept at the last report; call once, at the step after a
        report, before ``zero_grad``. False (nothing done) when no displacement is pending."""
        if self._path is None:
            return False
        G = self.n_groups
        row = torch.zeros(G + 1, dtype=self.dtype, device=self.device)
        has = np.zeros(G + 1, dtype=bool)
        with torch.no_grad():
            for c, D in zip(self.classes, self._path):
                sel, gs = c.present([e.param.grad for e in c.entries], has)
                if gs:  # D is not needed after this: multiply in place (no third copy)
                    X = D.mul_(torch.stack(gs)) if sel is None else D[sel].mul_(torch.stack(gs))
                    c.reduce(row, X, sel)
        self._path, self._gdw = None, (row, has)
        return True

    def compute(self, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, np.ndarray, list, float]:
        """Device ``out[len(FIELDS) + 1, n_groups + 1]`` (the additive fields, then the curvature
        numerator), host masks ``has_g``, ``has_m``, ``lacks_v``, ``has_gdw`` (``[4, n_groups + 1]``), the stacked
        current parameters per class (the next snapshot) and the bias correction still to
        apply to the numerator on the host (``1 / (1 - beta2^t)`` when every parameter shares
        it, the usual case: no device multiply; else 1, applied per class); no sync."""
        G = self.n_groups
        out = torch.zeros(len(FIELDS) + 1, G + 1, dtype=self.dtype, device=self.device)
        has_g = np.zeros(G + 1, dtype=bool)
        has_m = np.zeros(G + 1, dtype=bool)
        lacks_v = np.zeros(G + 1, dtype=bool)
        betas = _betas(optimizer)
        found = [[second_moment_of(optimizer, e.param, betas) for e in c.entries] for c in self.classes]
        corr = {f[1] if isinstance(f[1], float) else None for fs in found for f in fs if f is not None}
        common = corr.pop() if len(corr) == 1 and None not in corr else None
        stacks, path = [], []
        with torch.no_grad():
            for ci, c in enumerate(self.classes):
                P = torch.stack([e.param for e in c.entries])  # no_grad: no history, no detach needed
                stacks.append(P)
                P32, D = P.float(), (P - self._prev_of(ci)).float()
                if self.measure_path:  # kept to the next step; otherwise freed with this class
                    path.append(D)
                W2 = P32 * P32
                c.reduce(out[0], W2, None)
                c.reduce(out[1], D * D, None)
                _curvature(c, found[ci], common is None, W2, out[CURV_ROW], lacks_v)
                sel, gs = c.present([e.param.grad for e in c.entries], has_g)
                if gs:
                    Gr = torch.stack(gs).float()
                    Ps = P32 if sel is None else P32[sel]
                    c.reduce(out[2], Gr * Gr, sel)
                    c.reduce(out[3], Gr * Ps, sel)
                sel, ms = c.present([momentum_of(optimizer, e.param) for e in c.entries], has_m)
                if ms:
                    M = torch.stack(ms).float()
                    c.reduce(out[4], M * M, sel)
            has_gdw = np.zeros(G + 1, dtype=bool)
            if self._gdw is not None:
                out[GDW_ROW], has_gdw = self._gdw
        self._gdw, self._path = None, path if self.measure_path else None  # path is [] when not measuring
        return out, np.stack([has_g, has_m, lacks_v, has_gdw]), stacks, 1.0 if common is None else common

    def statistics(self, optimizer: torch.optim.Optimizer, pruned: list[bool], *, step: int, lr: float,
                   loss: torch.Tensor | float, interval: int, weight_decay: float,
                   curv_scale: float = 1.0) -> GroupStats:
        """One :class:`GroupStats`; ONE host sync here (the ``.cpu()`` below). Refreshes the
        snapshot afterwards. ``curv_scale``: ``s`` of the module docstring."""
        G = self.n_groups
        out, masks, stacks, corr = self.compute(optimizer)
        has_g, has_m, lacks_v, has_gdw = masks[:, :G]
        loss_t = torch.as_tensor(loss).detach().to(self.device, self.dtype).reshape(1)
        host = torch.cat([out[:, :G].reshape(-1), loss_t]).cpu().numpy().astype(np.float64)  # one host sync here
        F = host[:-1].reshape(len(FIELDS) + 1, G)
        F[2:4, ~has_g] = math.nan
        F[4, ~has_m] = math.nan
        F[CURV_ROW, lacks_v] = math.nan
        F[GDW_ROW, ~has_gdw] = math.nan
        F[:, np.asarray(pruned, dtype=bool)] = math.nan
        self.snapshot(stacks)
        arrays = {name: F[i].copy() for i, name in enumerate(FIELDS)}
        with np.errstate(divide="ignore", invalid="ignore"):
            curv = np.where(F[0] > 0, (curv_scale * corr) * F[CURV_ROW] / F[0], math.nan)
        return GroupStats(step=step, lr=float(lr), loss=float(host[-1]), curv=curv,
                          interval=interval, weight_decay=float(weight_decay), **arrays)


def _curvature(c: "_Class", found: list, correct: bool, W2: torch.Tensor, row: torch.Tensor,
               lacks_v: np.ndarray) -> None:
    """Add ``sum_i v_i w_i^2`` per group of class ``c`` into ``row`` (``found``: the entries'
    :func:`second_moment_of`; ``correct``: multiply each entry by its bias correction here);
    mark ``lacks_v`` for the groups of entries with no second moment (their ``curv`` is NaN,
    not a partial sum)."""
    for k, f in enumerate(found):
        if f is None:
            lacks_v[c.groups[k]] = True
    sel, vs = c.present([None if f is None else f[0] for f in found], np.zeros_like(lacks_v))  # mask unused
    if not vs:
        return
    V = torch.stack(vs).float()
    if correct:
        corr = [f[1] for f in found if f is not None]
        scale = torch.stack([torch.as_tensor(x, dtype=torch.float32).to(W2.device) for x in corr])
        V = V * scale.view(-1, *([1] * (W2.dim() - 1)))
    c.reduce(row, V.mul_(W2 if sel is None else W2[sel]), sel)


@dataclass(frozen=True, eq=False)
class _Class:
    """Parameters of one shape, dtype, device and group layout, reduced as one stack.

    ``gidx[j]`` is ``[K, L_j]``: row ``k`` is entry ``k``'s position -> group map along its
    ``j``-th member dimension ``dims[j]``; ``layers`` ``[K]`` their LAYER groups (or None).
    """

    entries: tuple[PlanEntry, ...]
    dims: tuple[int, ...]
    gidx: tuple[torch.Tensor, ...]
    layers: torch.Tensor | None
    groups: tuple[np.ndarray, ...]  # per entry, every group it feeds (host, for has_g/has_m)
    overlaps: tuple[tuple[int, int], ...] = ()  # member pairs (j1, j2) that share a group

    def present(self, tensors: list[torch.Tensor | None], mask: np.ndarray
                ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """``(sel, found)``: the entries whose tensor (grad, moment) exists with the
        parameter's shape; ``sel`` None when all do (no gather needed). Marks ``mask``."""
        keep = [k for k, (e, t) in enumerate(zip(self.entries, tensors))
                if t is not None and t.shape == e.param.shape]
        for k in keep:
            mask[self.groups[k]] = True
        found = [tensors[k] for k in keep]  # grads and optimizer moments carry no history
        if len(keep) == len(self.entries):
            return None, found
        return torch.tensor(keep, dtype=torch.long, device=self.entries[0].param.device), found

    def reduce(self, row: torch.Tensor, X: torch.Tensor, sel: torch.Tensor | None) -> None:
        """Add the per-group sums of ``X`` (``[k, *shape]``, entries ``sel`` or all) into
        ``row`` (``[n_groups + 1]``): one sum and one ``index_add_`` per member dimension,
        one more pair for the LAYER groups."""
        k, total = X.shape[0], None
        for dim, gidx in zip(self.dims, self.gidx):
            other = [d + 1 for d in range(X.dim() - 1) if d != dim]
            R = (X.sum(dim=other) if other else X).to(row.dtype)  # [k, L]
            total = R.sum(1) if total is None else total
            g = gidx if sel is None else gidx[sel]
            row.index_add_(0, g.reshape(-1), R.reshape(-1))
        for j1, j2 in self.overlaps:
            self._count_once(row, X, j1, j2, sel)
        if self.layers is not None:
            if total is None:
                total = X.reshape(k, -1).sum(1).to(row.dtype)
            row.index_add_(0, self.layers if sel is None else self.layers[sel], total)


    def _count_once(self, row: torch.Tensor, X: torch.Tensor, j1: int, j2: int, sel: torch.Tensor | None) -> None:
        """Subtract what the two member dimensions ``j1``, ``j2`` both gave one group: an
        element in group ``g``'s slice along both dims (a state matrix sliced by rows and
        columns) was added twice. ``C[k, a] = sum_b R2[k, a, b] [g1[a] = g2[b]]``, removed from
        ``g1[a]``'s sum. Cost: one ``[k, L1, L2]`` temporary."""
        d1, d2 = self.dims[j1], self.dims[j2]
        other = [d + 1 for d in range(X.dim() - 1) if d not in (d1, d2)]
        R2 = (X.sum(dim=other) if other else X).to(row.dtype)
        if d1 > d2:
            R2 = R2.transpose(1, 2)
        g1, g2 = (self.gidx[j1], self.gidx[j2]) if sel is None else (self.gidx[j1][sel], self.gidx[j2][sel])
        same = g1[:, :, None] == g2[:, None, :]
        row.index_add_(0, g1.reshape(-1), -(R2 * same).sum(2).reshape(-1))


MAX_STACK = 1 << 26
"""Largest stack (elements) a class is reduced in: 256 MiB of float32 per temporary, so a
large model's 32 copies of one matrix are split into a few stacks, not one that doubles
the memory of the parameters it copies."""


def _overlaps(gidx: tuple[torch.Tensor, ...], n_groups: int) -> tuple[tuple[int, int], ...]:
    """Pairs of member dimensions whose position -> group maps share a group (< n_groups):
    their common elements must be counted once (:meth:`_Class._count_once`)."""
    sets = [set(g.unique().tolist()) - {n_groups} for g in gidx]
    return tuple((a, b) for a in range(len(sets)) for b in range(a + 1, len(sets)) if sets[a] & sets[b])


def _classes(entries: tuple[PlanEntry, ...], max_stack: int = MAX_STACK, n_groups: int = -1) -> tuple[_Class, ...]:
    """Partition ``entries`` by (shape, dtype, device, member dims, has a LAYER group), in
    chunks of at most ``max_stack`` elements (at least one parameter each); ``n_groups`` is
    the slot of units in no group."""
    by_key: dict[tuple, list[PlanEntry]] = {}
    for e in entries:
        p = e.param
        key = (tuple(p.shape), p.dtype, str(p.device), tuple(d for d, _ in e.members), e.layer is None)
        by_key.setdefault(key, []).append(e)
    chunks = []
    for members in by_key.values():
        per = max(1, max_stack // max(1, members[0].param.numel()))
        chunks += [members[i:i + per] for i in range(0, len(members), per)]
    out = []
    for members in chunks:
        dims = tuple(d for d, _ in members[0].members)
        gidx = tuple(torch.stack([e.members[j][1] for e in members]) for j in range(len(dims)))
        dev = members[0].param.device
        layers = None if members[0].layer is None else torch.tensor([e.layer for e in members], device=dev)
        groups = tuple(np.array(sorted(e.groups), dtype=np.int64) for e in members)
        out.append(_Class(tuple(members), dims, gidx, layers, groups, _overlaps(gidx, n_groups)))
    return tuple(out)
