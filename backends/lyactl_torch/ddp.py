"""DistributedDataParallel: identical decisions on every rank, DDP rebuilt after an event.

Why every rank decides alike: after DDP's backward every rank holds the same averaged
gradients, hence the same parameters and optimizer state; only the loss (of the rank's own
batch) differs. :func:`synchronise_stats` all-reduces the packed statistics (mean over
ranks; NaN anywhere stays NaN: fail safe) and then broadcasts rank 0's result, so the
:class:`GroupStats` are bitwise identical on all ranks whatever the reduction algorithm,
and the deterministic controller returns identical events. Every rank then applies the
same surgery to its own replica.

Why rebuild: DDP assigns parameters to gradient buckets and hooks their gradient
accumulators when it is constructed, from the shapes and ``requires_grad`` flags of that
moment. After an event :func:`rebuild_ddp` removes the old wrapper's autograd hooks and
wraps the (same) module again, a collective call that all ranks make at the same step.
While blocks are in the frozen prefix (run without autograd), the parameters below it
(embeddings) get no gradient through them, so the rebuilt wrapper then gets
``find_unused_parameters=True`` unless ``ddp_kwargs`` says otherwise (DDP then walks the
graph once per step to find them). Use ``ctl.ddp`` (the current wrapper) for the forward::

    ctl = DistributedLyactl(DDP(model), optimizer, controller, interval=50)
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        loss = ctl.ddp(x, y)[1]
        loss.backward()
        optimizer.step()
        ctl.step(loss)

Costs per statistics call: one all-reduce and one broadcast of ``6 G + 1`` float64 numbers
(``G`` groups), on the device NCCL needs (CUDA) or the CPU otherwise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import STAT_FIELDS, Event, GroupStats

from .backend import TorchBackend
from .freeze import frozen_prefix
from .groups import ArchitectureAdapter
from .loop import Controller, Lyactl

__all__ = ["ARRAYS", "synchronise_stats", "ddp_kwargs_of", "rebuild_ddp", "DistributedBackend", "DistributedLyactl"]

ARRAYS = STAT_FIELDS  # every statistic of the registry (lyactl.control.groups.STATS)


def synchronise_stats(stats: GroupStats, group: Any = None, device: torch.device | None = None) -> GroupStats:
    """Mean of ``stats`` over the ranks of ``group``, identical on every rank.

    ``x_bar = (1 / R) sum_r x_r`` for each array and the loss (R ranks), then rank 0's
    ``x_bar`` is broadcast. ``step``, ``lr``, ``interval`` and ``weight_decay`` are equal on
    all ranks by construction and kept.
    """
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
    x = np.concatenate([np.asarray(getattr(stats, k), dtype=np.float64) for k in ARRAYS] + [[stats.loss]])
    t = torch.from_numpy(x).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    t /= dist.get_world_size(group)
    dist.broadcast(t, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    host = t.cpu().numpy()
    G = stats.n_groups
    arrays = {k: host[i * G:(i + 1) * G].copy() for i, k in enumerate(ARRAYS)}
    return replace(stats, loss=float(host[-1]), **arrays)


def ddp_kwargs_of(module: DDP) -> dict[str, Any]:
    """The constructor arguments of ``module`` that a rebuild must keep (stable attributes)."""
    kw: dict[str, Any] = {"device_ids": module.device_ids, "output_device": module.output_device, "dim": module.dim,
                          "process_group": module.process_group, "find_unused_parameters": module.find_unused_parameters,
                          "gradient_as_bucket_view": module.gradient_as_bucket_view}
    cap = getattr(module, "bucket_bytes_cap", None)
    if cap:
        kw["bucket_cap_mb"] = cap / (1024 * 1024)
    return kw


def rebuild_ddp(module: nn.Module, **ddp_kwargs: Any) -> DDP:
    """Wrap ``module`` (or a DDP's inner module) in a fresh DDP after a structural change.

    The old wrapper's autograd hooks are removed first so its reducer cannot fire on the
    parameters it still knows. Keyword arguments default to the old wrapper's
    (:func:`ddp_kwargs_of`); given ones override them. Collective: call on all ranks.
    """
    kw: dict[str, Any] = {}
    inner = module
    if isinstance(module, DDP):
        kw = ddp_kwargs_of(module)
        inner = module.module
        module._remove_autograd_hooks()
    kw.update(ddp_kwargs)
    return DDP(inner, **kw)


class DistributedBackend(TorchBackend):
    """:class:`TorchBackend` whose :meth:`statistics` are synchronised across ranks."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, group: Any = None, **kw: Any) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise InvalidArgumentError(bad_arg("torch.distributed", "an initialised process group", None))
        super().__init__(model, optimizer, **kw)
        self.group = group

    def statistics(self) -> GroupStats:
        """Local statistics (one host sync) then :func:`synchronise_stats` (two collectives)."""
        return synchronise_stats(super().statistics(), self.group)


class DistributedLyactl(Lyactl):
    """:class:`Lyactl` for a DDP-wrapped model: synchronised statistics, DDP rebuilt after
    every structural change (``ctl.ddp`` is the current wrapper).

    Parameters
    ----------
    ddp : DistributedDataParallel
        The wrapped model; its ``.module`` is what the adapters see.
    optimizer, controller, interval, block, adapters
        As for :class:`Lyactl` (the controller must be deterministic; lyactl's is).
    on_event : callable ``(ctl, events) -> None``, optional
        Called after the rebuild (re-run ``torch.compile`` there).
    ddp_kwargs : dict, optional
        Overrides for the rebuilt wrapper (default: the old wrapper's settings).
    group : process group, optional
        For the statistics (default: the world).
    """

    def __init__(self, ddp: DDP, optimizer: torch.optim.Optimizer, controller: Controller | None, *,
                 interval: int = 50, on_event: Callable[[Lyactl, list[Event]], None] | None = None,
                 block: int = 64, adapters: Sequence[ArchitectureAdapter] = (),
                 ddp_kwargs: dict[str, Any] | None = None, group: Any = None) -> None:
        if not isinstance(ddp, DDP):
            raise InvalidArgumentError(bad_arg("ddp", "a DistributedDataParallel module", type(ddp).__name__))
        backend = DistributedBackend(ddp.module, optimizer, group=group, block=block, adapters=adapters)
        self.ddp, self.ddp_kwargs, self.user_on_event = ddp, dict(ddp_kwargs or {}), on_event
        super().__init__(ddp.module, optimizer, controller, interval=interval, on_event=self._rebuild, backend=backend)

    def _rebuild(self, ctl: Lyactl, events: list[Event]) -> None:
        kw = dict(self.ddp_kwargs)
        if frozen_prefix(self.backend.layout) > 0:
            kw.setdefault("find_unused_parameters", True)  # nothing below a frozen prefix gets a gradient
        self.ddp = rebuild_ddp(self.ddp, **kw)
        if self.user_on_event is not None:
            self.user_on_event(ctl, events)
