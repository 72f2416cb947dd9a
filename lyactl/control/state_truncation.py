"""Deciding state truncations of state-space layers: how many states each layer keeps, when,
and the events (with their certificates) that record it. Backend-agnostic (numpy only).

A backend reports, per SSM layer, a :class:`LayerReport`: the layer's "weights" ``w_1 >= w_2
>= ...`` (its Hankel singular values for balanced truncation, one per real state; or each
mode's H-infinity bound ``||C_i|| ||B_i|| / (1 - |lam_i|)`` for modal selection, one per
mode) and the training FLOPs/token one weight costs. Keeping the first ``r`` weights costs
the certified bound ``FACTOR[method] * sum_{i > r} w_i``
(:mod:`lyactl.control.state_certificate`). :class:`StateTruncationPolicy` chooses ``r``:

* ``"energy"``: the smallest ``r`` with ``sum_{i <= r} w_i >= (1 - tau) sum_i w_i``
  (:func:`lyactl.analysis.balanced.rank_for_energy`), so ``bound <= FACTOR tau sum_i w_i``;
* ``"rank"``: ``r = keep`` weights (an int), or ``round(keep * n0)`` (a float in (0, 1];
  ``n0`` the layer's count at its first report);
* ``"budget"``: the compute set-point: drop weights over all layers, cheapest bound per
  FLOP first (:func:`ranks_for_budget`), until the model's training FLOPs/token reach
  ``flops_target`` times their value at the first report in the window.

Each layer keeps at least ``min_keep`` weights and is cut at most ``max_cuts`` times (a
tolerance relative to the current HSVs would otherwise cut again at every report). Decisions
are taken only for ``start_step <= step <= last_step``, never while the rollback guard
(:class:`lyactl.control.guard.Guard`) watches an event, and never on non-finite input: a
layer whose weights are not all finite is skipped, and in budget mode any non-finite
number skips the whole report (fail safe). A layer whose event the guard restored is not
cut again.

The backend carries out the :class:`StateProposal` s, measures each written layer's error
and returns :class:`~lyactl.control.state_certificate.StateCertificate` s; :meth:`StateTruncation.event`
turns those that hold into one :class:`~lyactl.control.groups.Event` of PRUNE decisions
(``meta["state_truncation"]`` keeps the full records). Cost: O(sum of n log n) per report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from lyactl.analysis.balanced import rank_for_energy
from lyactl.control.groups import Action, Decision, Event
from lyactl.control.guard import Guard, GuardConfig
from lyactl.control.state_certificate import FACTOR, StateCertificate
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict

__all__ = ["StateTruncationPolicy", "LayerReport", "StateProposal", "StateOutput", "StateTruncation",
           "ranks_for_budget"]

Mode = Literal["energy", "rank", "budget"]


@dataclass(frozen=True)
class StateTruncationPolicy:
    """When and how far state truncation goes (module docstring: the modes).

    ``tau`` in [0, 1) (energy); ``keep`` an int >= 1 or a float in (0, 1] (rank);
    ``flops_target`` in (0, 1] (budget); ``guard`` None: no rollback watch.
    """

    mode: Mode = "energy"
    tau: float = 0.01
    keep: int | float = 0.25
    flops_target: float = 0.5
    start_step: int = 0
    last_step: int | None = None
    min_keep: int = 2
    max_cuts: int = 1
    guard: GuardConfig | None = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        checks = {"mode": (self.mode in ("energy", "rank", "budget"), "'energy', 'rank' or 'budget'"),
                  "tau": (isinstance(self.tau, (int, float)) and 0.0 <= self.tau < 1.0, "a number in [0, 1)"),
                  "keep": (_valid_keep(self.keep), "an int >= 1 or a float in (0, 1]"),
                  "flops_target": (isinstance(self.flops_target, (int, float)) and 0.0 < self.flops_target <= 1.0,
                                   "a number in (0, 1]"),
                  "start_step": (_int(self.start_step, 0), "an int >= 0"),
                  "last_step": (self.last_step is None or _int(self.last_step, self.start_step),
                                f"None or an int >= start_step={self.start_step}"),
                  "min_keep": (_int(self.min_keep, 1), "an int >= 1"), "max_cuts": (_int(self.max_cuts, 1), "an int >= 1")}
        for name, (ok, expected) in checks.items():
            if not ok:
                raise InvalidArgumentError(bad_arg(f"StateTruncationPolicy.{name}", expected, getattr(self, name)))


def _int(v: object, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _valid_keep(v: object) -> bool:
    return _int(v, 1) or (isinstance(v, float) and 0.0 < v <= 1.0)


@dataclass(frozen=True)
class LayerReport:
    """One SSM layer as the backend sees it now.

    ``weights``: descending, ``>= 0`` (HSVs per real state for ``"balanced"``, modal bounds
    per mode for ``"modal"``); ``flops_per_weight``: training FLOPs/token one weight costs;
    ``granule``: the kept count is rounded UP to a multiple of it (an LRU mode holds 2 real
    states: an odd rank would spend a whole mode on one state and save nothing), so the
    energy mode's bound stays within ``FACTOR tau sum(w)``.
    """

    name: str
    index: int
    method: Literal["balanced", "modal"]
    weights: tuple[float, ...]
    flops_per_weight: float
    granule: int = 1

    @property
    def finite(self) -> bool:
        return bool(self.weights) and all(math.isfinite(w) for w in self.weights) \
            and math.isfinite(self.flops_per_weight)


@dataclass(frozen=True)
class StateProposal:
    """Cut layer ``name`` to ``keep`` weights; the predicted ``bound`` from the reported weights."""

    name: str
    index: int
    method: Literal["balanced", "modal"]
    keep: int
    discarded: tuple[float, ...]

    @property
    def bound(self) -> float:
        return FACTOR[self.method] * float(sum(self.discarded))


@dataclass(frozen=True)
class StateOutput:
    """One report's outcome, in the shape :class:`~lyactl.control.decision_log.DecisionLog` writes."""

    events: tuple[Event, ...] = ()
    restores: tuple[Event, ...] = ()
    releases: tuple[Event, ...] = ()


