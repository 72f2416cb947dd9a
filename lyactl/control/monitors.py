"""Online Lyapunov monitors over a sliding window of per-group statistics.

A monitor is a Lyapunov certificate evaluated for all groups at once: a *candidate*
``V`` (one value per report and group, shape ``[W, n_groups]``) and a *condition* on the
window of ``V`` (e.g. ``V`` contracts geometrically) whose signed margin is positive
exactly when the certificate holds. Every monitor, built-in or user-made, is a
:class:`LyapunovMonitor` (candidate + condition) behind the :class:`Monitor` protocol.
The window itself is :class:`~lyactl.control.stats_window.StatsWindow`; the built-in candidates
and conditions live in :mod:`lyactl.control.monitor_library` (both re-exported here).

Conditions are also written out as text, one statement per ``;``::

    r_hat := Max(sqrt(V_1/(V_0 + tiny)), ...); r_max - r_hat > 0

so that every certificate can be re-verified offline from its logged numbers
(:func:`lyactl.control.decision_log.reverify`). Derivations of every closed form used here live
in ``theory/monitors.py``.

The built-in monitors (roles in brackets; the controller's decision rule is
``PRUNE <= COLLAPSED or (CONVERGED and HARMLESS)``, ``FREEZE <= (CONVERGED and BOUNDED) or SETTLED``;
the SETTLED monitor is opt-in, :func:`lyactl.control.settled.settled_monitor`):

(a) :func:`convergence_monitor` [CONVERGED]: ``V_k = dw_sq_k`` contracts geometrically
    (:class:`Contracts`), which bounds the path still to go by ``R``;
(b) :func:`collapse_monitor` [COLLAPSED]: ``V_k = w_sq_k`` contracting and already small
    (:class:`Collapses`);
(c) :func:`movement_monitor` [BOUNDED]: loss change still possible from the remaining
    path, ``|g| R + curv R^2/2 < tol`` (:class:`LossMoveBound`);
(d) :func:`contribution_monitor` [HARMLESS]: ``max_k |-gw_k + curv_k w_sq_k/2| < tol``
    (:class:`BelowTolerance`).

``tol = eps * loss / n_groups`` (or an absolute ``tol_abs``). Where the backend gives no
curvature, ``curv`` is replaced by the edge-of-stability bound ``curv_factor / lr``
(``curv_factor = 2``: gradient descent is stable only while sharpness < 2/eta); with
``curv_factor=None`` such groups are UNKNOWN.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg
from lyactl.control.groups import Certificate
from lyactl.control.monitor_library import (BelowTolerance, Collapses, ContributionCandidate, Contracts, LossMoveBound,
                              StatCandidate, Tolerance)
from lyactl.control.stats_window import TINY, WINDOW_FIELDS, ColumnWindow, StatsWindow, Window
from lyactl.verdict import Verdict

__all__ = [
    "Role",
    "StatsWindow",
    "ColumnWindow",
    "Window",
    "MonitorResult",
    "Candidate",
    "Condition",
    "Monitor",
    "LyapunovMonitor",
    "StatCandidate",
    "ContributionCandidate",
    "Tolerance",
    "Contracts",
    "Collapses",
    "LossMoveBound",
    "BelowTolerance",
    "MonitorConfig",
    "convergence_monitor",
    "collapse_monitor",
    "movement_monitor",
    "contribution_monitor",
    "default_monitors",
    "WINDOW_FIELDS",
    "TINY",
]


class Role(enum.Enum):
    """What a monitor certifies (the controller combines roles, see module docstring)."""

    CONVERGED = "converged"
    COLLAPSED = "collapsed"
    BOUNDED = "bounded"
    HARMLESS = "harmless"
    SETTLED = "settled"  # a block whose own updates no longer buy loss (lyactl.control.settled)


@dataclass(frozen=True)
class MonitorResult:
    """One monitor evaluated on ``m`` groups: ``margin`` ``[m]`` (NaN = UNKNOWN), the
    candidate values ``V`` ``[W, m]`` and the condition's numbers (arrays ``[m]`` or
    scalars); ``inputs`` (a mapping, possibly computed on first read) are valid until the
    window's next push.

    ``columns`` is None when the monitor saw every group (``m = n``), else the sorted
    indices of the ``m`` groups it saw (a :class:`ColumnWindow`); methods taking a group
    index ``i`` take the model's index either way.
    """

    monitor: "LyapunovMonitor"
    window: tuple[int, int]
    margin: np.ndarray
    V: np.ndarray
    numbers: Mapping[str, Any]
    inputs: Mapping[str, np.ndarray]
    columns: np.ndarray | None = None
    _holds: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def holds(self, n_total: int | None = None) -> np.ndarray:
        """Boolean ``[m]``: margin finite and > 0 (NaN compares False: fail safe); with
        ``n_total``, scattered to ``[n_total]`` (False for groups not seen). Computed once per
        ``n_total`` and shared: treat it as read-only."""
        key = None if self.columns is None else n_total
        out = self._holds.get(key)
        if out is None:
            ok = self.margin > 0
            if key is not None:
                out = np.zeros(n_total, bool)
                out[self.columns] = ok
            else:
                out = ok
            self._holds[key] = out
        return out

    def scattered(self, n_total: int) -> tuple[np.ndarray, np.ndarray]:
        """``(V_now, margin)``, each ``[n_total]``: the newest candidate value and the margin
        per group, NaN for groups this result did not evaluate (for traces and plots)."""
        if self.columns is None:
            return self.V[-1], self.margin
        V, margin = np.full(n_total, np.nan), np.full(n_total, np.nan)
        V[self.columns], margin[self.columns] = self.V[-1], self.margin
        return V, margin

    def _local(self, i: int) -> int:
        if self.columns is None:
            return i
        j = int(np.searchsorted(self.columns, i))
        if j >= self.columns.size or self.columns[j] != i:
            raise InvalidArgumentError(bad_arg("group index", f"one of the {self.columns.size} evaluated", i))
        return j

    def verdict(self, i: int) -> Verdict:
        m = float(self.margin[self._local(i)])
        return Verdict.UNKNOWN if not math.isfinite(m) else (Verdict.HOLDS if m > 0 else Verdict.FAILS)

    def certificate(self, i: int) -> Certificate:
        """The certificate for group ``i`` (built only for groups actually decided)."""
        verdict, i = self.verdict(i), self._local(i)
        nums: dict[str, float] = {}
        for name, arr in self.inputs.items():
            for k in range(arr.shape[0]):
                nums[f"{name}_{k}"] = float(arr[k, i])
        for k in range(self.V.shape[0]):
            nums[f"V_{k}"] = float(self.V[k, i])
        for name, val in self.numbers.items():
            nums[name] = float(val[i]) if isinstance(val, np.ndarray) else float(val)
        text = "; ".join(self.monitor.candidate.definitions(self.V.shape[0])
                         + (self.monitor.condition.text(self.V.shape[0]),))
        return Certificate(self.monitor.name, verdict, self.window, nums, text, float(self.margin[i]))


@runtime_checkable
class Candidate(Protocol):
    """A Lyapunov candidate ``V`` over a group's statistics window."""

    name: str

    def values(self, window: Window) -> np.ndarray:
        """``[W, n]`` values of V, one row per report (oldest first)."""
        ...

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        """Raw ``[W, n]`` statistics V is computed from (logged as ``name_k``)."""
        ...

    def definitions(self, W: int) -> tuple[str, ...]:
        """Statements ``"V_k := expr"`` over the inputs; empty if V is opaque."""
        ...


