"""Numpy simulators of per-group training statistics (no torch).

Each group is a ``dim``-dimensional block of quadratic modes, loss
``L_g(w) = 1/2 sum_j lam_j (w_j - w*_j)^2``, stochastic gradient
``g = lam (w - w*) (1 + mult xi) + add zeta`` (xi, zeta standard normal), trained by
``gd``, ``heavy_ball`` (``v = beta v + g; w -= eta v``) or ``adamw`` (bias-corrected,
eps 1e-8); all with decoupled weight decay ``w -= eta wd w``. Every ``interval`` steps one
:class:`~lyactl.control.groups.GroupStats` is reported exactly as a backend would, ``gdw``
included (the previous interval's displacement dotted with the first gradient after it).

Behaviours (``eta`` the step; parameters chosen per optimizer in :data:`BEHAVIOURS`):

* ``converging``: eta lam in [0.2, 0.5], small multiplicative noise (vanishes at w*);
* ``collapsing``: the same but w* = 0 (the group is driven to zero);
* ``learning``: eta lam ~ 1e-4 (far from w*, still moving), additive noise;
* ``diverging``: one mode beyond the stability edge (gd: eta lam > 2; heavy ball:
  eta lam > 2 (1 + beta)); for Adam a negative-curvature mode (its step is normalised);
* ``noise``: lam = 0, pure additive gradient noise (a random walk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lyactl.control.groups import Group, GroupKind, GroupStats

__all__ = ["Simulation", "simulate", "BEHAVIOURS", "make_stats"]

BEHAVIOURS = ("converging", "collapsing", "learning", "diverging", "noise")
_LR = {"gd": 0.1, "heavy_ball": 0.02, "adamw": 0.01}


@dataclass(frozen=True)
class Simulation:
    groups: tuple[Group, ...]
    stats: tuple[GroupStats, ...]
    labels: tuple[str, ...]
    group_loss: tuple[np.ndarray, ...] = ()  # per report, each group's own loss term [n_groups]


def _params(labels: Sequence[str], dim: int, eta: float, optimizer: str, rng: np.random.Generator):
    G = len(labels)
    lam = np.zeros((G, dim))
    w_star = rng.normal(0, 1, (G, dim))
    add = np.zeros((G, 1))
    mult = np.zeros((G, 1))
    scale = 1.0 if optimizer != "adamw" else 0.1  # Adam steps ~eta per coordinate
    for i, b in enumerate(labels):
        if b in ("converging", "collapsing"):
            lam[i] = rng.uniform(0.2, 0.5, dim) / eta * (scale if optimizer == "adamw" else 1.0)
            mult[i] = 0.1
            if b == "collapsing":
                w_star[i] = 0.0
        elif b == "learning":
            lam[i] = rng.uniform(0.5e-4, 1.5e-4, dim) / eta
            w_star[i] *= 3.0
            add[i] = 0.1 * math.sqrt(eta)
        elif b == "diverging":
            lam[i] = rng.uniform(0.2, 0.5, dim) / eta
            # gd / heavy ball: one mode beyond the stability edge; Adam normalises its step,
            # so a large curvature does not blow it up: give it a negative-curvature mode
            lam[i, 0] = {"gd": 2.3, "heavy_ball": 4.2, "adamw": -0.5}[optimizer] / eta
        elif b == "noise":
            add[i] = 1.0
        else:
            raise ValueError(f"unknown behaviour {b!r}")
    return lam, w_star, add, mult


def simulate(labels: Sequence[str], optimizer: str = "gd", n_reports: int = 40, interval: int = 10,
             dim: int = 16, wd: float = 0.0, seed: int = 0, curvature: bool = True,
             kind: GroupKind = GroupKind.MLP_BLOCK, lr: float | None = None,
             lr_decay: float = 1.0) -> Simulation:
    """Simulate ``len(labels)`` groups for ``n_reports * interval`` steps (vectorised);
    the step decays as ``eta_t = eta lr_decay**t`` (1.0: constant)."""
    rng = np.random.default_rng(seed)
    eta = lr if lr is not None else _LR[optimizer]
    lam, w_star, add, mult = _params(labels, dim, eta, optimizer, rng)
    w = rng.normal(0, 1, lam.shape)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    w_prev = w.copy()
    out, group_loss = [], []
    t = 0
    eta0 = eta
    D, gdw = None, np.full(len(labels), np.nan)  # the pending displacement, its path-end reading
    for r in range(n_reports):
        for _ in range(interval):
            t += 1
            eta = eta0 * lr_decay**t
            noise = rng.normal(0, 1, w.shape)
            g = lam * (w - w_star) * (1 + mult * rng.normal(0, 1, w.shape)) + add * noise
            if D is not None:  # the first gradient after a report, at the path's end
                gdw, D = (g * D).sum(1), None
            if optimizer == "gd":
                step = g
            elif optimizer == "heavy_ball":
                m = 0.9 * m + g
                step = m
            else:
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g**2
                step = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
            w = w - eta * step - eta * wd * w
        out.append(make_stats(t, eta, wd, interval, w, w_prev, g, m if optimizer != "gd" else None,
                              lam if curvature else None, w_star, gdw))
        group_loss.append((0.5 * lam * (w - w_star) ** 2).sum(1))
        D, gdw = w - w_prev, np.full(len(labels), np.nan)
        w_prev = w.copy()
    groups = tuple(Group(f"{b}.{i}", kind, i, dim, 6.0 * dim, 2.0 * dim) for i, b in enumerate(labels))
    return Simulation(groups, tuple(out), tuple(labels), tuple(group_loss))


def make_stats(step: int, lr: float, wd: float, interval: int, w: np.ndarray, w_prev: np.ndarray,
               g: np.ndarray, m: np.ndarray | None, lam: np.ndarray | None, w_star: np.ndarray,
               gdw: np.ndarray | None = None) -> GroupStats:
    """Per-group statistics from the simulator state (each ``[n_groups]``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        w_sq = (w**2).sum(1)
        curv = (lam * w**2).sum(1) / np.maximum(w_sq, 1e-300) if lam is not None else np.full(len(w), np.nan)
        lam_eff = lam if lam is not None else 0.0
        loss = 1.0 + float(np.sum(0.5 * lam_eff * (w - w_star) ** 2))
    return GroupStats(step=step, lr=lr, loss=loss, w_sq=w_sq, dw_sq=((w - w_prev) ** 2).sum(1),
                      g_sq=(g**2).sum(1), gw=(g * w).sum(1),
                      m_sq=(m**2).sum(1) if m is not None else np.full(len(w), np.nan),
                      curv=curv, interval=interval, weight_decay=wd, gdw=gdw)
