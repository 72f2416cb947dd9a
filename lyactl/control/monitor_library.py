"""Candidates and conditions of the built-in monitors (see :mod:`lyactl.control.monitors`).

(a) :class:`Contracts` on ``V_k = dw_sq_k``: all successive ratios
    ``sqrt(V_{k+1}/V_k) <= r_max < 1``;
(b) :class:`Collapses` on ``V_k = w_sq_k``: contracting with every ratio ``<= rho_max``
    while already below ``rel_floor`` of its peak, or below ``abs_floor``;
(c) :class:`LossMoveBound` on ``V_k = dw_sq_k``: contracting as in (a), the path still to
    go is at most ``R = E r_hat/(1 - r_hat)`` (geometric tail, ``E >= sqrt(V_last)``), so
    ``R^2`` bounds the squared distance to the equilibrium the group converges to, and the
    loss change still possible from it is at most ``|g| R + curv R^2/2 < tol``;
(d) :class:`BelowTolerance` on ``V_k = |-gw_k + curv_k w_sq_k/2|``: ``max_k V_k < tol``.

``tol = eps * loss / n_total`` (``n_total`` groups in the model; or an absolute
``tol_abs``), see :class:`Tolerance`.
Derivations of every closed form live in ``theory/monitors.py``. Reductions over the
window that several monitors need (max ratios, ``r_hat``, ``R``) are computed once per
report through :meth:`~lyactl.control.stats_window.StatsWindow.cached`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lyactl.control.stats_window import TINY, Window

__all__ = ["StatCandidate", "ContributionCandidate", "Tolerance", "Contracts", "Collapses", "LossMoveBound",
           "BelowTolerance"]


@dataclass(frozen=True)
class StatCandidate:
    """``V_k`` = one statistic of report ``k`` (e.g. ``w_sq`` or ``dw_sq``)."""

    stat: str

    @property
    def name(self) -> str:
        return self.stat

    def values(self, window: Window) -> np.ndarray:
        return window.field(self.stat)

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        return {self.stat: window.field(self.stat)}

    def definitions(self, W: int) -> tuple[str, ...]:
        return tuple(f"V_{k} := {self.stat}_{k}" for k in range(W))


@dataclass(frozen=True)
class ContributionCandidate:
    """``V_k = |-gw_k + curv_used_k w_sq_k / 2|``: second-order loss change of ``w -> 0``."""

    name: str = "removal_dL"

    def values(self, window: Window) -> np.ndarray:
        return window.field("removal_dL")  # computed row by row in StatsWindow.push

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        return {f: window.field(f) for f in ("gw", "curv_used", "w_sq")}

    def definitions(self, W: int) -> tuple[str, ...]:
        return tuple(f"V_{k} := Abs(-gw_{k} + curv_used_{k}*w_sq_{k}/2)" for k in range(W))


def _power(q: np.ndarray, e: float) -> np.ndarray:
    return q if e == 1 else (np.sqrt(q) if e == 0.5 else (np.sqrt(np.sqrt(q)) if e == 0.25 else q**e))


def _max_ratio(V: np.ndarray, power: float, lag: int = 1) -> np.ndarray:
    """``max_k (V_{k+lag}/(V_k + TINY))**(power/lag)`` over the window, ``[n]``."""
    return _power(np.max(V[lag:] / (V[:-lag] + TINY), axis=0), power / lag)


def _stat_ratio(V: np.ndarray, window: Window, power: float, lag: int) -> np.ndarray:
    """:func:`_max_ratio`, shared between monitors (once per report) when V is a window
    view of a statistic."""
    for f in ("dw_sq", "w_sq"):
        if _is_field(V, window, f):
            return window.cached(("ratio", f, lag, power), lambda: _power(window.max_ratio(f, lag), power / lag))
    return _max_ratio(V, power, lag)


def _is_field(V: np.ndarray, window: Window, f: str) -> bool:
    """True if ``V`` is exactly the window view of statistic ``f`` (safe to share results)."""
    view = window.field(f)
    return V is view or (V.base is view.base and V.shape == view.shape and V.strides == view.strides
                         and V.ctypes.data == view.ctypes.data)


def _shared_path(V: np.ndarray, window: Window, r_hat: np.ndarray, lag: int) -> np.ndarray:
    if _is_field(V, window, "dw_sq"):
        return window.cached(("R", lag), lambda: _remaining_path(V, r_hat))
    return _remaining_path(V, r_hat)


def _ratio_text(W: int, power: str, lag: int = 1) -> str:
    terms = ", ".join(f"(V_{k + lag}/(V_{k} + tiny))**({power}/{lag})" for k in range(W - lag))
    return f"Max({terms})"


def _remaining_path(V: np.ndarray, r_hat: np.ndarray) -> np.ndarray:
    """``R = E r/(1 - r)`` with the envelope ``E = max_k sqrt(V_k) r^(W-1-k)`` at the newest
    report (``E >= sqrt(V_last)``; it covers displacements that oscillate under the rate).

    Computed squared, ``E^2 = max_k V_k (r^2)^(W-1-k)`` (sqrt is monotone), so one sqrt
    per group instead of W. Cost: one gather of the ``[W, m]`` columns with ``r_hat < 1``
    and ``O(W m)`` in place.
    """
    R = np.full(V.shape[1], np.inf)
    idx = np.flatnonzero(r_hat < 1)  # elsewhere the path is unbounded; computed only here
    r, S = r_hat[idx], np.take(V, idx, axis=1)
    q = r * r
    E2 = S[0]
    for k in range(1, V.shape[0]):  # Horner: E2 = max(E2 q, V_k) = max_k V_k q^(W-1-k)
        E2 *= q
        np.maximum(E2, S[k], out=E2)
    R[idx] = np.sqrt(E2) * r / (1.0 - r)
    return R


def _remaining_text(W: int) -> str:
    terms = ", ".join(f"sqrt(V_{k})*r_hat**{W - 1 - k}" for k in range(W))
    return f"R := Max({terms})*r_hat/(1 - r_hat)"


@dataclass(frozen=True)
class Tolerance:
    """``tol = eps * loss / n_total`` (loss of the newest report, ``n_total`` groups in the
    model, also when the window is a subset of them) or ``tol_abs``."""

    eps: float = 1e-3
    tol_abs: float | None = None

    def numbers(self, window: Window) -> dict[str, float]:
        if self.tol_abs is not None:
            return {"tol_abs": self.tol_abs, "tol": self.tol_abs}
        loss = float(window.scalar("loss")[-1])
        return {"eps": self.eps, "loss": loss, "n_groups": float(window.n_total),
                "tol": self.eps * abs(loss) / window.n_total}

    def text(self) -> str:
        return "tol := tol_abs" if self.tol_abs is not None else "tol := eps*Abs(loss)/n_groups"


@dataclass(frozen=True)
class Contracts:
    """(a) every ``(V_{k+lag}/V_k)^(1/(2 lag)) <= r_max``: the displacement contracts
    geometrically (the path it implies is bounded by :class:`LossMoveBound`)."""

    r_max: float = 0.9
    lag: int = 1

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        r_hat = _stat_ratio(V, window, 0.5, self.lag)
        return self.r_max - r_hat, {"tiny": TINY, "r_max": self.r_max, "r_hat": r_hat}

    def text(self, W: int) -> str:
        return f"r_hat := {_ratio_text(W, '1/2', self.lag)}; r_max - r_hat > 0"


@dataclass(frozen=True)
class Collapses:
    """(b) ``V = w_sq``: every lag-``L`` rate ``(V_{k+L}/V_k)^(1/L) <= rho_max`` and
    ``V_last <= rel_floor * peak``; or ``V_last <= abs_floor``.

    Contraction alone is not enough: a group in a transient towards a smaller but
    non-zero equilibrium also contracts for a while; the relative floor asks that most of
    its norm is already gone. The lag matters under momentum: heavy ball contracts its
    state ``(w, v)`` every step, but ``||w||^2`` alone can rise for a report while it
    oscillates, so one-report ratios would never certify it; ratios over ``L`` reports
    bound the decay along each of the ``L`` interleaved subsequences, which all go to zero.
    Margins are made dimensionless before the Max/Min.
    """

    rho_max: float = 0.999
    rel_floor: float = 1e-2
    abs_floor: float = 1e-20
    lag: int = 1

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        rho_hat = _stat_ratio(V, window, 1.0, self.lag)
        peak = window.peak_w_sq
        shrunk = np.multiply(peak, self.rel_floor)  # (rel_floor*peak - V_last)/(peak + tiny), in place
        shrunk -= V[-1]
        shrunk /= peak + TINY
        contract = np.subtract(self.rho_max, rho_hat)
        np.minimum(contract, shrunk, out=contract)
        floor = np.subtract(self.abs_floor, V[-1], out=shrunk)
        floor /= self.abs_floor
        nums = {"tiny": TINY, "rho_max": self.rho_max, "rel_floor": self.rel_floor,
                "abs_floor": self.abs_floor, "rho_hat": rho_hat, "peak": peak}
        return np.maximum(contract, floor, out=contract), nums

    def text(self, W: int) -> str:
        return (f"rho_hat := {_ratio_text(W, '1', self.lag)}; "
                f"Max(Min(rho_max - rho_hat, (rel_floor*peak - V_{W - 1})/(peak + tiny)), "
                f"(abs_floor - V_{W - 1})/abs_floor) > 0")


@dataclass(frozen=True)
class LossMoveBound:
    """(c) with ``V = dw_sq``: ``r_hat <= r_max`` and ``|g| R + curv R^2/2 < tol``, where
    ``|g|``, ``curv`` are those of the newest report (``curv_used``, see
    :class:`~lyactl.control.stats_window.StatsWindow`)."""

    r_max: float = 0.9
    tolerance: Tolerance = Tolerance()
    lag: int = 1

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
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

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        V_max = np.max(V, axis=0)
        nums = {"tiny": TINY, "V_max": V_max, **self.tolerance.numbers(window)}
        return (nums["tol"] - V_max) / (nums["tol"] + TINY), nums

    def text(self, W: int) -> str:
        terms = ", ".join(f"V_{k}" for k in range(W))
        return f"V_max := Max({terms}); {self.tolerance.text()}; (tol - V_max)/(tol + tiny) > 0"