@runtime_checkable
class Condition(Protocol):
    """The inequality on the window of V that makes V a certificate."""

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        """Signed margin ``[n]`` (> 0 holds) and the numbers it used (``[n]`` or scalar)."""
        ...

    def text(self, W: int) -> str:
        """``"a := ...; b := ...; lhs > rhs"`` over ``V_0..V_{W-1}`` and the numbers."""
        ...


@runtime_checkable
class Monitor(Protocol):
    """Anything that evaluates a certificate for the groups of a window.

    Column-wise: a group's margin depends on its own statistics and the per-report scalars
    only. The controller evaluates HARMLESS and BOUNDED monitors on a
    :class:`~lyactl.control.stats_window.ColumnWindow` of the groups where they can change a decision.
    """

    name: str
    role: Role

    def evaluate(self, window: Window) -> MonitorResult:
        ...


@dataclass(frozen=True)
class LyapunovMonitor:
    """A monitor from a candidate V and a condition; margin NaN until the window is full."""

    name: str
    role: Role
    candidate: Candidate
    condition: Condition

    def evaluate(self, window: Window) -> MonitorResult:
        with np.errstate(all="ignore"):  # overflow/NaN become non-finite margins: UNKNOWN
            V = np.asarray(self.candidate.values(window), dtype=float)
            if V.shape != (window.length, window.n_groups):
                raise ShapeError(bad_arg(f"candidate {self.candidate.name!r} values",
                                         f"shape ({window.length}, {window.n_groups})", V.shape))
            margin, numbers = self.condition.evaluate(V, window)
        if window.full:  # a new array (a condition may return a view); inf is no certificate
            margin = np.asarray(margin, dtype=float)
            margin = np.where(np.isfinite(margin), margin, np.nan)
        else:
            margin = np.full(window.n_groups, np.nan)
        columns = window.idx if isinstance(window, ColumnWindow) else None
        return MonitorResult(self, window.steps(), margin, V, numbers, _Inputs(self.candidate, window), columns)


