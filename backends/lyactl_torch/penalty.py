"""The feedback actuator: a proximal group-lasso step after ``optimizer.step()``.

For every group with strength ``lam_g > 0``::

    w_g <- w_g * max(0, 1 - lr * lam_g / ||w_g||)

with ``||w_g||`` the norm over all parameters of the group. This is the proximal operator
of ``lr * lam_g * ||w_g||`` (group soft-thresholding). A parameter entry belonging to
groups of several kinds (a ``q`` row of a head is also a column of a channel block and
part of a layer) is scaled by the product of their factors: the proximal steps of the
overlapping kinds applied one after another on the norms taken before the step (exact
when only one kind is penalised).

Cost: one reduction pass over the parameter classes holding a penalised group (as in
:mod:`lyactl_torch.stats`: parameters of one shape are stacked) and one multi-tensor multiply
per class, all on the device; no host sync. Skipped entirely while every ``lam_g`` is 0.
A group whose norm is not finite (a NaN or infinite weight) is left unchanged.
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
        on = set(np.flatnonzero(lam > 0).tolist())
        # only the classes of parameters holding a penalised group take part (host-side filter)
        self.targets = tuple(c for c in self.plan.classes if any(e.groups & on for e in c.entries))

    def values(self, p: torch.Tensor) -> torch.Tensor:
        """The tensor of parameter ``p`` that a step reads and scales in place (here ``p``
        itself; a sharded subclass returns the rank's shard)."""
        return p

    def squared_norms(self) -> torch.Tensor:
        """``[n_groups + 1]`` ``||w_g||^2`` summed over every parameter of the target
        classes: a penalised group's norm is complete (all its slices live there); the
        other groups' sums are partial and not used."""
        plan = self.plan
        w_sq = torch.zeros(plan.n_groups + 1, dtype=plan.dtype, device=plan.device)
        with torch.no_grad():
            for c in self.targets:
                P = torch.stack([self.values(e.param) for e in c.entries]).float()
                c.reduce(w_sq, P * P, None)
        return w_sq

    def factors(self, lr: float | torch.Tensor) -> torch.Tensor:
        """``[n_groups + 1]`` scale factors (last slot 1: positions in no group) from the
        norms of :meth:`squared_norms`; 1 (no action) where a norm is not finite."""
        plan, G = self.plan, self.plan.n_groups
        norm = self.squared_norms()[:G].sqrt()
        lr_t = torch.as_tensor(lr, dtype=plan.dtype).to(plan.device)
        shrink = (1.0 - lr_t * self.lam / norm).clamp(min=0.0)
        act = (self.lam > 0) & torch.isfinite(norm)  # a NaN/inf weight: no action (fail safe)
        scale = torch.where(act, torch.nan_to_num(shrink, nan=0.0), torch.ones_like(shrink))
        return torch.cat([scale, scale.new_ones(1)])

    def apply(self, lr: float | torch.Tensor) -> None:
        """One proximal step with step size ``lr`` (no-op while inactive): per class, the
        product of its members' factors broadcast over ``[K, *shape]`` and one multi-tensor
        multiply (entries holding no penalised group are multiplied by exactly 1)."""
        if not self.active:
            return
        s = self.factors(lr)
        with torch.no_grad():
            for c in self.targets:
                params = [self.values(e.param) for e in c.entries]
                nd, K = params[0].dim(), len(params)
                S = None
                for dim, gidx in zip(c.dims, c.gidx):
                    shape = [K] + [1] * nd
                    shape[dim + 1] = gidx.shape[1]
                    f = s[gidx].view(shape)
                    S = f if S is None else S * f
                if c.layers is not None:
                    f = s[c.layers].view([K] + [1] * nd)
                    S = f if S is None else S * f
                S = S.to(params[0].dtype).expand(K, *params[0].shape)
                torch._foreach_mul_(params, list(S.unbind(0)))
