"""TorchBackend: the :class:`lyactl.control.protocol.Backend` for PyTorch models.

Ties together group discovery (:mod:`.groups`), statistics (:mod:`.stats`), surgery
(:mod:`.operations`, :mod:`.surgery`), freezing (:mod:`.freeze`) and the proximal penalty (:mod:`.penalty`).

Events: what each decision means is said once, in :func:`.operations.plan`: a PRUNE
decision on a width group removes its units (decisions on the same axis in one event are
applied as one cut); on a LAYER group it removes the block. A FREEZE decision freezes a
LAYER group (width groups cannot be frozen). Extra operations (a reparametrisation of a
state-space layer) ride along with an event. An event is applied atomically (on error, the parts already applied are undone). :meth:`restore` undoes a
held event exactly: given an event whose ``event_id`` was applied it undoes that event;
given another event, every held event containing one of its RESTORE decisions' groups
is undone whole. :meth:`release` drops what is held (same matching).

``record`` holds one dict per apply/restore: event id, kind, step, training FLOPs/token
before and after, CUDA memory allocated before/after (None off CUDA), seconds spent.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import Action, Constraint, Event, Group, GroupStats

from .flops import model_flops_per_token
from .flops_model import flops_with
from .freeze import update_prefix
from .groups import ArchitectureAdapter, Layout, adapter_for
from .penalty import ProximalGroupLasso
from .stats import ReductionPlan
from .operations import Operation, plan

__all__ = ["TorchBackend"]


class TorchBackend:
    """PyTorch backend.

    Parameters
    ----------
    model, optimizer
        The model (supported by an :class:`ArchitectureAdapter`) and its optimizer
        (AdamW, Adam or SGD; any optimizer whose state tensors have the parameter's shape).
    block : int
        Units per MLP / channel group (keep widths at multiples of 64).
    adapter : ArchitectureAdapter, optional
        Default: the first of ``adapters`` (then the built-in GPT adapter) that supports it.
    live, block_ids
        Live unit ids and block ids of an already pruned model (see :mod:`.checkpoint`).
    stats_dtype : torch.dtype
        Accumulation dtype of the statistics.
    curv_scale : float
        Scale of the Adam second-moment curvature estimate ``curv`` (:mod:`.stats`): 1 gives
        the low estimate, the number of tokens per optimizer step the high one.
    measure_path : bool
        Report ``gdw``, the path-end gradient statistic (:mod:`.stats`) that the settled-group
        freeze certificate reads (:mod:`lyactl.control.settled`). Cost: one float32 copy of the
        grouped parameters held from a report to the next step, one fused reduction there.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, block: int = 64,
                 adapter: ArchitectureAdapter | None = None, adapters: Sequence[ArchitectureAdapter] = (),
                 live: dict[str, Sequence[int]] | None = None, block_ids: Sequence[int] | None = None,
                 stats_dtype: torch.dtype = torch.float32, curv_scale: float = 1.0,
                 measure_path: bool = False) -> None:
        if not (math.isfinite(curv_scale) and curv_scale > 0):
            raise InvalidArgumentError(bad_arg("curv_scale", "a finite number > 0", curv_scale))
        self.model, self.optimizer = model, optimizer
        self.adapter = adapter_for(model, adapters) if adapter is None else adapter
        self.layout = Layout(model, self.adapter, block, live, block_ids)
        self.stats_dtype, self.curv_scale, self.measure_path = stats_dtype, float(curv_scale), bool(measure_path)
        self.plan = ReductionPlan(self.layout, stats_dtype, self.measure_path)
        self.prox = ProximalGroupLasso(self.plan)
        self.record: list[dict[str, Any]] = []
        self.held: dict[int, list[tuple[Operation, Any]]] = {}
        self.held_groups: dict[int, set[int]] = {}
        self.step = 0
        self.last_stats_step = 0
        self.loss: torch.Tensor | float = math.nan
        self.lr: float | torch.Tensor | None = None
        update_prefix(self.layout)

    # ---- Backend protocol: description -------------------------------------------
    def groups(self) -> Sequence[Group]:
        return self.layout.groups

    def constraints(self) -> Sequence[Constraint]:
        return self.layout.cons

    # ---- per-step inputs ----------------------------------------------------------
    def observe_step(self, loss: torch.Tensor | float, lr: float | torch.Tensor | None = None) -> None:
        """Count one optimizer step and keep its loss (a tensor is kept, not synced); at the
        step after a report, reduce the path-end gradient (``measure_path``; no sync)."""
        self.plan.path_gradient()
        self.step += 1
        self.loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        self.lr = lr

    def current_lr(self) -> float | torch.Tensor:
        return self.optimizer.param_groups[0]["lr"] if self.lr is None else self.lr

    def apply_penalty(self) -> None:
        """The proximal group-lasso step (call after ``optimizer.step()``; no host sync)."""
        self.prox.apply(self.current_lr())

    def weight_decay(self) -> float:
        """Decoupled weight decay of the first param group (0 for coupled L2)."""
        pg = self.optimizer.param_groups[0]
        decoupled = isinstance(self.optimizer, torch.optim.AdamW) or bool(pg.get("decoupled_weight_decay", False))
        return float(pg.get("weight_decay", 0.0)) if decoupled else 0.0

    def statistics(self) -> GroupStats:
        """Per-group statistics since the last call; one host sync."""
        interval = max(self.step - self.last_stats_step, 1)
        self.last_stats_step = self.step
        stats = self.plan.statistics(self.optimizer, self.layout.pruned_mask(), step=self.step,
                                     lr=float(self.current_lr()), loss=self.loss, interval=interval,
                                     weight_decay=self.weight_decay(), curv_scale=self.curv_scale)
        return dataclasses.replace(stats, flops_per_token=model_flops_per_token(self.model, self.adapter))

    def set_penalty(self, strength: np.ndarray) -> None:
        self.prox.set_strength(strength)

    def flops_model(self, status: np.ndarray) -> float:
        """Training FLOPs/token with ``status`` (0 active, 1 frozen, 2 pruned per group)
        applied to the model as it is now, counted from the shapes
        (:func:`~.flops_model.flops_with`; :class:`lyactl.control.protocol.CountsFlops`)."""
        return flops_with(self.layout, status)

    # ---- structural events --------------------------------------------------------
    def _measure(self) -> tuple[float, int | None]:
        dev = self.plan.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            return model_flops_per_token(self.model, self.adapter), torch.cuda.memory_allocated(dev)
        return model_flops_per_token(self.model, self.adapter), None

    def _rebuild(self) -> None:
        update_prefix(self.layout)
        self.plan = ReductionPlan(self.layout, self.stats_dtype, self.measure_path)
        self.prox.rebuild(self.plan)

    def _log(self, kind: str, event: Event, before: tuple, t0: float) -> None:
        after = self._measure()
        self.record.append({"event_id": event.event_id, "kind": kind, "step": self.step,
                            "flops_per_token_before": before[0], "flops_per_token_after": after[0],
                            "cuda_allocated_before": before[1], "cuda_allocated_after": after[1],
                            "seconds": time.perf_counter() - t0})

    def apply(self, event: Event, extra: Sequence[Operation] = ()) -> None:
        """Carry out ``event`` (prune / freeze, :func:`~.operations.plan`) and the ``extra``
        operations after it (e.g. a :class:`~.operations.Reparametrise`), keeping what was
        removed for restore: all or nothing (on error, what was applied is undone)."""
        if event.event_id in self.held:
            raise InvalidArgumentError(bad_arg("event.event_id", "an event not applied yet", event.event_id))
        t0, before = time.perf_counter(), self._measure()
        done: list[tuple[Operation, Any]] = []
        try:
            for op in plan(self.layout, event, extra):
                done.append((op, op.apply(self.layout, self.optimizer)))
        except Exception:
            for op, rec in reversed(done):
                op.undo(self.layout, self.optimizer, rec)
            self._rebuild()
            raise
        self._hold(event, done)
        self._rebuild()
        self._log("apply", event, before, t0)

    def _hold(self, event: Event, done: list[tuple[Operation, Any]]) -> None:
        """Keep ``done`` (operations and their undo records) for a later restore of ``event``."""
        self.held[event.event_id] = done
        self.held_groups[event.event_id] = {d.index for d in event.decisions if d.action in (Action.PRUNE, Action.FREEZE)}

    def _undo(self, op: Operation, rec: Any) -> None:
        """Undo one held operation (a sharded backend overrides it)."""
        op.undo(self.layout, self.optimizer, rec)

    def _matching(self, event: Event) -> list[int]:
        if event.event_id in self.held:
            return [event.event_id]
        wanted = {d.index for d in event.decisions}
        return [eid for eid, gs in self.held_groups.items() if gs & wanted]

    def restore(self, event: Event) -> None:
        """Undo held events matching ``event`` exactly (weights and optimizer state)."""
        ids = self._matching(event)
        if not ids:
            raise InvalidArgumentError(bad_arg("restore(event)", "an applied, unreleased event", event.event_id))
        t0, before = time.perf_counter(), self._measure()
        for eid in sorted(ids, reverse=True):
            for op, rec in reversed(self.held.pop(eid)):
                self._undo(op, rec)
            self.held_groups.pop(eid)
        self._rebuild()
        self._log("restore", event, before, t0)

    def release(self, event: Event) -> None:
        """Drop what is held for matching events: they can no longer be restored."""
        for eid in self._matching(event):
            self.held.pop(eid)
            self.held_groups.pop(eid)
