"""How cheap a group is to lose: the score the budget actuator and the final-budget completion rank by.

Both the PI actuator (:func:`lyactl.control.budget.cheapest_groups`) and the completion of a
final budget (controller rule 9) take the groups of LOWEST score first. With ``F_g`` the FLOPs
that pruning group ``g`` saves (``flops_remove``, floored at 1e-300) the score is

    s_g = |g_g . w_g| / F_g                  (no prior: today's rule)
    s_g = p_g / F_g                          (with a prior p, p_g >= 0)

``|g . w|`` is the first-order Taylor estimate of the loss change when the group's weights
``w`` are set to zero (``L(w - w) ~ L(w) - g . w``), from the current report. A prior ``p``
(e.g. the Minitron activation importance of the original model,
:func:`lyactl_torch.importance.activation_importance`) REPLACES it rather than multiplying it:

* both estimate the same quantity, the group's contribution to the loss, so the product
  ``|g . w| p_g`` counts it twice instead of combining independent evidence;
* a product ranks by ``log|g . w| + log p_g``: the factor whose logarithm spreads more decides.
  On an already-trained model (what a prior is for) ``E[g] = 0`` at the minimum, so one
  report's ``|g . w|`` is minibatch noise spanning orders of magnitude and would swamp the
  prior;
* the product stays one line away: the prior may be a callable of the report,
  ``prior = lambda stats: np.abs(stats.gw) * p``.

Conventions: larger ``p_g`` = more important (kept longer). ``p_g = +inf`` means "never ranked
for pruning" (the value :func:`~lyactl_torch.importance.activation_importance` gives layers and
residual channels, which it does not score): such a group is never pushed nor completed, only a
certificate can remove it. A fixed prior holding NaN or a negative entry, or of the wrong shape,
is refused (the error names ``prior``). A callable prior is checked on every call: wrong shape
or a negative entry raise; a NaN entry gives a NaN score, and a group with a non-finite score is
never newly chosen by the actuator nor pruned by the completion (fail safe). Certificates
decide what they decide; the score only ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from lyactl.control.groups import GroupStats
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg

__all__ = ["Prior", "fixed_prior", "check_prior", "Scoring"]


class Prior(Protocol):
    """Per-group importance ``p`` (``[n_groups]``, >= 0, larger = more important) for one report.
    A plain function of :class:`~lyactl.control.groups.GroupStats` plugs in. Called only when
    the actuator tops up its choice and once at the completion, never per step."""

    def __call__(self, stats: GroupStats) -> np.ndarray:
        ...


def _checked(values: object, n_groups: int, name: str, allow_nan: bool) -> np.ndarray:
    """``values`` as a read-only float64 ``[n_groups]`` copy; raises naming ``name``."""
    try:
        p = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        found = type(values).__name__
        raise InvalidArgumentError(bad_arg(name, f"an array of {n_groups} numbers >= 0", found)) from None
    if p.shape != (n_groups,):
        raise ShapeError(bad_arg(name, f"an array of shape ({n_groups},)", p.shape))
    nan = np.isnan(p)
    if nan.any() and not allow_nan:
        raise NonFiniteError(bad_arg(name, "numbers >= 0 or +inf (never ranked), no NaN",
                                     f"NaN at index {int(np.flatnonzero(nan)[0])}"))
    negative = p < 0  # NaN compares False
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise InvalidArgumentError(bad_arg(name, "numbers >= 0", f"{p[i]} at index {i}"))
    p.setflags(write=False)
    return p


def fixed_prior(values: object, n_groups: int, name: str = "prior") -> Prior:
    """A :class:`Prior` returning ``values`` (checked now: shape ``[n_groups]``, no NaN, >= 0)
    on every report; its ``__name__`` is ``name`` (what events record)."""
    p = _checked(values, n_groups, name, allow_nan=False)

    def prior(stats: GroupStats) -> np.ndarray:
        return p

    prior.__name__ = name
    return prior


def check_prior(prior: Prior | np.ndarray | None, n_groups: int) -> Prior | None:
    """The controller's ``prior`` argument as a :class:`Prior`: None stays None, a callable is
    kept (its output is checked at every call), anything else is a fixed array
    (:func:`fixed_prior`, name ``"prior"``)."""
    if prior is None or callable(prior):
        return prior
    return fixed_prior(prior, n_groups, "prior")


@dataclass(frozen=True, eq=False)
class Scoring:
    """``s = |g . w| / F`` or ``s = p / F`` (module docstring); ``flops`` is ``F``, ``[n]`` > 0.

    ``label``: what a decision records as the prior's name (None without a prior).
    """

    flops: np.ndarray
    prior: Prior | None = None

    @property
    def label(self) -> str | None:
        return None if self.prior is None else str(getattr(self.prior, "__name__", type(self.prior).__name__))

    def importance(self, stats: GroupStats) -> np.ndarray:
        """``[n]``: ``|g . w|`` without a prior, else the prior's values (checked; NaN allowed)."""
        if self.prior is None:
            return np.abs(stats.gw)
        return _checked(self.prior(stats), self.flops.shape[0], f"prior {self.label!r} (its output)", allow_nan=True)

    def __call__(self, stats: GroupStats) -> np.ndarray:
        """``[n]`` score, lowest = cheapest to lose; cost O(n) plus one prior call."""
        return self.importance(stats) / self.flops

    def for_report(self, stats: GroupStats) -> Callable[[], np.ndarray]:
        """The score of ``stats`` as a zero-argument callable (computed only when called)."""
        return lambda: self(stats)
