"""The certificate of one state truncation of a state-space layer, re-verifiable offline.

A layer ``G(z) = C (zI - A)^{-1} B + D`` cut to ``G_r`` carries the inequality

    error  <=  bound,        error = max_{w in grid} ||G(e^{iw}) - G_r(e^{iw})||_2,

where ``error`` is measured on the parameters actually written (a sampled maximum over
``n_freq`` frequencies, refined near the peak: a LOWER bound of ``||G - G_r||_inf``) and the
bound depends on the method:

* ``"balanced"``: square-root balanced truncation of the layer's (real-output) realisation,
  ``bound = 2 * sum_{i > r} sigma_i`` over the DISCARDED Hankel singular values (Enns;
  Al-Saggaf & Franklin 1987 in discrete time; :mod:`lyactl.analysis.balanced`);
* ``"modal"``: diagonal modes dropped in their own parameterisation,
  ``bound = sum_{i dropped} ||C_i|| ||B_i|| / (1 - |lam_i|)`` (each dropped mode's H-infinity
  norm, triangle inequality; :mod:`lyactl_torch.ssm.truncate`).

The measured error is checked against the bound, not assumed below it: float32 storage and
the phase clamp of the written parameters perturb the reduced system, so a truncation whose
written layer leaves the bound gets no certificate (and must be undone by the caller).
The bound can be attained (dropping one real mode of a modal layer: the error peaks at
``w = 0`` at exactly that mode's bound), so the check is ``error <= bound`` with a rounding
allowance of :data:`ROUNDING` relative, ``bound + ROUNDING * bound - error > 0``, not a strict
inequality that a correct tie would pass or fail on the last bit.

In the decision log the certificate is an ordinary :class:`~lyactl.control.groups.Certificate`
(:meth:`StateCertificate.certificate`): its ``numbers`` are the discarded values ``h_i``
(balanced) or ``m_i`` (modal), ``error``, ``bound`` and the state counts, and its condition
recomputes the bound from the discarded values, in partial sums of at most
:data:`CHUNK` terms (the expression reader walks a sum recursively)::

    s_0 := h_0 + ... + h_63; s_1 := ...; bound := 2*(s_0 + s_1); bound + 1e-06*bound - error > 0

so :func:`lyactl.control.decision_log.reverify` (and ``lyactl report``) re-checks it with the
one evaluator, :mod:`lyactl.expr`: a tampered discarded value or error changes the recomputed
bound or the margin and fails. Cost: linear in the number of discarded values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from lyactl.control.groups import Certificate
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict

__all__ = ["StateCertificate", "MONITOR", "CHUNK", "FACTOR", "ROUNDING"]

MONITOR = "state-truncation"
"""Prefix of the certificate's monitor name: ``"state-truncation/balanced"`` or ``".../modal"``."""
CHUNK = 64
"""Terms per partial sum in the logged condition."""
FACTOR: Mapping[str, float] = {"balanced": 2.0, "modal": 1.0}
"""``bound = FACTOR[method] * sum(discarded)``."""
ROUNDING = 1e-6
"""Relative allowance on ``error <= bound`` for round-off (float32 storage of the written
layer; the same allowance as ``lyactl reduce``'s check)."""
_LETTER = {"balanced": "h", "modal": "m"}
_COUNTS = ("states_before", "states_after", "modes_before", "modes_after", "n_freq")


def _sum_chunks(values: tuple[float, ...]) -> float:
    """The bound's sum in the order the logged condition evaluates it (bit-identical)."""
    parts = [sum(values[i:i + CHUNK][1:], values[i]) for i in range(0, len(values), CHUNK)]
    return sum(parts[1:], parts[0])


