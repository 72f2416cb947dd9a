"""The compute-budget trajectory and the PI actuator that tracks it.

Convention: ``phi(s)`` is the fraction of the dense model's training FLOPs per token that
is saved at step ``s`` (pruned groups save ``flops_remove``, frozen ones ``flops_freeze``);
tokens per step are constant, so the training-FLOP saving of a run of ``T`` steps is

    S = (1/T) * sum_{u < T} phi(u).

With ``A(s) = sum_{u < s} phi(u)`` already banked, the saving reaches the target ``S*`` if
from ``s`` on at least

    phi_req(s) = (S* T - A(s)) / (T - s)                                  (budget trajectory)

is removed (derived and checked in ``theory/monitors.py``). The controller compares
``phi(s)`` with ``phi_req(s)``; where certificates alone fall short (``e = phi_req - phi >
0``) a PI law

    u_k = clip(kp e_k + ki I_k, 0, u_max),   I_k = clip(I_{k-1} + e_k dt_k / tau, 0, u_max/ki)

(clamped integrator = anti-windup) sets a group-sparsity penalty strength
``lam_g = u_k sqrt(n_g)`` (``n_g`` parameters; see ``Controller._actuate``) on the
cheapest-to-lose groups (lowest ``|gw|`` per FLOP saved, :func:`cheapest_groups`), pushing
them towards collapse; certificates still decide when a group may go.

Gradual variant (``ramp_start``/``ramp_end`` steps ``s0 < s1``): instead of reaching
``phi_req`` in one cut, the set-point follows the cubic ramp of gradual pruning (Zhu & Gupta,
2017), ``phi_ramp(s) = phi_f (1 - (1 - x)^3)``, ``x = (s - s0)/(s1 - s0)`` clipped to [0, 1],
and is ``min(phi_req(s), phi_ramp(s))`` until ``s1``, ``phi_req(s)`` after. The ramp banks
``3/4 phi_f (s1 - s0)``, so ``phi_f = S* T / (T - s1 + 3/4 (s1 - s0))`` meets the target
(derived and checked in ``theory/monitors.py``): the later cut is deeper by that ratio.

Final variant (``kind=BudgetKind.FINAL``, what compressing a trained model asks for): ``S*``
is the fraction saved *at the end*, ``phi(T) >= S*``, not the run's average. The set-point is
``S*`` itself from the start (or the cubic ramp ``S* (1 - (1 - x)^3)`` to it), and the target
is reached once ``phi(s) >= S*``: the average variant would otherwise drive the model far below
the requested final size (the average of a ramp is below its end), which is what a user asking
for "0.5 of the FLOPs" does not want.

What ``phi`` counts (``counts``, :class:`BudgetCounts`): the training FLOPs saved (default;
a frozen group's skipped weight gradients count), or ``PRUNED_ONLY``: only what makes the
model smaller to run, ``phi`` counted as if every FROZEN group were ACTIVE. Compressing a
trained model asks for the latter: a freeze saves training compute but the model runs as
large as before, so with it freezes still happen where their certificates hold, yet never
count towards ``S*`` (:class:`lyactl.control.accounting.FlopsAccount` counts both).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["BudgetKind", "BudgetCounts", "BudgetConfig", "PIState", "target_reached", "required_fraction",
           "ramp_final_fraction", "setpoint", "projected_saving", "pi_step", "cheapest_groups"]


class BudgetKind(str, enum.Enum):
    """What the target ``S*`` is: the run-average training-FLOP saving, or the final one."""

    AVERAGE = "average"
    FINAL = "final"


class BudgetCounts(str, enum.Enum):
    """What the saved fraction ``phi`` counts: every training FLOP saved (pruned and frozen
    groups), or only the pruned groups' (the model's size to run; frozen groups as active)."""

    TRAINING_FLOPS = "training_flops"
    PRUNED_ONLY = "pruned_only"


@dataclass(frozen=True)
class BudgetConfig:
    """Target saving ``S*`` in (0, 1) over ``total_steps``; PI gains, integration time
    constant ``tau`` in steps (default ``total_steps / 50``) and output cap ``u_max``;
    ``ramp_start``, ``ramp_end`` (steps, both or neither): the gradual set-point above;
    ``kind``: ``S*`` as the run average (default) or the final saving; ``counts``: what ``phi``
    counts, training FLOPs (default) or pruned groups only (see the module doc)."""

    target: float
    total_steps: int
    kp: float = 5.0
    ki: float = 5.0
    u_max: float = 3.0
    tau: float | None = None
    ramp_start: int | None = None
    ramp_end: int | None = None
    kind: BudgetKind = BudgetKind.AVERAGE
    counts: BudgetCounts = BudgetCounts.TRAINING_FLOPS

    @property
    def tau_steps(self) -> float:
        return float(self.tau) if self.tau is not None else max(self.total_steps / 50.0, 1.0)

    def __post_init__(self) -> None:
        for name, enum_type in (("kind", BudgetKind), ("counts", BudgetCounts)):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, name, enum_type(value))
                except ValueError:
                    values = " or ".join(repr(k.value) for k in enum_type)
                    raise InvalidArgumentError(bad_arg(f"BudgetConfig.{name}", values, value)) from None
        if not 0 < self.target < 1:
            raise InvalidArgumentError(bad_arg("BudgetConfig.target", "a fraction in (0, 1)", self.target))
        if not (isinstance(self.total_steps, int) and self.total_steps > 0):
            raise InvalidArgumentError(bad_arg("BudgetConfig.total_steps", "an int > 0", self.total_steps))
        if self.tau is not None and not self.tau > 0:
            raise InvalidArgumentError(bad_arg("BudgetConfig.tau", "None or a number > 0", self.tau))
        ramp = (self.ramp_start, self.ramp_end)
        if ramp != (None, None) and not (all(isinstance(v, int) for v in ramp)
                                         and 0 <= self.ramp_start < self.ramp_end <= self.total_steps):
            raise InvalidArgumentError(bad_arg("BudgetConfig.ramp_start, ramp_end",
                                               f"both None or ints with 0 <= start < end <= total_steps={self.total_steps}",
                                               ramp))
        for name in ("kp", "ki", "u_max"):
            if not getattr(self, name) >= 0:
                raise InvalidArgumentError(bad_arg(f"BudgetConfig.{name}", "a number >= 0", getattr(self, name)))


@dataclass(frozen=True)
class PIState:
    """Integrator ``I`` and last output ``u`` of the PI law."""

    integral: float = 0.0
    u: float = 0.0


def required_fraction(target: float, total_steps: int, step: int, banked: float) -> float:
    """``phi_req(s) = (S* T - A(s)) / (T - s)``, clipped to [0, 1]; 0 once ``s >= T``.

    ``banked`` is ``A(s)`` in step units (sum of ``phi`` over past steps). A value of 1
    means the target can no longer be met even by removing everything.
    """
    remaining = total_steps - step
    if remaining <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (target * total_steps - banked) / remaining)))


def ramp_final_fraction(cfg: BudgetConfig) -> float:
    """``phi_f = S* T / (T - s1 + 3/4 (s1 - s0))``, the fraction the ramp ends at (<= 1);
    ``S*`` itself for a final-saving budget."""
    if cfg.kind is BudgetKind.FINAL:
        return float(cfg.target)
    s0, s1, T = cfg.ramp_start, cfg.ramp_end, cfg.total_steps
    return float(min(1.0, cfg.target * T / (T - s1 + 0.75 * (s1 - s0))))


def setpoint(cfg: BudgetConfig, step: int, banked: float) -> float:
    """The fraction to be saved at ``step``: ``phi_req`` (:func:`required_fraction`; ``S*`` for a
    final-saving budget), capped by the cubic ramp while it runs when ``cfg`` has one."""
    if cfg.kind is BudgetKind.FINAL:
        phi_req = float(cfg.target) if step < cfg.total_steps else 0.0
    else:
        phi_req = required_fraction(cfg.target, cfg.total_steps, step, banked)
    if cfg.ramp_start is None or step >= cfg.ramp_end:
        return phi_req
    x = min(max((step - cfg.ramp_start) / (cfg.ramp_end - cfg.ramp_start), 0.0), 1.0)
    return min(phi_req, ramp_final_fraction(cfg) * (1.0 - (1.0 - x) ** 3))


def projected_saving(total_steps: int, step: int, banked: float, phi: float) -> float:
    """``S = (A(s) + phi (T - s)) / T``: the saving if ``phi`` is held to the end."""
    return (banked + phi * max(total_steps - step, 0)) / total_steps


def target_reached(cfg: BudgetConfig, step: int, banked: float, phi: float) -> bool:
    """Whether no more saving is needed: the projected run average
    (:func:`projected_saving`) reaches ``S*``, or for a final-saving budget ``phi >= S*``."""
    if cfg.kind is BudgetKind.FINAL:
        return phi >= cfg.target
    return projected_saving(cfg.total_steps, step, banked, phi) >= cfg.target


def pi_step(cfg: BudgetConfig, state: PIState, error: float, dt: int) -> PIState:
    """One PI update with clamped integrator; ``error = phi_req - phi`` (> 0: behind)."""
    if not math.isfinite(error):
        return PIState(state.integral, 0.0)
    i_max = cfg.u_max / cfg.ki if cfg.ki > 0 else 0.0
    integral = min(max(state.integral + error * dt / cfg.tau_steps, 0.0), i_max)
    u = min(max(cfg.kp * error + cfg.ki * integral, 0.0), cfg.u_max)
    return PIState(integral, u)


def cheapest_groups(score: np.ndarray | Callable[[], np.ndarray], flops: np.ndarray, gap: float,
                    eligible: np.ndarray, chosen: np.ndarray, cushion: float = 1.25,
                    max_unit: float = 2.0, saving: Callable[[np.ndarray], float] | None = None,
                    room: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Top up ``chosen`` with the lowest-``score`` eligible groups until their FLOPs cover ``gap``.

    Sticky: groups already chosen (and still eligible) stay chosen, so the penalty keeps
    pushing the same groups. A group whose FLOPs exceed ``max_unit`` times what is still
    needed is passed over: one whole layer chosen for a small gap would overshoot the
    set-point by most of its size once it collapses and is pruned. One argsort over the
    eligible groups, only when a top-up is needed (``score`` may be a zero-argument callable,
    then called only then). ``saving(mask)``, optional: the FLOPs that pruning the ``mask``
    groups would save, counted exactly (overlapping groups' ``flops`` over-count their sum);
    the cover is then checked with it, the top-up found by bisection (O(log n) calls).
    ``room(order, mask)``, optional: ``order`` without the groups the constraints would not
    let go on top of ``mask`` (:func:`lyactl.control.selection.within_min_keep`), so the
    cover counts only prunable groups. Returns a new boolean ``[n]`` mask.
    """
    mask = chosen & eligible
    covered = float(np.dot(flops, mask)) if saving is None else float(saving(mask))
    if covered >= gap or gap <= 0:
        return mask
    score = score() if callable(score) else score
    need = cushion * gap - covered
    pool = np.flatnonzero(eligible & ~mask & np.isfinite(score) & (flops > 0) & (flops <= max_unit * need))
    order = pool[np.lexsort((pool, score[pool]))]
    if room is not None:
        order = room(order, mask)
    # cover cushion * gap so that a slowly growing gap does not re-sort every report
    k = int(np.searchsorted(np.cumsum(flops[order]), need)) + 1
    if saving is not None:  # the summed cover k is a lower bound; the exact one may need more
        k = _exact_cover(mask, order, min(k, order.size), cushion * gap, saving)
    out = mask.copy()
    out[order[:k]] = True
    return out


def _exact_cover(mask: np.ndarray, order: np.ndarray, k: int, target: float,
                 saving: Callable[[np.ndarray], float]) -> int:
    """The smallest ``j >= k`` whose top-up ``mask | order[:j]`` saves ``target`` by
    ``saving`` (monotone in ``j``: pruning more never costs more), else all of ``order``."""
    def covers(j: int) -> bool:
        m = mask.copy()
        m[order[:j]] = True
        return float(saving(m)) >= target

    lo, hi = k, order.size
    if lo >= hi or covers(lo):
        return lo
    while hi - lo > 1:  # covers(hi) assumed (or nothing more to add); covers(lo) is False
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if covers(mid) else (mid, hi)
    return hi
