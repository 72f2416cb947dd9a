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

The arguments are checked where they are given: the optimizer must be one over the model's
trainable parameters (an optimizer of another model would leave this one untrained while
its groups are still decided on), the loss a number or a one-element tensor. With
``total_steps`` (or a controller whose budget knows it), a schedule that cannot decide
before the run ends is warned about when the controller is set, and :meth:`Lyactl.summary`
says when the first decision was possible (:mod:`lyactl.control.schedule_check`).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from lyactl.errors import InvalidArgumentError, UnsupportedModelError, bad_arg
from lyactl.control.groups import Event, GroupStats
from lyactl.control.schedule_check import DecisionSchedule, decision_schedule

from .backend import TorchBackend
from .groups import ArchitectureAdapter

__all__ = ["ControllerOutput", "Controller", "Lyactl", "SUPPORTED_MODELS", "ScheduleWarning"]

SUPPORTED_MODELS = ("lyactl_torch.GPT (the reference GPT); Hugging Face GPT-2, Llama, Qwen2 and Mistral models "
                    "with adapters=lyactl_torch.hf.hf_adapters(); any other model with an ArchitectureAdapter "
                    "of your own in adapters=(...)")
"""The model families the adapters support, named where a model is refused."""


class ScheduleWarning(UserWarning):
    """The controller's schedule allows no decision before the run ends."""


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
    total_steps : int, optional
        The run's length ``T`` (default: the controller's budget's), for the schedule check.
    backend : TorchBackend, optional
        A ready backend (default: built from ``model``, ``optimizer`` and ``backend_kw``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, controller: Controller | None, *,
                 interval: int = 50, on_event: Callable[["Lyactl", list[Event]], None] | None = None,
                 backend: TorchBackend | None = None, block: int = 64,
                 adapters: Sequence[ArchitectureAdapter] = (), total_steps: int | None = None) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise InvalidArgumentError(bad_arg("interval", "an int >= 1", interval))
        if total_steps is not None and not (isinstance(total_steps, int) and total_steps >= 1):
            raise InvalidArgumentError(bad_arg("total_steps", "None or an int >= 1", total_steps))
        _check_optimizer(model, optimizer)
        if backend is None:
            try:
                backend = TorchBackend(model, optimizer, block=block, adapters=adapters)
            except UnsupportedModelError as exc:
                raise UnsupportedModelError(f"{exc}; supported: {SUPPORTED_MODELS}") from exc
        self.backend, self.interval, self.on_event, self.total_steps = backend, interval, on_event, total_steps
        self._controller: Controller | None = None
        self.controller = controller
        self.events: list[Event] = []
        self.restored: list[Event] = []
        self.outputs: list[Any] = []
        self.stats: list[GroupStats] = []

    @property
    def controller(self) -> Controller | None:
        return self._controller

    @controller.setter
    def controller(self, controller: Controller | None) -> None:
        """Set the controller; warns (:class:`ScheduleWarning`) when its schedule allows no
        decision within the run."""
        self._controller = controller
        schedule = self.schedule()
        if schedule is not None and not schedule.possible:
            warnings.warn(f"lyactl: {schedule.explain()}", ScheduleWarning, stacklevel=2)

    def schedule(self) -> DecisionSchedule | None:
        """The controller's :class:`~lyactl.control.schedule_check.DecisionSchedule` (None
        without a controller, or for one without lyactl's ``config``)."""
        config = getattr(self._controller, "config", None)
        if config is None or not all(hasattr(config, a) for a in ("monitors", "hysteresis", "warmup_steps")):
            return None
        return decision_schedule(config, self.interval, self.total_steps)

    def summary(self) -> str:
        """One line: steps, reports, events and decisions so far, and, with no decision yet,
        when the first one was possible and why."""
        n_dec = sum(len(e.decisions) for e in self.events)
        line = (f"lyactl: {self.n_steps} steps, {len(self.outputs)} reports, {len(self.events)} events "
                f"({n_dec} decisions, {len(self.restored)} restored)")
        schedule = self.schedule()
        if not self.events and schedule is not None:
            line += f"; {schedule.explain()}"
        return line

    @property
    def n_steps(self) -> int:
        return self.backend.step

    def step(self, loss: torch.Tensor | float, lr: float | None = None) -> bool:
        """Account one optimizer step; on statistics steps run the controller.

        Returns True iff the model's structure changed (recompile, recount FLOPs); the
        controller's output is kept in ``outputs``. With ``controller`` None only the
        steps are counted (and the penalty applied).
        """
        _check_loss(loss, lr)
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


def _check_optimizer(model: nn.Module, optimizer: Any) -> None:
    """``optimizer`` must be a torch optimizer holding every trainable parameter of ``model``."""
    if optimizer is None or not isinstance(getattr(optimizer, "param_groups", None), list):
        raise InvalidArgumentError(bad_arg("optimizer", "a torch.optim.Optimizer over model.parameters()",
                                           type(optimizer).__name__))
    owned = {id(p) for g in optimizer.param_groups for p in g.get("params", ())}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if id(p) not in owned]
    if missing:
        raise InvalidArgumentError(bad_arg(
            "optimizer", "an optimizer over the model's trainable parameters (e.g. built from model.parameters())",
            f"one that lacks {len(missing)} of the model's {len(trainable)} trainable tensors ({missing[0]}, ...)"))


def _check_loss(loss: Any, lr: Any) -> None:
    """``loss``: a real number or a one-element tensor; ``lr``: None or a real number or a
    one-element tensor (no host sync: only types and shapes are read)."""
    for name, value, optional in (("loss", loss, False), ("lr", lr, True)):
        if value is None and optional:
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
                raise InvalidArgumentError(bad_arg(name, "a one-element real tensor",
                                                   f"a {value.dtype} tensor of shape {tuple(value.shape)}"))
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidArgumentError(bad_arg(name, "a number or a one-element tensor", value))
