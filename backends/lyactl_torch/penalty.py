"""The feedback actuator: a proximal group-lasso step after ``optimizer.step()``.

For every group with strength ``lam_g > 0``::

    w_g <- w_g * max(0, 1 - lr * lam_g / ||w_g||)

with ``||w_g||`` the norm over all parameters of the group. This is the proximal operator
of ``lr * lam_g * ||w_g||`` (group soft-thresholding). A parameter entry belonging to
groups of several kinds (a ``q`` row of a head is also a column of a channel block and
part of a layer) is scaled by the product of their factors: the proximal steps of the
overlapping kinds applied one after another on the norms taken before the step (exact
when only one kind is penalised).

Cost: one reduction pass (as in :mod:`lyactl_torch.stats`) and one multiply per
parameter dimension holding a penalised group, all on the device; no host sync. Skipped
entirely while every ``lam_g`` is 0.
"""

from __future__ import annotations

import numpy as np
import torch

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

from .stats import ReductionPlan

__all__ = ["ProximalGroupLasso"]


class ProximalGroupLasso:
    """Per-group proximal shrinkage driven by :meth:`set_strength`."""

    def __init__(self, plan: ReductionPlan) -> None:
        self.lam_host = np.zeros(plan.n_groups)
        self.rebuild(plan)

    def rebuild(self, plan: ReductionPlan) -> None:
        """Attach to a new plan (after surgery); the strengths are kept."""
        self.plan = plan
        self.set_strength(self.lam_host)

    @property
    def active(self) -> bool:
        return bool(np.any(self.lam_host > 0))

    def set_strength(self, lam: np.ndarray) -> None:
        """Set ``lam`` (shape ``[n_groups]``, >= 0; NaN means 0: no action on NaN)."""
        lam = np.asarray(lam, dtype=np.float64)
        G = self.plan.n_groups
        if lam.shape != (G,):
            raise ShapeError(bad_arg("strength", f"an array of shape ({G},)", lam.shape))
        lam = np.where(np.isnan(lam), 0.0, lam)
        if np.any(lam < 0) or not np.all(np.isfinite(lam)):
            raise InvalidArgumentError(bad_arg("strength", "finite values >= 0", lam[(lam < 0) | ~np.isfinite(lam)][:5]))
        self.lam_host = lam
        self.lam = torch.tensor(lam, dtype=self.plan.dtype).to(self.plan.device, non_blocking=True)
        on = {int(g) for g in np.flatnonzero(lam > 0)}
        # only the parameter dimensions holding a penalised group take part (host-side filter)
        self.targets = tuple(r for r in (e.restricted(on) for e in self.plan.entries) if r is not None)

    def factors(self, lr: float | torch.Tensor) -> torch.Tensor:
        """``[n_groups + 1]`` scale factors (last slot 1: positions in no group)."""
        plan, G = self.plan, self.plan.n_groups
        w_sq = torch.zeros(1, G + 1, dtype=plan.dtype, device=plan.device)
        with torch.no_grad():
            for e in self.targets:
                p = e.param.detach().float()
                plan.accumulate(w_sq, e, (p * p)[None], [0])
        norm = w_sq[0, :G].sqrt()
        lr_t = torch.as_tensor(lr, dtype=plan.dtype).to(plan.device)
        shrink = (1.0 - lr_t * self.lam / norm).clamp(min=0.0)
        scale = torch.where(self.lam > 0, torch.nan_to_num(shrink, nan=0.0), torch.ones_like(shrink))
        return torch.cat([scale, scale.new_ones(1)])

    def apply(self, lr: float | torch.Tensor) -> None:
        """One proximal step with step size ``lr`` (no-op while inactive)."""
        if not self.active:
            return
        s = self.factors(lr)
        with torch.no_grad():
            for e in self.targets:
                p = e.param
                for dim, gidx in e.members:
                    shape = [1] * p.dim()
                    shape[dim] = -1
                    p.mul_(s[gidx].view(shape).to(p.dtype))
                if e.layer is not None:
                    p.mul_(s[e.layer].to(p.dtype))
