"""Stability regions of gd, heavy-ball, Nesterov and Adam on a quadratic mode, derived.

Each ``*_region()`` returns ``(region, check)``: ``region`` is the :class:`lyactl.analysis.regions.Region`
derived by code from the model's update matrix (characteristic polynomial -> Jury ->
simplification on ``0 <= beta < 1, 0 <= eta*wd < 1``); ``check`` is an independent numeric
comparison of the closed form with ``max |eig(A)| < 1`` from numpy at seeded random points.

Known results the derivation reproduces (stated here, never used by the code):
gd ``0 < eta*lam < 2``; heavy-ball ``0 < eta*lam < 2 + 2 beta``; Nesterov
``0 < eta*lam < (2 + 2 beta) / (1 + 2 beta)``; Adam with a frozen preconditioner
``0 < eta*lam < (2 + 2 beta1) / (1 - beta1)`` (38 at beta1 = 0.9) -- all at ``wd = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams, adam, gd, heavy_ball, nesterov
from lyactl.analysis.regions import Region, derive_region

__all__ = ["RegionCheck", "check_region", "gd_region", "heavy_ball_region", "nesterov_region", "adam_region"]


@dataclass(frozen=True)
class RegionCheck:
    """Closed form vs numpy eigenvalues at ``n_points`` points (``n_near`` skipped as within
    ``boundary_tol`` of ``rho = 1``); ``disagreements`` lists ``(eta*lam, beta, eta*wd, rho)``."""

    n_points: int
    n_agree: int
    n_near: int
    n_stable: int
    disagreements: tuple[tuple[float, float, float, float], ...]

    @property
    def agrees(self) -> bool:
        return not self.disagreements and self.n_agree + self.n_near == self.n_points


def check_region(model: OptimizerModel, region: Region, n_points: int = 400, seed: int = 0,
                 boundary_tol: float = 1e-6, with_wd: bool = True) -> RegionCheck:
    """Sample ``(eta, lam, beta, wd)`` and compare ``region.contains`` with ``rho(A) < 1``.

    ``eta*lam`` is drawn half uniformly in [-1, 4] and half log-uniformly in [1e-2, 1e2],
    ``beta`` in [0, 1), ``eta*wd`` in [0, 0.5) (0 when ``with_wd`` is False).
    """
    rng = np.random.default_rng(seed)
    agree = near = stable = 0
    bad = []
    for i in range(n_points):
        h = rng.uniform(-1, 4) if i % 2 else 10 ** rng.uniform(-2, 2)
        eta = 10 ** rng.uniform(-3, 0)
        beta = float(rng.uniform(0, 1))
        d = float(rng.uniform(0, 0.5)) if with_wd else 0.0
        p = OptimizerParams(eta, beta, d / eta)
        rho = float(np.max(np.abs(np.linalg.eigvals(model.matrix(h / eta, p)))))
        if abs(rho - 1) < boundary_tol:
            near += 1
            continue
        stable += rho < 1
        if region.contains(eta, h / eta, p) == (rho < 1):
            agree += 1
        else:
            bad.append((h, beta, d, rho))
    return RegionCheck(n_points, agree, near, stable, tuple(bad))


def _derive(model: OptimizerModel, n_points: int, seed: int) -> tuple[Region, RegionCheck]:
    region = derive_region(model)
    return region, check_region(model, region, n_points, seed)


def gd_region(n_points: int = 400, seed: int = 0) -> tuple[Region, RegionCheck]:
    """Gradient descent (coupled L2 weight decay)."""
    return _derive(gd(), n_points, seed)


def heavy_ball_region(n_points: int = 400, seed: int = 0) -> tuple[Region, RegionCheck]:
    """Heavy-ball / PyTorch SGD momentum (coupled L2 weight decay)."""
    return _derive(heavy_ball(), n_points, seed)


def nesterov_region(n_points: int = 400, seed: int = 0) -> tuple[Region, RegionCheck]:
    """PyTorch Nesterov momentum (coupled L2 weight decay)."""
    return _derive(nesterov(), n_points, seed)


def adam_region(n_points: int = 400, seed: int = 0) -> tuple[Region, RegionCheck]:
    """Adam/AdamW with a frozen preconditioner, asymptotic (no bias correction)."""
    return _derive(adam(), n_points, seed)
