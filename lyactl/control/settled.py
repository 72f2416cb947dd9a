"""The settled-group freeze certificate: what a group's own updates still buy, bounded with
confidence and projected over the learning rate still to come.

Why another freeze certificate. The built-in rule ``FREEZE <= CONVERGED and BOUNDED`` asks the
displacement to contract geometrically and bounds the loss change by ``|g| R``. Under AdamW the
step size is set by the learning rate, not by how close a group is to an optimum, so nothing
contracts mid-run, and ``|g| R`` (Cauchy-Schwarz between a NOISY mini-batch gradient and the
path) is hundreds of times the tolerance even where the group's mean gradient is nearly
orthogonal to where it moves (``benchmarks/studies/freeze_margin.py``). What a freeze gives up
is the loss decrease the group's future updates would have bought; to first order that is
additive over groups and measurable:

    b_k = -g'_k . D_k / (lr_k K_k),

``D_k`` the group's displacement over one report interval (``K_k`` steps at learning rate
``lr_k``) and ``g'_k`` the first gradient taken AFTER it, on a mini-batch the path never saw
(the backend's ``gdw`` statistic, lagged one report: ``gdw`` of report ``k`` describes the
interval that ended at report ``k - 1``, so ``b_k`` uses report ``k - 1``'s ``lr`` and
``interval``). ``E[b_k | path] = -grad L(w) . D_k / (lr_k K_k)``: the first-order loss decrease
per unit of learning rate the group's own movement bought, without the bias a gradient from
the same interval carries (it is correlated with the step it drives).

The certificate, on the ``n = W - 1`` values of the window (report ``0`` has no previous
interval in the window):

    u = |mean(b)| + t_{1-alpha/2, n-1} sd(b) / sqrt(n)   (the farther end of the two-sided
                                                          1 - alpha interval of the mean)
    dL = u * Lambda,  Lambda = lr_now * (T - step_now)
    holds iff dL < tol = eps * |loss| / n_share

Two-sided, not one-sided, because ``b`` reads ``-g(w_now) . D_past``: what moving on in the
direction the group just moved would buy. Where a step overshoots (a sharp direction near the
edge of stability) that is NEGATIVE while the group is far from settled: the optimizer will not
move on, it will turn back, and that buys loss. A one-sided bound ``max(u, 0)`` certified
exactly those groups (seen on the tiny CPU preset early in the run: ``b`` of -2 to -27 per unit
learning rate, ``benchmarks/studies/settled_margin.py``); the two-sided interval asks the
group's movement to neither buy nor cost loss at first order, with confidence.

``Lambda`` bounds the learning rate still to come when the schedule does not rise again
(warm-up over, cosine or linear decay: the user states ``T``, the run's last step);
``n_share`` is the number of groups the freeze budget ``eps |loss|`` is shared among (the
freezable ones, the blocks: dividing it among every group, as the prune tolerance does, would
spend it on groups that can never be frozen).

What it assumes, and says so in its numbers: (i) the benefit rate over the window is a
stationary sample whose mean does not grow later (a group that starts to matter again is not
covered; the rollback guard is the backstop); (ii) the loss is locally convex along the
group's future path (Gauss-Newton: the second-order term ``-D^T H D / 2`` of a step can only
reduce its benefit, so the first-order projection is an upper bound); (iii) the window's
samples are independent enough for the t bound (successive intervals share Adam's moments;
the bound is a statement in expectation with confidence ``1 - alpha``, not a worst case).
NaN anywhere in a group's window (an interval after a structural change, an unmeasured
``gdw``) gives no certificate. Derivation of the bias claim: ``theory/settled.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import stats as _st

from lyactl.control.monitors import LyapunovMonitor, Role
from lyactl.control.stats_window import TINY, Window
from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["BenefitCandidate", "RemainingBenefit", "settled_monitor"]


def _per_report(window: Window, name: str) -> np.ndarray:
    """A per-report scalar broadcast to ``[W, n]`` (logged per group as ``name_k``)."""
    return np.broadcast_to(window.scalar(name)[:, None], (window.length, window.n_groups))


@dataclass(frozen=True)
class BenefitCandidate:
    """``V_k = -gdw_k / (lr_{k-1} interval_{k-1})`` for ``k >= 1`` (``V_0`` NaN, unused)."""

    name: str = "benefit_rate"

    def values(self, window: Window) -> np.ndarray:
        gdw = window.field("gdw")
        lr, K = window.scalar("lr"), window.scalar("interval")
        V = np.full(gdw.shape, np.nan)
        V[1:] = -gdw[1:] / (lr[:-1, None] * K[:-1, None])
        return V

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        return {"gdw": window.field("gdw"), "lr": _per_report(window, "lr"),
                "interval": _per_report(window, "interval")}

    def definitions(self, W: int) -> tuple[str, ...]:
        return tuple(f"V_{k} := -gdw_{k}/(lr_{k - 1}*interval_{k - 1})" for k in range(1, W))


@dataclass(frozen=True)
class RemainingBenefit:
    """``u * lr_now * (T - step_now) < eps |loss| / n_share`` (module docstring), with ``u`` the
    farther end from zero of the two-sided ``1 - alpha`` t-interval of the mean of
    ``V_1..V_{W-1}``. Dimensionless margin ``(tol - dL) / (tol + tiny)``."""

    total_steps: int
    n_share: int
    eps: float = 1e-3
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for name, ok, expected in (("total_steps", isinstance(self.total_steps, int) and self.total_steps > 0,
                                    "an int > 0"),
                                   ("n_share", isinstance(self.n_share, int) and self.n_share > 0, "an int > 0"),
                                   ("eps", self.eps > 0, "a number > 0"),
                                   ("alpha", 0 < self.alpha < 0.5, "a number in (0, 0.5)")):
            if not ok:
                raise InvalidArgumentError(bad_arg(f"RemainingBenefit.{name}", expected, getattr(self, name)))

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        b = V[1:]
        n = b.shape[0]
        t_q = float(_st.t.ppf(1.0 - self.alpha / 2, n - 1)) if n >= 2 else math.nan
        mean = b.mean(axis=0)
        s2 = ((b - mean) ** 2).sum(axis=0) / max(n - 1, 1)
        u = np.abs(mean) + t_q * np.sqrt(s2 / n)
        lr_now, step = float(window.scalar("lr")[-1]), float(window.scalar("step")[-1])
        lam_rest = lr_now * max(self.total_steps - step, 0.0)
        dL = u * lam_rest
        loss = float(window.scalar("loss")[-1])
        tol = self.eps * abs(loss) / self.n_share
        nums = {"tiny": TINY, "n": float(n), "t_q": t_q, "b_mean": mean, "s2": s2, "u": u, "lr_now": lr_now,
                "step_now": step, "total_steps": float(self.total_steps), "lam_rest": lam_rest, "dL": dL,
                "eps": self.eps, "loss": loss, "n_share": float(self.n_share), "tol": tol}
        return (tol - dL) / (tol + TINY), nums

    def text(self, W: int) -> str:
        terms = " + ".join(f"V_{k}" for k in range(1, W))
        sq = " + ".join(f"(V_{k} - b_mean)**2" for k in range(1, W))
        return (f"b_mean := ({terms})/n; s2 := ({sq})/(n - 1); u := Abs(b_mean) + t_q*sqrt(s2/n); "
                "lam_rest := lr_now*Max(total_steps - step_now, 0); dL := u*lam_rest; "
                "tol := eps*Abs(loss)/n_share; (tol - dL)/(tol + tiny) > 0")


def settled_monitor(total_steps: int, n_share: int, eps: float = 1e-3, alpha: float = 0.05) -> LyapunovMonitor:
    """The SETTLED monitor (freeze a block where it holds; :mod:`lyactl.control.decision_rule`).
    Needs a backend that reports ``gdw`` (``TorchBackend(measure_path=True)``)."""
    return LyapunovMonitor("settled", Role.SETTLED, BenefitCandidate(),
                           RemainingBenefit(total_steps, n_share, eps, alpha))
