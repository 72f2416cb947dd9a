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
from lyactl.control.groups import Event, GroupStats
from lyactl.control.guard import GuardConfig
from lyactl.control.monitors import MonitorConfig

__all__ = ["ControllerConfig", "ControlOutput", "finite_mask"]


@dataclass(frozen=True)
class ControllerConfig:
    """Set-point, schedule, hysteresis and limits (all validated)."""

    monitors: MonitorConfig = field(default_factory=MonitorConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    budget: BudgetConfig | None = None
    warmup_steps: int = 0
    last_decision_step: int | None = None
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
        if not 0.0 < self.freeze_hold_ratio < 1.0:
            raise InvalidArgumentError(bad_arg("ControllerConfig.freeze_hold_ratio", "a number in (0, 1)",
                                               self.freeze_hold_ratio))
        if self.model_flops is not None and not (math.isfinite(self.model_flops) and self.model_flops > 0):
            raise InvalidArgumentError(bad_arg("ControllerConfig.model_flops", "None or a number > 0",
                                               self.model_flops))


@dataclass(frozen=True)
class ControlOutput:
    """What the backend does after one report (see :mod:`lyactl.control.protocol`)."""

    events: tuple[Event, ...]
    restores: tuple[Event, ...]
    releases: tuple[Event, ...]
    penalty: np.ndarray
    held: bool
    reason: str


def finite_mask(stats: GroupStats) -> np.ndarray:
    """:meth:`GroupStats.finite_mask` given finite loss and lr, in fewer passes: where the sum
    of the four fields is finite all four are; only elsewhere (NaN, inf or an overflowing
    sum) are the fields checked one by one."""
    with np.errstate(all="ignore"):
        total = stats.w_sq + stats.dw_sq
        total += stats.g_sq
        total += stats.gw
    ok = np.isfinite(total)
    if not ok.all():
        idx = np.flatnonzero(~ok)
        ok[idx] = (np.isfinite(stats.w_sq[idx]) & np.isfinite(stats.dw_sq[idx]) & np.isfinite(stats.g_sq[idx])
                   & np.isfinite(stats.gw[idx]))
    return ok