class _Inputs(Mapping[str, np.ndarray]):
    """``candidate.inputs(window)``, computed on first read (only decided groups' certificates
    read them; on a :class:`ColumnWindow` each input is a gather)."""

    def __init__(self, candidate: Candidate, window: Window) -> None:
        self._candidate, self._window = candidate, window
        self._data: Mapping[str, np.ndarray] | None = None

    def _get(self) -> Mapping[str, np.ndarray]:
        if self._data is None:
            self._data = self._candidate.inputs(self._window)
        return self._data

    def __getitem__(self, key: str) -> np.ndarray:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@dataclass(frozen=True)
class MonitorConfig:
    """Parameters of the built-in monitors (see the module docstring)."""

    window: int = 8
    lag: int = 2
    r_max: float = 0.9
    rho_max: float = 0.999
    rel_floor: float = 1e-2
    abs_floor: float = 1e-20
    eps_move: float = 1e-3
    eps_contrib: float = 1e-3
    tol_abs: float | None = None
    curv_factor: float | None = 2.0

    def __post_init__(self) -> None:
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "window": (lambda v: isinstance(v, int) and v >= 3, "an int >= 3"),
            "lag": (lambda v: isinstance(v, int) and 1 <= v < self.window, "an int in [1, window)"),
            "r_max": (lambda v: 0 < v < 1, "a number in (0, 1)"),
            "rho_max": (lambda v: 0 < v < 1, "a number in (0, 1)"),
            "rel_floor": (lambda v: 0 < v < 1, "a number in (0, 1)"),
            "abs_floor": (lambda v: v > 0, "a number > 0"),
            "eps_move": (lambda v: v > 0, "a number > 0"),
            "eps_contrib": (lambda v: v > 0, "a number > 0"),
            "tol_abs": (lambda v: v is None or v > 0, "None or a number > 0"),
            "curv_factor": (lambda v: v is None or v > 0, "None or a number > 0"),
        }
        for name, (ok, expected) in checks.items():
            value = getattr(self, name)
            if not ok(value):
                raise InvalidArgumentError(bad_arg(f"MonitorConfig.{name}", expected, value))


def convergence_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    return LyapunovMonitor("convergence", Role.CONVERGED, StatCandidate("dw_sq"), Contracts(cfg.r_max, cfg.lag))


def collapse_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    return LyapunovMonitor("collapse", Role.COLLAPSED, StatCandidate("w_sq"),
                           Collapses(cfg.rho_max, cfg.rel_floor, cfg.abs_floor, cfg.lag))


def movement_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    tol = Tolerance(cfg.eps_move, cfg.tol_abs)
    return LyapunovMonitor("movement", Role.BOUNDED, StatCandidate("dw_sq"), LossMoveBound(cfg.r_max, tol, cfg.lag))


def contribution_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    tol = Tolerance(cfg.eps_contrib, cfg.tol_abs)
    return LyapunovMonitor("contribution", Role.HARMLESS, ContributionCandidate(), BelowTolerance(tol))


def default_monitors(cfg: MonitorConfig) -> tuple[Monitor, ...]:
    """The four built-in monitors (a)-(d)."""
    return (convergence_monitor(cfg), collapse_monitor(cfg), movement_monitor(cfg),
            contribution_monitor(cfg))