def ranks_for_budget(layers: Sequence[LayerReport], saving: float, min_keep: int) -> dict[str, int]:
    """Weights kept per layer so that the dropped ones save at least ``saving`` FLOPs/token
    (or as much as ``min_keep`` allows), dropping the smallest ``FACTOR * w / flops_per_weight``
    first (greedy on bound per FLOP; within a layer the tail goes first since ``w`` descends).
    Cost: O(n log n) over all weights."""
    cands = [(FACTOR[l.method] * w / l.flops_per_weight, -k, i) for i, l in enumerate(layers)
             for k, w in enumerate(l.weights) if k >= min_keep and l.flops_per_weight > 0]
    keep = {l.name: len(l.weights) for l in layers}
    saved = 0.0
    for _, _, i in sorted(cands):
        if saved >= saving:
            break
        keep[layers[i].name] -= 1
        saved += layers[i].flops_per_weight
    return keep


class StateTruncation:
    """The decision side of in-training state truncation (one per run).

    Call per report: :meth:`observe` (the guard; returns the events to restore and those
    released), then, when :meth:`wants` the step, :meth:`propose` with the layers' reports,
    carry the proposals out, and :meth:`event` with the certificates measured.
    """

    def __init__(self, policy: StateTruncationPolicy) -> None:
        self.policy = policy
        self.guard = Guard(policy.guard) if policy.guard is not None else None
        self.n0: dict[str, int] = {}
        self.cuts: dict[str, int] = {}
        self.restored: set[str] = set()
        self.flops0 = math.nan
        self.next_event_id = 0

    def observe(self, step: int, loss: float, val_loss: float = math.nan) -> tuple[list[Event], list[Event]]:
        """Feed the guard one report; ``(restores, releases)``. A restored event's layers are
        not cut again."""
        if self.guard is None:
            return [], []
        self.guard.record(step, loss, val_loss)
        restores, releases = self.guard.observe(step, loss, val_loss)
        for e in restores:
            self.restored |= {d.group for d in e.decisions}
        return restores, releases

    def wants(self, step: int) -> bool:
        """True when a decision may be taken at ``step`` (window open, guard idle)."""
        p = self.policy
        in_window = p.start_step <= step and (p.last_step is None or step <= p.last_step)
        return in_window and not (self.guard is not None and self.guard.busy)

    def propose(self, step: int, layers: Sequence[LayerReport], model_flops: float = math.nan) -> tuple[StateProposal, ...]:
        """The cuts to make now (empty outside the window, while the guard watches, on
        non-finite input; see the module docstring)."""
        if not self.wants(step):
            return ()
        for l in layers:
            self.n0.setdefault(l.name, len(l.weights))
        live = [l for l in layers if l.name not in self.restored and self.cuts.get(l.name, 0) < self.policy.max_cuts]
        if self.policy.mode == "budget":
            keep = self._budget(layers, live, model_flops)
        else:
            keep = {l.name: self._keep(l) for l in live if l.finite}
        out = []
        for l in live:
            k = keep.get(l.name)
            k = None if k is None else min(len(l.weights), -(-k // l.granule) * l.granule)
            if k is not None and k < len(l.weights):
                out.append(StateProposal(l.name, l.index, l.method, k, tuple(float(w) for w in l.weights[k:])))
        return tuple(out)

    def _keep(self, l: LayerReport) -> int:
        p = self.policy
        if p.mode == "energy":
            k = rank_for_energy(np.asarray(l.weights), p.tau)
        else:
            k = p.keep if isinstance(p.keep, int) else int(round(p.keep * self.n0[l.name]))
        return min(len(l.weights), max(p.min_keep, k))

    def _budget(self, layers: Sequence[LayerReport], live: Sequence[LayerReport], model_flops: float) -> dict[str, int]:
        if not (math.isfinite(model_flops) and model_flops > 0 and all(l.finite for l in layers)):
            return {}
        if math.isnan(self.flops0):
            self.flops0 = float(model_flops)
        saving = model_flops - self.policy.flops_target * self.flops0
        return ranks_for_budget(live, saving, self.policy.min_keep) if saving > 0 else {}

    def event(self, step: int, certificates: Sequence[StateCertificate], indices: Sequence[int],
              flops_before: float = math.nan, flops_after: float = math.nan) -> Event | None:
        """One event of the certificates (all must hold: the caller undoes the others), with
        ``indices`` the layers' indices; starts the guard's watch. None when empty."""
        if len(indices) != len(certificates):
            raise InvalidArgumentError(bad_arg("indices", f"{len(certificates)} layer indices", len(indices)))
        for c in certificates:
            if c.verdict is not Verdict.HOLDS:
                raise InvalidArgumentError(bad_arg(f"certificates[{c.layer!r}]", "a certificate that holds",
                                                   f"{c.verdict.value} (error {c.error!r}, bound {c.bound!r})"))
        if not certificates:
            return None
        decisions = tuple(Decision(step, c.layer, int(i), Action.PRUNE, (c.certificate(),))
                          for c, i in zip(certificates, indices))
        ev = Event(self.next_event_id, step, decisions, float(flops_before), float(flops_after),
                   {"kind": "state-truncation", "state_truncation": [c.to_json() for c in certificates]})
        self.next_event_id += 1
        for c in certificates:
            self.cuts[c.layer] = self.cuts.get(c.layer, 0) + 1
        if self.guard is not None:
            self.guard.watch(ev)
        return ev
