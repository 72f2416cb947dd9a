"""Online Lyapunov monitors over a sliding window of per-group statistics.

A monitor is a Lyapunov certificate evaluated for all groups at once: a *candidate*
``V`` (one value per report and group, shape ``[W, n_groups]``) and a *condition* on the
window of ``V`` (e.g. ``V`` contracts geometrically) whose signed margin is positive
exactly when the certificate holds. Every monitor, built-in or user-made, is a
:class:`LyapunovMonitor` (candidate + condition) behind the :class:`Monitor` protocol.

Conditions are also written out as text, one statement per ``;``::

    r_hat := Max(sqrt(V_1/(V_0 + tiny)), ...); r_max - r_hat > 0

so that every certificate can be re-verified offline from its logged numbers
(:func:`lyactl.decision_log.reverify`). Derivations of every closed form used here live
in ``theory/monitors.py``.

The built-in monitors (roles in brackets; the controller's decision rule is
``PRUNE <= COLLAPSED or (CONVERGED and HARMLESS)``, ``FREEZE <= CONVERGED and BOUNDED``):

(a) :func:`convergence_monitor` [CONVERGED]: ``V_k = dw_sq_k``; all successive ratios
    ``sqrt(V_{k+1}/V_k) <= r_max < 1`` so the path still to go is at most
    ``R = sqrt(V_last) r_hat/(1 - r_hat)`` (geometric tail), i.e. ``R^2`` bounds the squared
    distance to the equilibrium the group is converging to;
(b) :func:`collapse_monitor` [COLLAPSED]: ``V_k = w_sq_k`` contracting with every ratio
    ``<= rho_max`` while already below ``rel_floor`` of its peak, or below ``abs_floor``;
(c) :func:`movement_monitor` [BOUNDED]: loss change still possible from the remaining
    path, ``|g| R + curv R^2/2 < tol``;
(d) :func:`contribution_monitor` [HARMLESS]: ``max_k |-gw_k + curv_k w_sq_k/2| < tol``.

``tol = eps * loss / n_groups`` (or an absolute ``tol_abs``). Where the backend gives no
curvature, ``curv`` is replaced by the edge-of-stability bound ``curv_factor / lr``
(``curv_factor = 2``: gradient descent is stable only while sharpness < 2/eta); with
``curv_factor=None`` such groups are UNKNOWN.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidArgumentError, ShapeError, bad_arg
from .groups import STAT_FIELDS, Certificate, GroupStats
from .verdict import Verdict

__all__ = [
    "Role",
    "StatsWindow",
    "MonitorResult",
    "Candidate",
    "Condition",
    "Monitor",
    "LyapunovMonitor",
    "StatCandidate",
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

TINY = 1e-300
"""Added to denominators so that a window of exact zeros (a group that does not move)
reads as contraction, and 0/0 never appears."""

WINDOW_FIELDS: tuple[str, ...] = STAT_FIELDS + ("curv_used", "removal_dL")
_SCALARS: tuple[str, ...] = ("step", "lr", "loss", "weight_decay", "interval", "val_loss")
_RATIOS: tuple[tuple[str, int], ...] = (("w_sq", 1), ("dw_sq", 1), ("dw_sq", 2), ("dw_sq", 3))


class Role(enum.Enum):
    """What a monitor certifies (the controller combines roles, see module docstring)."""

    CONVERGED = "converged"
    COLLAPSED = "collapsed"
    BOUNDED = "bounded"
    HARMLESS = "harmless"


class StatsWindow:
    """The last ``length`` reports of every statistic, ordered oldest to newest.

    Stored twice over in a ``[2W, n]`` buffer so that :meth:`field` is a zero-copy view
    (``O(n)`` per push, no reordering). ``curv_used`` is ``curv`` where finite and
    ``curv_factor / lr`` elsewhere (NaN if ``curv_factor`` is None). ``peak_w_sq`` is the
    running maximum of finite ``w_sq`` per group.
    """

    def __init__(self, n_groups: int, length: int, curv_factor: float | None = 2.0) -> None:
        if length < 3:
            raise InvalidArgumentError(bad_arg("StatsWindow.length", "an int >= 3", length))
        self.n_groups, self.length, self.curv_factor = int(n_groups), int(length), curv_factor
        self._buf = {f: np.full((2 * length, n_groups), np.nan) for f in WINDOW_FIELDS}
        self._scal = {s: np.full(2 * length, np.nan) for s in _SCALARS}
        self.peak_w_sq = np.zeros(n_groups)
        self.head = 0
        self.count = 0
        self.memo = {}
        # successive ratios V_k / (V_{k-lag} + TINY), one new row per push ([n] work instead of [W, n])
        self._ratio = {key: np.full((2 * length, n_groups), np.nan) for key in _RATIOS if key[1] < length}

    @property
    def full(self) -> bool:
        return self.count >= self.length

    def push(self, stats: GroupStats, ignore: np.ndarray | None = None) -> None:
        """Append one report; groups where ``ignore`` is True are stored as NaN."""
        stats.validate(self.n_groups)
        rows = (self.head, self.head + self.length)
        curv = stats.curv
        default = self.curv_factor / stats.lr if self.curv_factor is not None and stats.lr > 0 else math.nan
        curv_used = np.where(np.isfinite(curv), curv, default)
        with np.errstate(all="ignore"):
            new = {**{f: getattr(stats, f) for f in STAT_FIELDS}, "curv_used": curv_used,
                   "removal_dL": np.abs(0.5 * curv_used * stats.w_sq - stats.gw)}
        drop = ignore is not None and bool(ignore.any())
        for f in WINDOW_FIELDS:
            buf = self._buf[f]
            buf[rows[0]] = new[f]
            if drop:
                buf[rows[0], ignore] = np.nan
            buf[rows[1]] = buf[rows[0]]
        for s in _SCALARS:
            self._scal[s][rows[0]] = self._scal[s][rows[1]] = float(getattr(stats, s))
        for (f, lag), ring in self._ratio.items():
            with np.errstate(all="ignore"):
                np.divide(self._buf[f][rows[0]], self._buf[f][rows[1] - lag] + TINY, out=ring[rows[0]])
            ring[rows[1]] = ring[rows[0]]
        self.peak_w_sq = np.fmax(self.peak_w_sq, self._buf["w_sq"][rows[0]])
        self.head = (self.head + 1) % self.length
        self.count += 1
        self.memo: dict[Any, Any] = {}

    def max_ratio(self, f: str, lag: int) -> np.ndarray:
        """``max_k V_{k+lag} / (V_k + TINY)`` over the window for statistic ``f``, ``[n]``."""
        if (f, lag) not in self._ratio:
            V = self.field(f)
            with np.errstate(all="ignore"):
                return np.max(V[lag:] / (V[:-lag] + TINY), axis=0)
        return self.cached(("max_ratio", f, lag),
                           lambda: np.max(self._ratio[(f, lag)][self.head + lag:self.head + self.length], axis=0))

    def _rebuild_ratios(self) -> None:
        """Recompute the ratio rings from the fields (after :meth:`load_state_dict`, head 0)."""
        for (f, lag), ring in self._ratio.items():
            V = self.field(f)
            ring[:] = np.nan
            with np.errstate(all="ignore"):
                ring[lag:self.length] = V[lag:] / (V[:-lag] + TINY)
            ring[self.length:] = ring[:self.length]

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per report for ``key`` (shared by monitors)."""
        if key not in self.memo:
            self.memo[key] = fn()
        return self.memo[key]

    def field(self, name: str) -> np.ndarray:
        """``[W, n]`` view of a statistic, oldest report first (no copy)."""
        return self._buf[name][self.head:self.head + self.length]

    def scalar(self, name: str) -> np.ndarray:
        """``[W]`` per-report scalar (step, lr, loss, weight_decay, interval, val_loss)."""
        return self._scal[name][self.head:self.head + self.length]

    def steps(self) -> tuple[int, int]:
        s = self.scalar("step")
        return (int(s[0]) if math.isfinite(s[0]) else -1, int(s[-1]) if math.isfinite(s[-1]) else -1)

    def reset_groups(self, mask: np.ndarray) -> None:
        """Forget the history of groups in ``mask`` (after a restore)."""
        self.memo = {}
        for ring in self._ratio.values():
            ring[:, mask] = np.nan
        for f in WINDOW_FIELDS:
            self._buf[f][:, mask] = np.nan

    def state_dict(self) -> dict[str, Any]:
        from .decision_log import encode_array  # one JSON encoding for the package

        return {"n_groups": self.n_groups, "length": self.length, "curv_factor": self.curv_factor,
                "head": self.head, "count": self.count, "peak_w_sq": encode_array(self.peak_w_sq),
                "buf": {f: encode_array(self.field(f)) for f in WINDOW_FIELDS},
                "scal": {s: encode_array(self.scalar(s)) for s in _SCALARS}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from .decision_log import decode_array

        if state["n_groups"] != self.n_groups or state["length"] != self.length:
            raise ShapeError(bad_arg("StatsWindow state", f"n_groups={self.n_groups}, length={self.length}",
                                     (state["n_groups"], state["length"])))
        self.head, self.count, self.memo = 0, int(state["count"]), {}
        self.peak_w_sq = decode_array(state["peak_w_sq"])
        for f in WINDOW_FIELDS:
            ordered = decode_array(state["buf"][f]).reshape(self.length, self.n_groups)
            self._buf[f][: self.length], self._buf[f][self.length:] = ordered, ordered
        for s in _SCALARS:
            ordered = decode_array(state["scal"][s])
            self._scal[s][: self.length], self._scal[s][self.length:] = ordered, ordered
        self._rebuild_ratios()


@dataclass(frozen=True)
class MonitorResult:
    """One monitor evaluated on all groups: ``margin`` ``[n]`` (NaN = UNKNOWN), the
    candidate values ``V`` ``[W, n]`` and the condition's numbers (arrays ``[n]`` or
    scalars)."""

    monitor: "LyapunovMonitor"
    window: tuple[int, int]
    margin: np.ndarray
    V: np.ndarray
    numbers: Mapping[str, Any]
    inputs: Mapping[str, np.ndarray]

    def holds(self) -> np.ndarray:
        """Boolean ``[n]``: margin finite and > 0 (NaN compares False: fail safe)."""
        return self.margin > 0

    def verdict(self, i: int) -> Verdict:
        m = float(self.margin[i])
        return Verdict.UNKNOWN if not math.isfinite(m) else (Verdict.HOLDS if m > 0 else Verdict.FAILS)

    def certificate(self, i: int) -> Certificate:
        """The certificate for group ``i`` (built only for groups actually decided)."""
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
        return Certificate(self.monitor.name, self.verdict(i), self.window, nums, text,
                           float(self.margin[i]))


@runtime_checkable
class Candidate(Protocol):
    """A Lyapunov candidate ``V`` over a group's statistics window."""

    name: str

    def values(self, window: StatsWindow) -> np.ndarray:
        """``[W, n]`` values of V, one row per report (oldest first)."""
        ...

    def inputs(self, window: StatsWindow) -> Mapping[str, np.ndarray]:
        """Raw ``[W, n]`` statistics V is computed from (logged as ``name_k``)."""
        ...

    def definitions(self, W: int) -> tuple[str, ...]:
        """Statements ``"V_k := expr"`` over the inputs; empty if V is opaque."""
        ...


@runtime_checkable
class Condition(Protocol):
    """The inequality on the window of V that makes V a certificate."""

    def evaluate(self, V: np.ndarray, window: StatsWindow) -> tuple[np.ndarray, dict[str, Any]]:
        """Signed margin ``[n]`` (> 0 holds) and the numbers it used (``[n]`` or scalar)."""
        ...

    def text(self, W: int) -> str:
        """``"a := ...; b := ...; lhs > rhs"`` over ``V_0..V_{W-1}`` and the numbers."""
        ...


@runtime_checkable
class Monitor(Protocol):
    """Anything that evaluates a certificate for all groups from a window."""

    name: str
    role: Role

    def evaluate(self, window: StatsWindow) -> MonitorResult:
        ...


@dataclass(frozen=True)
class LyapunovMonitor:
    """A monitor from a candidate V and a condition; margin NaN until the window is full."""

    name: str
    role: Role
    candidate: Candidate
    condition: Condition

    def evaluate(self, window: StatsWindow) -> MonitorResult:
        with np.errstate(all="ignore"):  # overflow/NaN become non-finite margins: UNKNOWN
            V = np.asarray(self.candidate.values(window), dtype=float)
            if V.shape != (window.length, window.n_groups):
                raise ShapeError(bad_arg(f"candidate {self.candidate.name!r} values",
                                         f"shape ({window.length}, {window.n_groups})", V.shape))
            margin, numbers = self.condition.evaluate(V, window)
        margin = np.where(np.isfinite(margin), margin, np.nan)
        if not window.full:
            margin = np.full(window.n_groups, np.nan)
        return MonitorResult(self, window.steps(), margin, V, numbers, self.candidate.inputs(window))


@dataclass(frozen=True)
class StatCandidate:
    """``V_k`` = one statistic of report ``k`` (e.g. ``w_sq`` or ``dw_sq``)."""

    stat: str

    @property
    def name(self) -> str:
        return self.stat

    def values(self, window: StatsWindow) -> np.ndarray:
        return window.field(self.stat)

    def inputs(self, window: StatsWindow) -> Mapping[str, np.ndarray]:
        return {self.stat: window.field(self.stat)}

    def definitions(self, W: int) -> tuple[str, ...]:
        return tuple(f"V_{k} := {self.stat}_{k}" for k in range(W))


def _max_ratio(V: np.ndarray, power: float, lag: int = 1) -> np.ndarray:
    """``max_k (V_{k+lag}/(V_k + TINY))**(power/lag)`` over the window, ``[n]``."""
    q = np.max(V[lag:] / (V[:-lag] + TINY), axis=0)
    e = power / lag
    return q if e == 1 else (np.sqrt(q) if e == 0.5 else (np.sqrt(np.sqrt(q)) if e == 0.25 else q**e))


def _stat_ratio(V: np.ndarray, window: StatsWindow, power: float, lag: int) -> np.ndarray:
    """:func:`_max_ratio`, shared between monitors when V is a window view of a statistic."""
    for f in ("dw_sq", "w_sq"):
        if _is_field(V, window, f):
            q = window.max_ratio(f, lag)
            e = power / lag
            return q if e == 1 else (np.sqrt(q) if e == 0.5 else (np.sqrt(np.sqrt(q)) if e == 0.25 else q**e))
    return _max_ratio(V, power, lag)


def _is_field(V: np.ndarray, window: StatsWindow, f: str) -> bool:
    """True if ``V`` is exactly the window view of statistic ``f`` (safe to share results)."""
    view = window.field(f)
    return V.base is window._buf[f] and V.shape == view.shape and V.ctypes.data == view.ctypes.data


def _shared_path(V: np.ndarray, window: StatsWindow, r_hat: np.ndarray, lag: int) -> np.ndarray:
    if _is_field(V, window, "dw_sq"):
        return window.cached(("R", lag), lambda: _remaining_path(V, r_hat))
    return _remaining_path(V, r_hat)


def _ratio_text(W: int, power: str, lag: int = 1) -> str:
    terms = ", ".join(f"(V_{k + lag}/(V_{k} + tiny))**({power}/{lag})" for k in range(W - lag))
    return f"Max({terms})"


def _remaining_path(V: np.ndarray, r_hat: np.ndarray) -> np.ndarray:
    """``R = E r/(1 - r)`` with the envelope ``E = max_k sqrt(V_k) r^(W-1-k)`` at the newest
    report (``E >= sqrt(V_last)``; it covers displacements that oscillate under the rate)."""
    R = np.full(V.shape[1], np.inf)
    idx = np.flatnonzero(r_hat < 1)  # elsewhere the path is unbounded; computed only here
    r, E = r_hat[idx], np.sqrt(V[0, idx])
    for k in range(1, V.shape[0]):  # Horner: E = max(E r, sqrt(V_k)) = max_k sqrt(V_k) r^(W-1-k)
        E = np.maximum(E * r, np.sqrt(V[k, idx]))
    R[idx] = E * r / (1.0 - r)
    return R


def _remaining_text(W: int) -> str:
    terms = ", ".join(f"sqrt(V_{k})*r_hat**{W - 1 - k}" for k in range(W))
    return f"R := Max({terms})*r_hat/(1 - r_hat)"


@dataclass(frozen=True)
class Tolerance:
    """``tol = eps * loss / n_groups`` (loss of the newest report) or ``tol_abs``."""

    eps: float = 1e-3
    tol_abs: float | None = None

    def numbers(self, window: StatsWindow) -> dict[str, float]:
        if self.tol_abs is not None:
            return {"tol_abs": self.tol_abs, "tol": self.tol_abs}
        loss = float(window.scalar("loss")[-1])
        return {"eps": self.eps, "loss": loss, "n_groups": float(window.n_groups),
                "tol": self.eps * abs(loss) / window.n_groups}

    def text(self) -> str:
        return "tol := tol_abs" if self.tol_abs is not None else "tol := eps*Abs(loss)/n_groups"


@dataclass(frozen=True)
class Contracts:
    """(a) every ``sqrt(V_{k+1}/V_k) <= r_max``; remaining path ``R = sqrt(V_last) r/(1-r)``."""

    r_max: float = 0.9
    lag: int = 1

    def evaluate(self, V: np.ndarray, window: StatsWindow) -> tuple[np.ndarray, dict[str, Any]]:
        r_hat = _stat_ratio(V, window, 0.5, self.lag)
        R = _shared_path(V, window, r_hat, self.lag)
        return self.r_max - r_hat, {"tiny": TINY, "r_max": self.r_max, "r_hat": r_hat, "R": R}

    def text(self, W: int) -> str:
        return f"r_hat := {_ratio_text(W, '1/2', self.lag)}; {_remaining_text(W)}; r_max - r_hat > 0"


@dataclass(frozen=True)
class Collapses:
    """(b) ``V = w_sq``: every ratio ``V_{k+1}/V_k <= rho_max`` and
    ``V_last <= rel_floor * peak``; or ``V_last <= abs_floor``.

    Contraction alone is not enough: a group in a transient towards a smaller but
    non-zero equilibrium also contracts for a while; the relative floor asks that most of
    its norm is already gone. Margins are made dimensionless before the Max/Min.
    """

    rho_max: float = 0.999
    rel_floor: float = 1e-2
    abs_floor: float = 1e-20

    def evaluate(self, V: np.ndarray, window: StatsWindow) -> tuple[np.ndarray, dict[str, Any]]:
        rho_hat = _stat_ratio(V, window, 1.0, 1)
        peak = window.peak_w_sq
        contract = np.minimum(self.rho_max - rho_hat, (self.rel_floor * peak - V[-1]) / (peak + TINY))
        floor = (self.abs_floor - V[-1]) / self.abs_floor
        nums = {"tiny": TINY, "rho_max": self.rho_max, "rel_floor": self.rel_floor,
                "abs_floor": self.abs_floor, "rho_hat": rho_hat, "peak": peak}
        return np.maximum(contract, floor), nums

    def text(self, W: int) -> str:
        return (f"rho_hat := {_ratio_text(W, '1')}; "
                f"Max(Min(rho_max - rho_hat, (rel_floor*peak - V_{W - 1})/(peak + tiny)), "
                f"(abs_floor - V_{W - 1})/abs_floor) > 0")


@dataclass(frozen=True)
class LossMoveBound:
    """(c) with ``V = dw_sq``: ``r_hat <= r_max`` and ``|g| R + curv R^2/2 < tol``, where
    ``|g|``, ``curv`` are those of the newest report (``curv_used``, see module doc)."""

    r_max: float = 0.9
    tolerance: Tolerance = Tolerance()
    lag: int = 1

    def evaluate(self, V: np.ndarray, window: StatsWindow) -> tuple[np.ndarray, dict[str, Any]]:
        r_hat = _stat_ratio(V, window, 0.5, self.lag)
        R = _shared_path(V, window, r_hat, self.lag)
        g_sq, curv = window.field("g_sq")[-1], window.field("curv_used")[-1]
        dL = np.sqrt(g_sq) * R + 0.5 * curv * R**2
        nums = {"tiny": TINY, "r_max": self.r_max, "r_hat": r_hat, "R": R, "g_sq": g_sq,
                "curv": curv, "dL": dL, **self.tolerance.numbers(window)}
        margin = np.minimum(self.r_max - r_hat, (nums["tol"] - dL) / (nums["tol"] + TINY))
        return margin, nums

    def text(self, W: int) -> str:
        return (f"r_hat := {_ratio_text(W, '1/2', self.lag)}; {_remaining_text(W)}; "
                f"dL := sqrt(g_sq)*R + curv*R**2/2; {self.tolerance.text()}; "
                "Min(r_max - r_hat, (tol - dL)/(tol + tiny)) > 0")


@dataclass(frozen=True)
class BelowTolerance:
    """(d) ``max_k V_k < tol`` (dimensionless margin ``(tol - V_max)/tol``)."""

    tolerance: Tolerance = Tolerance()

    def evaluate(self, V: np.ndarray, window: StatsWindow) -> tuple[np.ndarray, dict[str, Any]]:
        V_max = np.max(V, axis=0)
        nums = {"tiny": TINY, "V_max": V_max, **self.tolerance.numbers(window)}
        return (nums["tol"] - V_max) / (nums["tol"] + TINY), nums

    def text(self, W: int) -> str:
        terms = ", ".join(f"V_{k}" for k in range(W))
        return f"V_max := Max({terms}); {self.tolerance.text()}; (tol - V_max)/(tol + tiny) > 0"


@dataclass(frozen=True)
class _ContributionCandidate:
    """``V_k = |-gw_k + curv_used_k w_sq_k / 2|``: second-order loss change of ``w -> 0``."""

    name: str = "removal_dL"

    def values(self, window: StatsWindow) -> np.ndarray:
        return window.field("removal_dL")  # computed row by row in StatsWindow.push

    def inputs(self, window: StatsWindow) -> Mapping[str, np.ndarray]:
        return {f: window.field(f) for f in ("gw", "curv_used", "w_sq")}

    def definitions(self, W: int) -> tuple[str, ...]:
        return tuple(f"V_{k} := Abs(-gw_{k} + curv_used_{k}*w_sq_{k}/2)" for k in range(W))


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
                           Collapses(cfg.rho_max, cfg.rel_floor, cfg.abs_floor))


def movement_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    tol = Tolerance(cfg.eps_move, cfg.tol_abs)
    return LyapunovMonitor("movement", Role.BOUNDED, StatCandidate("dw_sq"), LossMoveBound(cfg.r_max, tol, cfg.lag))


def contribution_monitor(cfg: MonitorConfig) -> LyapunovMonitor:
    tol = Tolerance(cfg.eps_contrib, cfg.tol_abs)
    return LyapunovMonitor("contribution", Role.HARMLESS, _ContributionCandidate(), BelowTolerance(tol))


def default_monitors(cfg: MonitorConfig) -> tuple[Monitor, ...]:
    """The four built-in monitors (a)-(d)."""
    return (convergence_monitor(cfg), collapse_monitor(cfg), movement_monitor(cfg),
            contribution_monitor(cfg))
