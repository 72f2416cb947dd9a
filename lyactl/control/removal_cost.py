"""What removing a group costs, measured: a paired confidence bound per group, and the event
that meets a FLOPs target by the lowest certified cost per FLOP.

Why (docs/results.md, issue 15): in continued training every collapse certificate fired on a
group the group-lasso actuator had already pushed to zero, so the certificate ratified what
the penalty did and the rollback guard never saw the damage, which the push did earlier.
Here nothing is pushed. Removal is measured on the model as it is: for calibration batch
``j`` (held out from training) and group ``g``,

    dL[j, g] = L_j(w with g removed) - L_j(w),

paired by batch (the same tokens with and without ``g``: the batch-to-batch spread of the
loss cancels). Over ``m`` batches, the expected loss increase of removing ``g`` alone is at
most

    u_g = mean_j dL[j, g] + t_{1-alpha/2, m-1} sd_j(dL[j, g]) / sqrt(m)

with confidence ``1 - alpha/2`` (the upper end of the two-sided t-interval; the batches are
independent draws of held-out text, the t-interval assumes their ``dL`` roughly normal). A
group is **certified harmless** when ``u_g < tol = eps * L`` (``L`` the base loss): the
condition a decision log re-verifies offline. A FLOPs target usually needs more than the
harmless groups: the event then takes the lowest ``u_g / F_g`` (``F_g`` the FLOPs its removal
saves) and those decisions carry the same numbers with the verdict UNKNOWN ("taken by the
budget, not certified"): a certificate says whether the removal is harmless at ``tol``, not
that it was chosen.

The bound is for one group removed alone. Removals interact (two heads that back each other
up each look cheap), so every event also records the sum of the chosen groups' means and
upper bounds; the backend then measures the joint increase on the same batches
(:func:`lyactl_torch.removal.apply_measured_round`), the falsifiable part: where the measured
joint cost exceeds the sum of the bounds, additivity failed and the record shows it. To second
order the gap is exactly the cross-curvature ``sum_{a<b} w_a^T H_ab w_b`` of the removed groups
(``theory/removal.py``): zero for groups that do not interact through the loss, positive for
redundant ones, and it grows with the square of the number removed at once.

Cost here: O(m n) for the bounds and O(log n) selections of :func:`cheapest_to_target`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

from lyactl.control.groups import PRUNED, Action, Certificate, Constraint, Decision, Event, Group, GroupKind
from lyactl.control.selection import Structure, select
from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg
from lyactl.verdict import Verdict

__all__ = ["RemovalCosts", "removal_costs", "cheapest_to_target", "removal_certificate", "measured_event",
           "flops_saved", "CONDITION"]

CONDITION = "upper := mean + t * sd / sqrt(m); tol > upper"


@dataclass(frozen=True, eq=False)
class RemovalCosts:
    """Per-group ``mean``, ``sd`` (``[n]``) of the paired loss increases over ``m`` batches,
    ``t`` the quantile ``t_{1-alpha/2, m-1}``, ``upper`` the bound of the module docstring
    (``+inf`` where a group was not measured or its data are not finite: no decision on NaN),
    ``base_loss`` the mean loss without removals."""

    mean: np.ndarray
    sd: np.ndarray
    m: int
    t: float
    upper: np.ndarray
    base_loss: float


def removal_costs(dL: np.ndarray, base_loss: float, alpha: float = 0.05) -> RemovalCosts:
    """The bounds of ``dL`` (``[m, n]``, ``m >= 2`` batches; a column of NaN = not measured).

    Raises :class:`ShapeError` for a wrong shape and :class:`InvalidArgumentError` for
    ``m < 2``, ``alpha`` outside (0, 1) or a non-finite ``base_loss``.
    """
    dL = np.asarray(dL, dtype=np.float64)
    if dL.ndim != 2:
        raise ShapeError(bad_arg("dL", "an array [m batches, n groups]", dL.shape))
    m = dL.shape[0]
    if m < 2:
        raise InvalidArgumentError(bad_arg("dL", "at least 2 batches (rows)", m))
    if not (0.0 < alpha < 1.0):
        raise InvalidArgumentError(bad_arg("alpha", "a number in (0, 1)", alpha))
    if not math.isfinite(base_loss):
        raise InvalidArgumentError(bad_arg("base_loss", "a finite loss", base_loss))
    ok = np.all(np.isfinite(dL), axis=0)
    safe = np.where(ok, dL, 0.0)
    mean, sd = safe.mean(axis=0), safe.std(axis=0, ddof=1)
    t = float(_st.t.ppf(1.0 - alpha / 2.0, m - 1))
    upper = np.where(ok, mean + t * sd / math.sqrt(m), np.inf)
    nan = np.where(ok, 0.0, np.nan)
    return RemovalCosts(mean + nan, sd + nan, m, t, upper, float(base_loss))


def cheapest_to_target(groups: Sequence[Group], constraints: Sequence[Constraint], scores: np.ndarray,
                       flops_model: Callable[[np.ndarray], float], target: float,
                       status: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The groups to prune, lowest ``scores`` first (ties by index; non-finite scores never),
    honouring ``constraints`` (min_keep, together, uniform) through
    :func:`lyactl.control.selection.select`: the fewest that bring ``flops_model`` to at most
    ``target`` times its value at ``status`` (the groups already gone; default none), or all
    the constraints allow. Bisection on the selection limit (FLOPs fall as it grows)."""
    if not (isinstance(target, float) and 0.0 < target <= 1.0):
        raise InvalidArgumentError(bad_arg("target", "a float in (0, 1]", target))
    scores = np.asarray(scores, dtype=np.float64)
    n = len(groups)
    if scores.shape != (n,):
        raise ShapeError(bad_arg("scores", f"shape ({n},)", scores.shape))
    status = np.zeros(n, np.int8) if status is None else np.asarray(status, np.int8)
    order = [int(i) for i in np.lexsort((np.arange(n), scores)) if math.isfinite(scores[i]) and status[i] != PRUNED]
    ready = {i: PRUNED for i in order}
    s = Structure(np.array([g.kind is GroupKind.LAYER for g in groups]), np.array([g.layer for g in groups]),
                  tuple(constraints))
    now = flops_model(status)

    def picked(limit: int) -> tuple[list[tuple[int, int]], float]:
        chosen = select(ready, status.copy(), s, limit)
        after = status.copy()
        after[[i for i, _ in chosen]] = PRUNED
        return chosen, flops_model(after) / now

    lo, hi = 0, max(1, len(order))
    while lo < hi:
        mid = (lo + hi) // 2
        if picked(mid)[1] <= target:
            hi = mid
        else:
            lo = mid + 1
    return picked(lo)[0]


