"""The controller's values: its validated configuration and what one report returns.

Kept apart from :mod:`lyactl.control.controller` (which re-exports both) so that the controller
module holds the decision loop alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lyactl.control.budget import BudgetConfig
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import REQUIRED_FIELDS, Event, GroupStats
from lyactl.control.guard import GuardConfig
from lyactl.control.monitors import MonitorConfig, MonitorResult

__all__ = ["ControllerConfig", "ControlOutput", "finite_mask"]


@dataclass(frozen=True)
class ControllerConfig:
    """Set-point, schedule, hysteresis and limits (all validated)."""

    monitors: MonitorConfig = field(default_factory=MonitorConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    budget: BudgetConfig | None = None
    warmup_steps: int = 0
    last_decision_step: int | None = None
    last_freeze_step: int | None = None  # freezes alone may go on after last_decision_step up to here
    hysteresis: int = 3
    max_groups_per_event: int = 64
    min_steps_between_events: int = 0
    cooldown_steps: int = 1000
    model_flops: float | None = None
    allow_prune: bool = True
    allow_freeze: bool = True
    freeze_hold_ratio: float = 0.1
    guard_exact_events: bool = False

    def __post_init__(self) -> None:
        for name in ("warmup_steps", "min_steps_between_events", "cooldown_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise InvalidArgumentError(bad_arg(f"ControllerConfig.{name}", "an int >= 0", getattr(self, name)))
        for name in ("hysteresis", "max_groups_per_event"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InvalidArgumentError(bad_arg(f"ControllerConfig.{name}", "an int >= 1", getattr(self, name)))
        for name in ("allow_prune", "allow_freeze", "guard_exact_events"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(bad_arg(f"ControllerConfig.{name}", "True or False", getattr(self, name)))
        if self.last_freeze_step is not None and not (isinstance(self.last_freeze_step, int)
                                                      and self.last_freeze_step >= 0):
            raise InvalidArgumentError(bad_arg("ControllerConfig.last_freeze_step", "None or an int >= 0",
                                               self.last_freeze_step))
        if not 0.0 < self.freeze_hold_ratio < 1.0:
            raise InvalidArgumentError(bad_arg("ControllerConfig.freeze_hold_ratio", "a number in (0, 1)",
                                               self.freeze_hold_ratio))
        if self.model_flops is not None and not (math.isfinite(self.model_flops) and self.model_flops > 0):
            raise InvalidArgumentError(bad_arg("ControllerConfig.model_flops", "None or a number > 0",
                                               self.model_flops))


@dataclass(frozen=True)
class ControlOutput:
    """What the backend does after one report (see :mod:`lyactl.control.protocol`), and the
    monitors' results it was decided on (``results``, in the order of the controller's
    monitors; HARMLESS and BOUNDED ones cover only the groups where they could change a
    decision, see :func:`~lyactl.control.decision_rule.evaluate_monitors`; empty when held).
    Traces read them here instead of evaluating the monitors a second time."""

    events: tuple[Event, ...]
    restores: tuple[Event, ...]
    releases: tuple[Event, ...]
    penalty: np.ndarray
    held: bool
    reason: str
    results: tuple[MonitorResult, ...] = ()


def finite_mask(stats: GroupStats) -> np.ndarray:
    """:meth:`GroupStats.finite_mask` given finite loss and lr, in fewer passes: where the sum
    of the required fields is finite all of them are; only elsewhere (NaN, inf or an
    overflowing sum) are the fields checked one by one."""
    first, *rest = (getattr(stats, name) for name in REQUIRED_FIELDS)
    with np.errstate(all="ignore"):
        total = first.copy()
        for arr in rest:
            total += arr
    ok = np.isfinite(total)
    if not ok.all():
        idx = np.flatnonzero(~ok)
        ok[idx] = np.logical_and.reduce([np.isfinite(getattr(stats, name)[idx]) for name in REQUIRED_FIELDS])
    return ok
