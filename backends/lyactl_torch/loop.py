"""Plain-loop integration: one call after ``optimizer.step()``.

::

    ctl = lyactl_torch.Lyactl(model, optimizer, controller, interval=50,
                              on_event=lambda ctl, events: recompile())
    for batch in data:
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, y)[1]
        loss.backward()
        optimizer.step()
        ctl.step(loss)        # the loss tensor is only read on statistics steps

Every step: the proximal penalty (if any strength is > 0). Every ``interval`` steps:
``backend.statistics()`` (one host sync) -> ``controller.observe(stats)`` -> restore,
apply the events, release -> ``set_penalty`` -> ``on_event(ctl, changed)`` when the model's
structure changed (re-run ``torch.compile`` there: shapes changed). Call ``ctl.step``
before the next ``zero_grad`` so the gradients are still there.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import Event, GroupStats

from .backend import TorchBackend
from .groups import ArchitectureAdapter

__all__ = ["ControllerOutput", "Controller", "Lyactl"]


class ControllerOutput(Protocol):
    """What a controller answers to one report."""

    events: Sequence[Event]
    restores: Sequence[Event]
    releases: Sequence[Event]
    penalty: np.ndarray | None
    held: bool


class Controller(Protocol):
    """Anything with ``observe(stats) -> ControllerOutput`` (e.g. lyactl's controller)."""

    def observe(self, stats: GroupStats) -> ControllerOutput:
        ...


class Lyactl:
    """Drive ``controller`` from a plain training loop.

    Parameters
    ----------
    model, optimizer, controller
        ``controller`` may be None and set later (``ctl.controller = ...``), e.g. once
        it was built from ``ctl.backend.groups()``.
    interval : int
        Statistics every ``interval`` optimizer steps (K).
    on_event : callable ``(ctl, events) -> None``, optional
        Called after the structure changed (events applied or restored).
    backend : TorchBackend, optional
        A ready backend (default: built from ``model``, ``optimizer`` and ``backend_kw``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, controller: Controller | None, *,
                 interval: int = 50, on_event: Callable[["Lyactl", list[Event]], None] | None = None,
                 backend: TorchBackend | None = None, block: int = 64,
                 adapters: Sequence[ArchitectureAdapter] = ()) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise InvalidArgumentError(bad_arg("interval", "an int >= 1", interval))
        self.backend = TorchBackend(model, optimizer, block=block, adapters=adapters) if backend is None else backend
        self.controller, self.interval, self.on_event = controller, interval, on_event
        self.events: list[Event] = []
        self.restored: list[Event] = []
        self.outputs: list[Any] = []
        self.stats: list[GroupStats] = []

    @property
    def n_steps(self) -> int:
        return self.backend.step

    def step(self, loss: torch.Tensor | float, lr: float | None = None) -> bool:
        """Account one optimizer step; on statistics steps run the controller.

        Returns True iff the model's structure changed (recompile, recount FLOPs); the
        controller's output is kept in ``outputs``. With ``controller`` None only the
        steps are counted (and the penalty applied).
        """
        b = self.backend
        b.observe_step(loss, lr)
        b.apply_penalty()
        if b.step % self.interval or self.controller is None:
            return False
        stats = b.statistics()
        out = self.controller.observe(stats)
        self.stats.append(stats)
        self.outputs.append(out)
        changed: list[Event] = []
        # restores first: the controller ran its guard (restores) before deciding, so a
        # new event may rely on groups that this very report restores
        for ev in out.restores:
            b.restore(ev)
            self.restored.append(ev)
            changed.append(ev)
        for ev in out.events:
            b.apply(ev)
            self.events.append(ev)
            changed.append(ev)
        for ev in out.releases:  # after apply: an event may be released as it is applied
            b.release(ev)
        if getattr(out, "penalty", None) is not None:
            b.set_penalty(np.asarray(out.penalty, dtype=np.float64))
        if changed and self.on_event is not None:
            self.on_event(self, changed)
        return bool(changed)