@dataclass(frozen=True)
class StateCertificate:
    """One layer's state truncation and its certificate (``error <= bound``, up to :data:`ROUNDING`).

    Attributes
    ----------
    layer : str
        The layer's name (e.g. ``"blocks.0.mixer"``).
    method : ``"balanced"`` or ``"modal"``
    step : int
        Training step of the truncation.
    states_before, states_after : int
        REAL states of the layer's realisation before / after (an LRU mode is 2 real states;
        a balanced LRU truncation to ``r`` real states may spend a complex mode on a real
        eigenvalue, see :func:`lyactl.analysis.balanced.lru_truncation`).
    modes_before, modes_after : int
        Diagonal modes (the layer's parameter rows) before / after.
    discarded : tuple of float
        The discarded HSVs (balanced, descending) or dropped modes' H-infinity bounds (modal).
    error : float
        The measured ``||G - G_r||`` on the frequency grid (NaN: not measured; no certificate).
    n_freq : int
        Points of the frequency grid (before the pole angles and the local refinement).
    hsv : tuple of float
        Every HSV / modal term of the layer before the cut, descending (for the record).
    kept : tuple of int or None
        Mode indices kept (modal selection); None for a change of basis.
    rule : str
        How the states were chosen (``"balanced"``, ``"magnitude"``, ...).
    optimizer_policy : str
        What happened to the optimizer state (``"reset"``, ``"approx"``, ``"slice-exact"``, ...).
    """

    layer: str
    method: Literal["balanced", "modal"]
    step: int
    states_before: int
    states_after: int
    modes_before: int
    modes_after: int
    discarded: tuple[float, ...]
    error: float
    n_freq: int
    hsv: tuple[float, ...] = ()
    kept: tuple[int, ...] | None = None
    rule: str = ""
    optimizer_policy: str = ""

    def __post_init__(self) -> None:
        if self.method not in FACTOR:
            raise InvalidArgumentError(bad_arg("StateCertificate.method", "'balanced' or 'modal'", self.method))
        if not self.layer:
            raise InvalidArgumentError(bad_arg("StateCertificate.layer", "a non-empty name", self.layer))
        if not self.discarded:
            raise InvalidArgumentError(bad_arg("StateCertificate.discarded", "at least one discarded value "
                                               "(nothing truncated: no decision)", self.discarded))
        for name in _COUNTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgumentError(bad_arg(f"StateCertificate.{name}", "an int >= 0", v))
        if not self.states_after < self.states_before:
            raise InvalidArgumentError(bad_arg("StateCertificate.states_after",
                                               f"fewer than states_before={self.states_before}", self.states_after))

    @property
    def bound(self) -> float:
        """``FACTOR[method] * sum(discarded)`` (NaN if any discarded value is not finite)."""
        return FACTOR[self.method] * _sum_chunks(tuple(float(v) for v in self.discarded))

    @property
    def margin(self) -> float:
        """``bound + ROUNDING * bound - error`` (> 0: the certificate holds; NaN when either is
        not finite)."""
        return self.bound + ROUNDING * self.bound - float(self.error)

    @property
    def verdict(self) -> Verdict:
        """HOLDS when ``error <= bound`` (up to :data:`ROUNDING`) with both finite and every
        discarded value ``>= 0``;
        UNKNOWN on non-finite numbers (fail safe); FAILS otherwise."""
        nums = (*self.discarded, self.error)
        if not all(math.isfinite(v) for v in nums):
            return Verdict.UNKNOWN
        if any(v < 0 for v in self.discarded) or self.error < 0:
            return Verdict.FAILS
        return Verdict.HOLDS if self.margin > 0 else Verdict.FAILS

    def condition(self) -> str:
        """The logged condition over ``numbers`` (module docstring)."""
        x = _LETTER[self.method]
        n = len(self.discarded)
        parts = [" + ".join(f"{x}_{i}" for i in range(j, min(n, j + CHUNK))) for j in range(0, n, CHUNK)]
        defs = [f"s_{k} := {p}" for k, p in enumerate(parts)]
        total = " + ".join(f"s_{k}" for k in range(len(parts)))
        return "; ".join(defs + [f"bound := {FACTOR[self.method]!r}*({total})",
                                 f"bound + {ROUNDING!r}*bound - error > 0"])

    def certificate(self) -> Certificate:
        """The generic certificate written to the decision log and re-verified offline."""
        x = _LETTER[self.method]
        numbers = {f"{x}_{i}": float(v) for i, v in enumerate(self.discarded)}
        numbers |= {"bound": self.bound, "error": float(self.error)} | {k: float(getattr(self, k)) for k in _COUNTS}
        return Certificate(f"{MONITOR}/{self.method}", self.verdict, (self.step, self.step), numbers,
                           self.condition(), self.margin)

    @classmethod
    def from_certificate(cls, cert: Certificate, layer: str) -> StateCertificate:
        """Read back a logged certificate (the descriptive fields ``hsv``, ``kept``, ``rule``,
        ``optimizer_policy`` are not in it and come back empty)."""
        prefix, _, method = cert.monitor.partition("/")
        if prefix != MONITOR or method not in FACTOR:
            raise InvalidArgumentError(bad_arg("cert.monitor", f"'{MONITOR}/balanced' or '{MONITOR}/modal'",
                                               cert.monitor))
        x, nums = _LETTER[method], cert.numbers
        discarded = tuple(float(nums[f"{x}_{i}"]) for i in range(sum(1 for k in nums if k.startswith(f"{x}_"))))
        counts = {k: int(nums[k]) for k in _COUNTS}
        return cls(layer, method, int(cert.window[1]), discarded=discarded, error=float(nums["error"]),  # type: ignore[arg-type]
                   **counts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record; the keys of the benchmark's earlier record are kept
        (``kind``, ``hsv_discarded``, ``bound``, ``bound_kind``, ``holds``, ...)."""
        fin = (lambda v: float(v) if math.isfinite(v) else None)
        return {"kind": "ssm-state-truncation", "layer": self.layer, "method": self.method, "step": self.step,
                "rule": self.rule or self.method, "states_before": self.states_before,
                "states_after": self.states_after, "modes_before": self.modes_before, "modes_after": self.modes_after,
                "kept": list(self.kept) if self.kept is not None else None, "hsv": [fin(v) for v in self.hsv],
                "hsv_discarded": [fin(v) for v in self.discarded], "bound": fin(self.bound), "error": fin(self.error),
                "n_freq": self.n_freq, "margin": fin(self.margin),
                "bound_kind": "2*sum(hsv_discarded)" if self.method == "balanced" else "sum(modal H-inf norms dropped)",
                "holds": self.verdict is Verdict.HOLDS, "optimizer_policy": self.optimizer_policy}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StateCertificate:
        """Inverse of :meth:`to_json` (``bound``, ``margin`` and ``holds`` are recomputed, not read)."""
        num = (lambda v: math.nan if v is None else float(v))
        return cls(d["layer"], d["method"], int(d["step"]), int(d["states_before"]), int(d["states_after"]),
                   int(d["modes_before"]), int(d["modes_after"]), tuple(num(v) for v in d["hsv_discarded"]),
                   num(d["error"]), int(d["n_freq"]), tuple(num(v) for v in d.get("hsv", ())),
                   None if d.get("kept") is None else tuple(int(i) for i in d["kept"]), str(d.get("rule", "")),
                   str(d.get("optimizer_policy", "")))
