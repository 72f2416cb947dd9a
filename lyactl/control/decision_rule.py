"""The decision rule: which monitors to evaluate where, and how their roles combine.

``prune_ok = COLLAPSED or (CONVERGED and HARMLESS)``, ``freeze_ok = (CONVERGED and BOUNDED) or
SETTLED`` (layers only; SETTLED monitors are opt-in, :mod:`lyactl.control.settled`); a role
holds on a group where *every* monitor of that role holds, and a
role with no monitor holds nowhere. Only eligible groups can be decided, so HARMLESS
matters only where CONVERGED holds on an eligible group, and BOUNDED only there and on
layers, SETTLED on eligible layers: :func:`evaluate_monitors` evaluates those monitors on just those columns
(:meth:`~lyactl.control.stats_window.StatsWindow.columns`). A monitor computes the same numbers on a
subset, column by column, so decisions and certificates are those of evaluating every
monitor everywhere, at a fraction of the cost (BOUNDED's remaining-path bound is the
dearest reduction of a report; ``tests/test_controller_subsets.py`` checks the equality).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from lyactl.control.monitors import Monitor, MonitorResult, Role, StatsWindow

__all__ = ["RoleVerdicts", "evaluate_monitors", "role_holds", "role_verdicts"]


@dataclass(frozen=True)
class RoleVerdicts:
    """Per-group booleans ``[n]``: ``prune_ok``, ``freeze_ok`` and each role's own."""

    prune_ok: np.ndarray
    freeze_ok: np.ndarray
    roles: dict[Role, np.ndarray]


def evaluate_monitors(monitors: Sequence[Monitor], window: StatsWindow, eligible: np.ndarray,
                      is_layer: np.ndarray, allow_prune: bool = True, allow_freeze: bool = True) -> list[MonitorResult]:
    """Every monitor's result, in order; HARMLESS and BOUNDED ones on the groups where they
    can change a decision only (omitted when there are none). Cost: the CONVERGED and
    COLLAPSED monitors over ``n`` groups, the others over their subsets."""
    n = window.n_groups
    first = {k: m.evaluate(window) for k, m in enumerate(monitors) if m.role in (Role.COLLAPSED, Role.CONVERGED)}
    conv = role_holds(first.values(), Role.CONVERGED, n) & eligible
    need = {Role.HARMLESS: conv if allow_prune else None, Role.BOUNDED: conv & is_layer if allow_freeze else None,
            Role.SETTLED: eligible & is_layer if allow_freeze else None}
    subsets = {role: np.flatnonzero(mask) for role, mask in need.items() if mask is not None and mask.any()}
    windows = {role: window.columns(idx) for role, idx in subsets.items()}
    results = []
    for k, m in enumerate(monitors):
        if k in first:
            results.append(first[k])
        elif m.role in windows:
            r = m.evaluate(windows[m.role])
            results.append(r if r.columns is not None else replace(r, columns=subsets[m.role]))
    return results


def role_holds(results: Iterable[MonitorResult], role: Role, n: int) -> np.ndarray:
    """``[n]``: where every monitor of ``role`` holds (nowhere if none has that role)."""
    ok: np.ndarray | None = None
    for r in results:
        if r.monitor.role is role:
            ok = r.holds(n) if ok is None else ok & r.holds(n)
    return ok if ok is not None else np.zeros(n, bool)


def role_verdicts(results: Sequence[MonitorResult], n: int, is_layer: np.ndarray, allow_prune: bool = True,
                  allow_freeze: bool = True) -> RoleVerdicts:
    """Combine the roles into ``prune_ok`` and ``freeze_ok`` (new arrays, the caller's)."""
    roles = {role: role_holds(results, role, n) for role in Role}
    prune_ok = roles[Role.COLLAPSED] | (roles[Role.CONVERGED] & roles[Role.HARMLESS])
    freeze_ok = ((roles[Role.CONVERGED] & roles[Role.BOUNDED]) | roles[Role.SETTLED]) & is_layer
    if not allow_prune:
        prune_ok[:] = False
    if not allow_freeze:
        freeze_ok[:] = False
    return RoleVerdicts(prune_ok, freeze_ok, roles)