def removal_certificate(costs: RemovalCosts, i: int, tol: float, step: int) -> Certificate:
    """The certificate of removing group ``i``: its numbers, :data:`CONDITION`, the margin
    ``tol - upper``; HOLDS where that is positive, else UNKNOWN (NaN data: UNKNOWN)."""
    numbers = {"mean": float(costs.mean[i]), "sd": float(costs.sd[i]), "m": float(costs.m), "t": costs.t,
               "upper": float(costs.upper[i]), "tol": float(tol), "base_loss": costs.base_loss}
    margin = float(tol - costs.upper[i]) if math.isfinite(costs.upper[i]) else math.nan
    verdict = Verdict.HOLDS if margin > 0 else Verdict.UNKNOWN
    return Certificate("removal-cost", verdict, (step, step), numbers, CONDITION, margin)


def flops_saved(n: int, flops_model: Callable[[np.ndarray], float], status: np.ndarray | None,
                mask: np.ndarray) -> np.ndarray:
    """``[n]``: what pruning each group alone saves now, ``flops_model(status) -
    flops_model(status + g)``, for the groups in ``mask`` (0 elsewhere). Counted from the model
    as it is, not from :attr:`Group.flops_remove`, which is fixed at discovery and overstates a
    block whose heads or neurons earlier rounds removed. Cost: one ``flops_model`` call per
    group in ``mask``."""
    status = np.zeros(n, np.int8) if status is None else np.asarray(status, np.int8)
    now, out = flops_model(status), np.zeros(n)
    for i in np.flatnonzero(mask & (status != PRUNED)):
        after = status.copy()
        after[i] = PRUNED
        out[i] = now - flops_model(after)
    return out


def measured_event(groups: Sequence[Group], constraints: Sequence[Constraint], costs: RemovalCosts,
                   flops_model: Callable[[np.ndarray], float], target: float, *, step: int, eps: float,
                   event_id: int = 0, status: np.ndarray | None = None) -> Event:
    """Prune the lowest ``upper / F`` (``F`` = the FLOPs the group's removal saves now,
    :func:`flops_saved`; among groups whose removal lowers the loss, ``upper < 0``, this ranks
    small ``F`` first, which matters only when the target is met before all of them) until the
    FLOPs are at most ``target`` of those at ``status``; each decision carries
    :func:`removal_certificate` with ``tol = eps * |base_loss|``. ``meta``: the sums of the
    chosen groups' means and bounds, how many were certified, ``tol``."""
    if not (math.isfinite(eps) and eps > 0):
        raise InvalidArgumentError(bad_arg("eps", "a number > 0", eps))
    before = np.zeros(len(groups), np.int8) if status is None else np.asarray(status, np.int8)
    saves = flops_saved(len(groups), flops_model, before, np.isfinite(costs.upper))
    rate = np.where(saves > 0, costs.upper / np.where(saves > 0, saves, 1.0), np.inf)
    idx = [i for i, _ in cheapest_to_target(groups, constraints, rate, flops_model, target, before)]
    tol = eps * abs(costs.base_loss)
    certs = {i: removal_certificate(costs, i, tol, step) for i in idx}
    decisions = tuple(Decision(step, groups[i].name, i, Action.PRUNE, (certs[i],)) for i in idx)
    after = before.copy()
    after[idx] = PRUNED
    meta = {"rule": "removal-cost", "tol": tol, "sum_mean": float(np.sum(costs.mean[idx])),
            "sum_upper": float(np.sum(costs.upper[idx])),
            "certified": sum(c.verdict is Verdict.HOLDS for c in certs.values()), "taken": len(idx)}
    return Event(event_id, step, decisions, flops_model(before), flops_model(after), meta)
