"""The baselines a sceptic demands: lyactl's schedule with another selection rule.

A :class:`ReplayController` replays a recorded schedule of events (at which report step
how many groups of each kind were pruned, how many bottom layers were frozen) but chooses
*which* groups by a plain score instead of by certificates: random, magnitude or first-order
Taylor. It answers the controller's ``observe(stats)`` interface, so the same backend loop
runs it. Its decisions carry a certificate whose verdict is UNKNOWN and whose monitor names
the rule: they are not certified, and an audit says so.

Scores (lower = pruned first), per group ``g`` with ``n_g`` parameters:

* ``random``:    a seeded uniform draw per group (fixed for the run);
* ``magnitude``: ``||w_g||^2 / n_g`` (mean squared weight);
* ``taylor``:    ``|g_g . w_g|`` (first-order loss change of removing the group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lyactl.control.controller import ControlOutput
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.control.groups import Action, Certificate, Constraint, Decision, Event, Group, GroupKind, GroupStats
from lyactl.verdict import Verdict

__all__ = [
    "ScheduledEvent",
    "ReplayController",
    "random_scores",
    "magnitude_scores",
    "taylor_scores",
    "schedule_from_log",
]

ScoreRule = Callable[[GroupStats, Sequence[Group]], np.ndarray]


@dataclass(frozen=True)
class ScheduledEvent:
    """At the first report with ``step >= step``: prune ``prune[kind]`` groups of each kind
    and freeze the bottom ``freeze_prefix`` layers (cumulative count of frozen layers)."""

    step: int
    prune: Mapping[str, int] = field(default_factory=dict)
    freeze_prefix: int = 0


def random_scores(seed: int) -> ScoreRule:
    """A rule giving each group a fixed seeded uniform score."""

    def rule(stats: GroupStats, groups: Sequence[Group]) -> np.ndarray:
        return np.random.default_rng(seed).random(len(groups))

    rule.__name__ = f"random(seed={seed})"
    return rule


def magnitude_scores(stats: GroupStats, groups: Sequence[Group]) -> np.ndarray:
    """Mean squared weight of each group."""
    n = np.array([max(1, g.n_params) for g in groups], dtype=float)
    return stats.w_sq / n


def taylor_scores(stats: GroupStats, groups: Sequence[Group]) -> np.ndarray:
    """``|g . w|`` of each group."""
    return np.abs(stats.gw)


class ReplayController:
    """Replay ``schedule`` choosing groups by ``rule`` (see the module docstring)."""

    def __init__(
        self,
        groups: Sequence[Group],
        constraints: Sequence[Constraint],
        schedule: Sequence[ScheduledEvent],
        rule: ScoreRule,
    ) -> None:
        self.groups = tuple(groups)
        self.constraints = tuple(constraints)
        self.schedule = tuple(sorted(schedule, key=lambda e: e.step))
        self.rule = rule
        self.alive = np.ones(len(self.groups), dtype=bool)
        self.gone = np.zeros(len(self.groups), dtype=bool)  # went with a removed layer
        self.frozen = 0
        self._next = 0
        self._event_id = 0
        kinds = {k.value for k in GroupKind}
        for ev in self.schedule:
            unknown = set(ev.prune) - kinds
            if unknown:
                raise InvalidArgumentError(bad_arg("ScheduledEvent.prune", f"kinds among {sorted(kinds)}", unknown))

    def observe(self, stats: GroupStats) -> ControlOutput:
        """Apply every scheduled event whose step has come (one report may carry several)."""
        stats.validate(len(self.groups))
        if not math.isfinite(stats.loss):
            return ControlOutput((), (), (), np.zeros(len(self.groups)), True, "non-finite loss")
        events = []
        while self._next < len(self.schedule) and self.schedule[self._next].step <= stats.step:
            events.append(self._event(self.schedule[self._next], stats))
            self._next += 1
        return ControlOutput(tuple(e for e in events if e.decisions), (), (), np.zeros(len(self.groups)), False, "ok")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (the rules are stateless: a seeded draw or the statistics),
        so a baseline run checkpoints and resumes like a controlled one."""
        return {"n_groups": len(self.groups), "alive": self.alive.tolist(), "gone": self.gone.tolist(),
                "frozen": self.frozen, "next": self._next, "event_id": self._event_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["n_groups"] != len(self.groups):
            raise InvalidArgumentError(bad_arg("ReplayController state n_groups", len(self.groups), state["n_groups"]))
        self.alive = np.array(state["alive"], dtype=bool)
        self.gone = np.array(state["gone"], dtype=bool)
        self.frozen, self._next, self._event_id = int(state["frozen"]), int(state["next"]), int(state["event_id"])

    def _event(self, ev: ScheduledEvent, stats: GroupStats) -> Event:
        scores = np.asarray(self.rule(stats, self.groups), dtype=float)
        scores = np.where(np.isfinite(scores), scores, np.inf)
        decisions = [self._decision(stats, i, Action.PRUNE, scores) for i in self._choose(ev, scores)]
        layers = [i for i, g in enumerate(self.groups) if g.kind is GroupKind.LAYER and self.alive[i]]
        layers.sort(key=lambda i: self.groups[i].layer)
        for i in layers[self.frozen : ev.freeze_prefix]:
            decisions.append(self._decision(stats, i, Action.FREEZE, scores))
        self.frozen = max(self.frozen, ev.freeze_prefix)
        self._event_id += 1
        return Event(self._event_id, stats.step, tuple(decisions), meta={"rule": self.rule.__name__})

    def _choose(self, ev: ScheduledEvent, scores: np.ndarray) -> list[int]:
        chosen: list[int] = []
        # whole layers first: the groups inside a removed layer go with it and are not counted
        for kind, count in sorted(ev.prune.items(), key=lambda kc: (kc[0] != GroupKind.LAYER.value, kc[0])):
            cands = [i for i, g in enumerate(self.groups) if g.kind.value == kind and self.alive[i]]
            for i in sorted(cands, key=lambda j: (scores[j], j)):
                if len([c for c in chosen if self.groups[c].kind.value == kind]) >= count:
                    break
                self.alive[i] = False
                if self._feasible():
                    chosen.append(i)
                    if kind == GroupKind.LAYER.value:
                        self._drop_layer(self.groups[i].layer)
                else:
                    self.alive[i] = True
        return chosen

    def _drop_layer(self, layer: int) -> None:
        for j, g in enumerate(self.groups):
            if g.layer == layer and g.kind is not GroupKind.LAYER:
                self.alive[j] = False
                self.gone[j] = True

    def _feasible(self) -> bool:
        """Every constraint keeps ``min_keep`` members alive; a constraint on groups that
        all went with a removed layer (e.g. "one head in layer l") no longer applies."""
        for c in self.constraints:
            members = [m for m in c.members if not self.gone[m]]
            if members and int(self.alive[members].sum()) < min(c.min_keep, len(members)):
                return False
        return True

    def _decision(self, stats: GroupStats, i: int, action: Action, scores: np.ndarray) -> Decision:
        cert = Certificate(
            monitor=f"baseline:{self.rule.__name__}",
            verdict=Verdict.UNKNOWN,
            window=(stats.step, stats.step),
            numbers={"score": float(scores[i]) if math.isfinite(scores[i]) else math.nan},
            condition="none: selected by a baseline rule, not certified",
            margin=math.nan,
        )
        return Decision(stats.step, self.groups[i].name, i, action, (cert,))


def schedule_from_log(events: Sequence[Mapping], groups: Sequence[Group]) -> list[ScheduledEvent]:
    """Turn a run's applied events (dicts with ``step`` and ``decisions``: each with
    ``index`` and ``action``) into a schedule of counts per kind and frozen-prefix size.
    Groups inside a layer removed in the same or an earlier event are not counted."""
    out, frozen, gone = [], 0, set()
    for ev in events:
        prune: dict[str, int] = {}
        gone |= {groups[int(d["index"])].layer for d in ev["decisions"]
                 if d["action"] == Action.PRUNE.value and groups[int(d["index"])].kind is GroupKind.LAYER}
        for d in ev["decisions"]:
            g = groups[int(d["index"])]
            if g.kind is not GroupKind.LAYER and g.layer in gone:
                continue  # went with its layer: removing it saved nothing more
            if d["action"] == Action.PRUNE.value:
                prune[g.kind.value] = prune.get(g.kind.value, 0) + 1
            elif d["action"] == Action.FREEZE.value:
                frozen += 1
        out.append(ScheduledEvent(int(ev["step"]), prune, frozen))
    return out
