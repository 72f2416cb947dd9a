"""FLOPs accounting of the controller: the saved fraction ``phi`` of the dense model's
training FLOPs per token, from the group statuses and the backend's measurements.

Three sources, in order of trust:

1. measured: the backend reports ``flops_per_token`` (every event applied so far); the
   first finite value before any decision is the dense reference ``F_ref`` and
   ``phi = 1 - F / F_ref``, plus the estimated change of decisions taken since;
2. exact: a :class:`~lyactl.control.protocol.FlopsModel` counts a hypothetical status
   vector from the shapes, ``phi = (F(0) - F(status)) / F_dense``; groups overlap (a block
   of residual channels crosses every head and MLP block), so only such a count is exact;
3. nominal: the groups' own costs summed, ``flops_remove`` of the pruned (not inside a pruned
   block) plus ``flops_freeze`` of the frozen; exact for disjoint groups, an over-count where
   residual-channel groups and the others both go.

What the budget counts (``counts``, :class:`~lyactl.control.budget.BudgetCounts`): the training
FLOPs above (default), or ``PRUNED_ONLY``, only what makes the model smaller to run. Then
:meth:`FlopsAccount.saved_fraction` treats every FROZEN group as ACTIVE: exact source
``phi = (F(0) - F(status with FROZEN -> ACTIVE)) / F_dense`` (the flops model must price an
ACTIVE group as trainable even where the model has frozen it: ``lyactl_torch``'s
``flops_with(..., trainable=True)``), nominal source the pruned groups' ``flops_remove``
only; the measured source is NOT used. The backend's ``flops_per_token`` includes the freeze
savings, and adding back the frozen groups' ``flops_freeze`` would only estimate them (a
frozen prefix saves more than ``flops_freeze``: its input gradients too), so the corrected
measurement would be no better than the count it corrects, and a wrong one would let a freeze
count towards the target after all. :meth:`FlopsAccount.training_fraction` still reports the
training saving (measured, exact or nominal, freezes included) apart. With the default both
are one number, computed as before.

Everything is cached per status: call :meth:`FlopsAccount.changed` wherever it changes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from lyactl.control.budget import BudgetCounts
from lyactl.control.groups import ACTIVE, FROZEN, PRUNED, Group
from lyactl.control.protocol import FlopsModel
from lyactl.control.selection import Structure
from lyactl.errors import InvalidArgumentError, NonFiniteError, bad_arg

__all__ = ["FlopsAccount"]


class FlopsAccount:
    """The saved fraction of one controller's groups (see the module docstring).

    ``model_flops``: the dense model's FLOPs/token if known (config), else the flops model's
    count of the all-active state, else the LAYER groups' sum (it misses only the costs
    outside blocks, e.g. the LM head), else every group's sum. ``counts``: what the budget's
    ``phi`` (:meth:`saved_fraction`) counts.
    """

    def __init__(self, groups: Sequence[Group], structure: Structure, flops_model: FlopsModel | None = None,
                 model_flops: float | None = None, counts: BudgetCounts = BudgetCounts.TRAINING_FLOPS) -> None:
        n = len(groups)
        if not isinstance(counts, BudgetCounts):
            raise InvalidArgumentError(bad_arg("counts", "a BudgetCounts", counts))
        self.structure, self.pruned_only = structure, counts is BudgetCounts.PRUNED_ONLY
        self.flops_remove = np.array([g.flops_remove for g in groups], float)
        self.flops_freeze = np.array([g.flops_freeze for g in groups], float)
        self.is_layer = structure.is_layer
        self.flops_model, self.f0 = flops_model, None
        if flops_model is not None:
            self.f0 = self.count(np.zeros(n, np.int8), "flops_model(all groups active)")
            if self.f0 <= 0:
                raise InvalidArgumentError(bad_arg("flops_model(all groups active)", "a number > 0", self.f0))
        layer_sum = float(self.flops_remove[self.is_layer].sum())
        self.model_flops = model_flops or self.f0 or max(layer_sum or float(self.flops_remove.sum()), 1e-300)
        self.fpt_ref: float | None = None  # the backend's FLOPs/token before any event
        self.measured: tuple[float, float] | None = None  # (measured phi, training estimate then)
        self._phi: dict[bool, float] = {}  # freezes counted -> estimated phi
        self._f_now: dict[bool, float] = {}  # freezes counted -> flops_model count

    def changed(self) -> None:
        """Drop what is cached from the status (call wherever it changes)."""
        self._phi, self._f_now = {}, {}

    def saved_fraction(self, status: np.ndarray) -> float:
        """The budget's ``phi`` now: :meth:`training_fraction`, or with ``PRUNED_ONLY`` the
        pruned groups' saving alone (:meth:`estimated_fraction`; never the measured one)."""
        return self.estimated_fraction(status) if self.pruned_only else self.training_fraction(status)

    def training_fraction(self, status: np.ndarray) -> float:
        """Training ``phi`` now, freezes included: measured where the backend reported, else
        estimated by the decisions."""
        est = self._estimate(status, freezes=True)
        if self.measured is None:
            return est
        phi, est_then = self.measured
        return phi + (est - est_then)

    def estimated_fraction(self, status: np.ndarray) -> float:
        """The budget's ``phi`` by the decisions alone: exact with a flops model, nominal
        without; frozen groups counted as active with ``PRUNED_ONLY``. Cached."""
        return self._estimate(status, freezes=not self.pruned_only)

    def _estimate(self, status: np.ndarray, freezes: bool) -> float:
        """``phi`` of ``status`` (``freezes`` False: every FROZEN group counted ACTIVE). Cached."""
        if freezes not in self._phi:
            if self.flops_model is not None:
                saved = self.f0 - self._flops(status, freezes)
            else:
                pruned = (status == PRUNED) & ~self.structure.inside_pruned_layer(status)
                saved = self.flops_remove[pruned].sum()
                if freezes:
                    saved = saved + self.flops_freeze[status == FROZEN].sum()
            self._phi[freezes] = float(saved) / self.model_flops
        return self._phi[freezes]

    def flops_now(self, status: np.ndarray) -> float:
        """``flops_model(status)`` as the budget counts it (FROZEN as ACTIVE with ``PRUNED_ONLY``), cached."""
        return self._flops(status, not self.pruned_only)

    def _flops(self, status: np.ndarray, freezes: bool) -> float:
        if freezes not in self._f_now:
            self._f_now[freezes] = self.count(self._counted(status, freezes), "flops_model(status)")
        return self._f_now[freezes]

    @staticmethod
    def _counted(status: np.ndarray, freezes: bool) -> np.ndarray:
        """A copy of ``status``, with every FROZEN group set ACTIVE unless ``freezes``."""
        out = status.copy()
        if not freezes:
            out[out == FROZEN] = ACTIVE
        return out

    def saving(self, status: np.ndarray, extra: np.ndarray) -> float:
        """FLOPs/token that pruning the ``extra`` groups (mask) would save now, counted by the
        flops model (as the budget counts: FROZEN as ACTIVE with ``PRUNED_ONLY``) and put on
        the scale of :meth:`dense_flops` (the budget's gap). One count."""
        freezes = not self.pruned_only
        hypothetical = self._counted(status, freezes)
        hypothetical[extra] = PRUNED
        return (self.flops_now(status) - self.count(hypothetical, "flops_model(status)")) * self.dense_flops() / self.f0

    def count(self, status: np.ndarray, what: str) -> float:
        """``flops_model(status)``, required finite (no accounting on non-finite numbers)."""
        f = float(self.flops_model(status))
        if not math.isfinite(f):
            raise NonFiniteError(bad_arg(what, "a finite number", f))
        return f

    def dense_flops(self) -> float:
        """The dense model's training FLOPs/token: the backend's if it reported, else ``model_flops``."""
        return self.fpt_ref if self.fpt_ref is not None else self.model_flops

    def measure(self, status: np.ndarray, fpt: float) -> None:
        """Take the backend's FLOPs/token (every decision so far applied) as the measured
        training saving; the first finite value before any decision is the dense reference
        (also with ``PRUNED_ONLY``: nothing is frozen yet then)."""
        if not (math.isfinite(fpt) and fpt > 0):
            return
        if self.fpt_ref is None and not (status != ACTIVE).any():
            self.fpt_ref = float(fpt)
        if self.fpt_ref is not None:
            self.measured = (1.0 - float(fpt) / self.fpt_ref, self._estimate(status, freezes=True))

    def state_dict(self) -> dict[str, Any]:
        return {"fpt_ref": self.fpt_ref, "measured": None if self.measured is None else list(self.measured)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fpt_ref = state.get("fpt_ref")
        m = state.get("measured")
        self.measured = None if m is None else (float(m[0]), float(m[1]))
        self.changed()
