"""Three-valued verdicts and the evidence that comes with them.

A verification never answers a bare bool: it answers :class:`Verdict` (holds, fails,
unknown) together with :class:`Evidence` saying how it was decided (method), by what
margin, under which conditions and with which residuals. Non-finite data never yields
``HOLDS`` or ``FAILS``: it yields ``UNKNOWN`` (fail safe: no decision on NaN).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Verdict", "Evidence", "verdict_from_margin"]


class Verdict(enum.Enum):
    """Outcome of a check: the property holds, fails, or could not be decided."""

    HOLDS = "holds"
    FAILS = "fails"
    UNKNOWN = "unknown"

    def __bool__(self) -> bool:  # a verdict is not a bool: refuse silent coercion
        raise TypeError("Verdict has three values; compare with Verdict.HOLDS explicitly")


@dataclass(frozen=True)
class Evidence:
    """What a verdict rests on.

    Attributes
    ----------
    verdict : Verdict
    method : str
        Human-readable name of the method ("jury", "dlyap", "spectral-radius", ...).
    margin : float
        Signed distance to the boundary of the criterion; positive means the criterion
        holds with that much room (e.g. ``1 - rho(A)``). NaN when undefined.
    conditions : tuple of str
        The conditions (as strings, sympy syntax where symbolic) the verdict rests on.
    residuals : Mapping[str, float]
        Numerical residuals of solves (e.g. ``||A^T P A - P + Q||_F / ||Q||_F``).
    details : Mapping[str, Any]
        Anything else worth keeping (JSON-serialisable).
    """

    verdict: Verdict
    method: str
    margin: float = math.nan
    conditions: tuple[str, ...] = ()
    residuals: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the verdict as its string value)."""
        return {
            "verdict": self.verdict.value,
            "method": self.method,
            "margin": None if math.isnan(self.margin) else float(self.margin),
            "conditions": list(self.conditions),
            "residuals": {k: float(v) for k, v in self.residuals.items()},
            "details": dict(self.details),
        }


def verdict_from_margin(margin: float, tol: float = 0.0) -> Verdict:
    """``HOLDS`` if ``margin > tol``, ``FAILS`` if ``margin < -tol``, else ``UNKNOWN``.

    NaN or infinite margins give ``UNKNOWN``.
    """
    if not math.isfinite(margin):
        return Verdict.UNKNOWN
    if margin > tol:
        return Verdict.HOLDS
    if margin < -tol:
        return Verdict.FAILS
    return Verdict.UNKNOWN
