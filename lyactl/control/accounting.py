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

Everything is cached per status: call :meth:`FlopsAccount.changed` wherever it changes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from lyactl.control.groups import ACTIVE, FROZEN, PRUNED, Group
from lyactl.control.protocol import FlopsModel
from lyactl.control.selection import Structure
from lyactl.errors import InvalidArgumentError, NonFiniteError, bad_arg

__all__ = ["FlopsAccount"]


class FlopsAccount:
    """The saved fraction of one controller's groups (see the module docstring).

    ``model_flops``: the dense model's FLOPs/token if known (config), else the flops model's
    count of the all-active state, else the LAYER groups' sum (it misses only the costs
    outside blocks, e.g. the LM head), else every group's sum.
    """

    def __init__(self, groups: Sequence[Group], structure: Structure, flops_model: FlopsModel | None = None,
                 model_flops: float | None = None) -> None:
        n = len(groups)
        self.structure = structure
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
        self.measured: tuple[float, float] | None = None  # (measured phi, estimate then)
        self._phi: float | None = None
        self._f_now: float | None = None

    def changed(self) -> None:
        """Drop what is cached from the status (call wherever it changes)."""
        self._phi = self._f_now = None

    def saved_fraction(self, status: np.ndarray) -> float:
        """``phi`` now: measured where the backend reported, else :meth:`estimated_fraction`."""
        if self.measured is None:
            return self.estimated_fraction(status)
        phi, est_then = self.measured
        return phi + (self.estimated_fraction(status) - est_then)

    def estimated_fraction(self, status: np.ndarray) -> float:
        """``phi`` by the decisions alone: exact with a flops model, nominal without. Cached."""
        if self._phi is None:
            if self.flops_model is not None:
                saved = self.f0 - self.flops_now(status)
            else:
                pruned = (status == PRUNED) & ~self.structure.inside_pruned_layer(status)
                saved = self.flops_remove[pruned].sum() + self.flops_freeze[status == FROZEN].sum()
            self._phi = float(saved) / self.model_flops
        return self._phi

    def flops_now(self, status: np.ndarray) -> float:
        """``flops_model(status)``, cached."""
        if self._f_now is None:
            self._f_now = self.count(status.copy(), "flops_model(status)")
        return self._f_now

    def saving(self, status: np.ndarray, extra: np.ndarray) -> float:
        """FLOPs/token that pruning the ``extra`` groups (mask) would save now, counted by the
        flops model and put on the scale of :meth:`dense_flops` (the budget's gap). One count."""
        hypothetical = status.copy()
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
        saving; the first finite value before any decision is the dense reference."""
        if not (math.isfinite(fpt) and fpt > 0):
            return
        if self.fpt_ref is None and not (status != ACTIVE).any():
            self.fpt_ref = float(fpt)
        if self.fpt_ref is not None:
            self.measured = (1.0 - float(fpt) / self.fpt_ref, self.estimated_fraction(status))

    def state_dict(self) -> dict[str, Any]:
        return {"fpt_ref": self.fpt_ref, "measured": None if self.measured is None else list(self.measured)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fpt_ref = state.get("fpt_ref")
        m = state.get("measured")
        self.measured = None if m is None else (float(m[0]), float(m[1]))
        self.changed()
