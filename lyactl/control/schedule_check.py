"""When can the controller first decide? The schedule arithmetic behind "no decision yet".

Reports come every ``K`` optimizer steps (the backend's ``interval``), report ``r`` at step
``r K`` (r = 1, 2, ...). A decision at report ``r`` needs

1. a full monitor window: ``r >= W`` (``MonitorConfig.window``; margins are NaN before);
2. ``H`` consecutive certified reports (``hysteresis``): ``r >= W + H - 1``;
3. the warm-up over: ``r K >= warmup_steps``;
4. the schedule still open: ``r K <= last_decision_step`` and ``r K <= T`` (the run's steps).

So the earliest possible decision step is ``s* = K max(W + H - 1, ceil(warmup_steps / K))``,
and no decision can happen at all when ``s* > min(last_decision_step, T)``. This is a lower
bound (certificates must also hold there), computed from the configuration alone: ``O(1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["DecisionSchedule", "decision_schedule"]


@dataclass(frozen=True)
class DecisionSchedule:
    """The schedule's numbers and the earliest step at which a decision is possible.

    Attributes
    ----------
    interval, window, hysteresis, warmup_steps : int
        ``K``, ``W``, ``H`` and the warm-up (steps).
    last_decision_step, total_steps : int or None
        The last step a decision may be taken at, and the run's length ``T`` (None: unknown).
    earliest : int
        ``s* = K max(W + H - 1, ceil(warmup_steps / K))``.
    """

    interval: int
    window: int
    hysteresis: int
    warmup_steps: int
    last_decision_step: int | None
    total_steps: int | None
    earliest: int

    @property
    def deadline(self) -> int | None:
        """``min(last_decision_step, T)`` over those known (None if neither is)."""
        known = [s for s in (self.last_decision_step, self.total_steps) if s is not None]
        return min(known) if known else None

    @property
    def possible(self) -> bool:
        """False when no decision can happen before the deadline."""
        return self.deadline is None or self.earliest <= self.deadline

    def explain(self) -> str:
        """One line: the earliest decision step and why, and whether the run reaches it."""
        K, W, H = self.interval, self.window, self.hysteresis
        why = (f"earliest possible decision at step {self.earliest} (statistics every {K} steps, a full window "
               f"of {W} reports plus hysteresis {H} needs {W + H - 1} reports = step {K * (W + H - 1)}; "
               f"warm-up {self.warmup_steps} steps)")
        if self.possible:
            return why
        limits = [f"last_decision_step {s}" for s in (self.last_decision_step,) if s is not None and s < self.earliest]
        limits += [f"the run's {s} steps" for s in (self.total_steps,) if s is not None and s < self.earliest]
        return (f"no decision is possible: {why} is past {' and '.join(limits)}; train longer or lower "
                "interval, window, hysteresis or warm-up")


def decision_schedule(config: Any, interval: int, total_steps: int | None = None) -> DecisionSchedule:
    """The :class:`DecisionSchedule` of a controller configuration.

    Parameters
    ----------
    config : ControllerConfig
        Read: ``monitors.window``, ``hysteresis``, ``warmup_steps``, ``last_decision_step``
        and ``budget.total_steps`` (when ``total_steps`` is not given).
    interval : int
        Steps between reports, ``K >= 1``.
    total_steps : int, optional
        The run's length ``T``.
    """
    if not (isinstance(interval, int) and interval >= 1):
        raise InvalidArgumentError(bad_arg("interval", "an int >= 1", interval))
    if total_steps is None and getattr(config, "budget", None) is not None:
        total_steps = config.budget.total_steps
    if total_steps is not None and not (isinstance(total_steps, int) and total_steps >= 1):
        raise InvalidArgumentError(bad_arg("total_steps", "None or an int >= 1", total_steps))
    W, H, warm = int(config.monitors.window), int(config.hysteresis), int(config.warmup_steps)
    earliest = interval * max(W + H - 1, math.ceil(warm / interval))
    return DecisionSchedule(interval, W, H, warm, config.last_decision_step, total_steps, earliest)
