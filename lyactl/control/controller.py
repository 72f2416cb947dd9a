"""The prune/freeze controller: monitors -> hysteresis -> constraints -> batched events.

Per report (:meth:`Controller.observe`, pure numpy, deterministic, vectorised over groups;
only the groups actually decided are visited in Python):

1. validate shapes (:class:`~lyactl.errors.ShapeError` names the field); a non-finite loss
   or learning rate holds the whole controller (``held=True``, no events, zero penalty);
2. statistics of pruned groups are ignored (backends report NaN for them);
3. the decision rule (:mod:`lyactl.control.decision_rule`): every monitor is evaluated (HARMLESS and
   BOUNDED ones only where they can change a decision); ``prune_ok = COLLAPSED or
   (CONVERGED and HARMLESS)``, ``freeze_ok = (CONVERGED and BOUNDED) or SETTLED`` (GroupKind.LAYER
   only). Non-finite statistics give NaN margins: UNKNOWN, never a decision;
4. hysteresis: a group must be ok in ``hysteresis`` consecutive reports;
5. schedule: no decisions before ``warmup_steps`` or after ``last_decision_step`` (freezes alone
   until ``last_freeze_step`` when it is set: a freeze needs no recovery time), within
   ``min_steps_between_events`` of the last event, or while the guard watches an event;
   with a budget, none once the projected saving reaches the target;
6. constraints: ``min_keep`` alive members; ``together`` members go only all at once;
   at most ``max_groups_per_event`` groups, largest FLOP saving first, in ONE event; groups
   inside a block whose LAYER group is pruned go with it (no decision, no FLOPs counted twice);
7. the guard turns loss rises after an event into restores (plus a cool-down);
8. with a budget, a PI actuator sets a sparsity penalty on the cheapest-to-lose groups
   (see :mod:`lyactl.control.budget`), counting only groups the constraints let go
   (``min_keep``);
9. with a final budget (``BudgetKind.FINAL``: "end at this size"), an event stops adding groups
   once the target is met, and at the first report at or after ``last_decision_step`` a
   target not yet met is completed: the cheapest-to-lose eligible groups are pruned until it
   is. Those decisions are NOT certified: each carries a ``budget:final`` certificate with
   verdict UNKNOWN, which ``lyactl report`` flags (it does not re-verify).

With a budget that counts pruned groups only (``BudgetCounts.PRUNED_ONLY``, what compressing
asks for) every ``phi`` of rules 5, 8 and 9 is :meth:`Controller.saved_fraction`, counted with
frozen groups as active: freezes still happen where certified, also once the target is met
(rule 5 then stops the prunes only), but never meet the target;
:meth:`Controller.training_fraction` reports the training saving, freezes included.

Rules 8 and 9 rank groups by :class:`lyactl.control.scoring.Scoring`: ``|g . w|`` per FLOP, or
with a ``prior`` (e.g. the activation importance of a trained original) the prior per FLOP;
every event of a controller with a prior records its name in ``Event.meta["prior"]``, and each
completion certificate the group's prior value (``numbers["prior"]``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lyactl.control.accounting import FlopsAccount
from lyactl.control.budget import BudgetCounts, BudgetKind, PIState, cheapest_groups, pi_step, setpoint, target_reached
from lyactl.control.controller_config import ControllerConfig, ControlOutput, finite_mask
from lyactl.control.decision_log import decode_array, encode_array
from lyactl.control.decision_rule import evaluate_monitors, role_verdicts
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict
from lyactl.control.groups import (ACTIVE, FROZEN, PRUNED, Action, Certificate, Constraint, Decision, Event, Group,
                                   GroupKind, GroupStats)
from lyactl.control.guard import Guard
from lyactl.control.monitors import Monitor, MonitorResult, Role, StatsWindow, default_monitors
from lyactl.control.protocol import FlopsModel
from lyactl.control.scoring import Prior, Scoring, check_prior
from lyactl.control.selection import Structure, select, within_min_keep

__all__ = ["ControllerConfig", "ControlOutput", "Controller", "ACTIVE", "FROZEN", "PRUNED"]

_TARGET_MET = "budget target reached"  # the reason rule 5 gives (a pruned-only budget still freezes)
_FREEZES_ONLY = "after last_decision_step: freezes only (until last_freeze_step)"


class Controller:
    """Online prune/freeze controller over fixed groups (indices stable for the run).

    ``flops_model`` (optional, :class:`~lyactl.control.protocol.FlopsModel`): the model's FLOPs/token
    for a vector of group statuses; with it the saved fraction is counted exactly where
    groups overlap, without it the groups' costs are summed (:meth:`estimated_fraction`).
    ``prior`` (optional): per-group importance ``[n_groups]`` (>= 0, larger = kept longer; +inf:
    never ranked) or a :class:`~lyactl.control.scoring.Prior` callable of the report; the
    actuator and the completion then rank by it instead of ``|g . w|``
    (:mod:`lyactl.control.scoring`). None: ``|g . w|``.
    """

    def __init__(self, groups: Sequence[Group], constraints: Sequence[Constraint] = (),
                 config: ControllerConfig | None = None, monitors: Sequence[Monitor] | None = None,
                 flops_model: FlopsModel | None = None, prior: Prior | np.ndarray | None = None) -> None:
        self.groups, self.constraints = tuple(groups), tuple(constraints)
        self.config = config if config is not None else ControllerConfig()
        self.monitors = tuple(monitors) if monitors is not None else default_monitors(self.config.monitors)
        n = self.n_groups = len(self.groups)
        for c in self.constraints:
            if any(not 0 <= m < n for m in c.members):
                raise InvalidArgumentError(bad_arg("Constraint.members", f"indices in [0, {n})", c.members))
        self.structure = Structure(np.array([g.kind is GroupKind.LAYER for g in self.groups], bool),
                                   np.array([g.layer for g in self.groups], np.int64), self.constraints)
        counts = self.config.budget.counts if self.config.budget is not None else BudgetCounts.TRAINING_FLOPS
        self.account = FlopsAccount(self.groups, self.structure, flops_model, self.config.model_flops, counts)
        self.flops_remove, self.flops_freeze = self.account.flops_remove, self.account.flops_freeze
        self.scoring = Scoring(np.maximum(self.flops_remove, 1e-300), check_prior(prior, n))  # rules 8, 9
        self.is_layer, self.layer_of = self.structure.is_layer, self.structure.layer_of
        self.sqrt_n = np.sqrt(np.array([max(g.n_params, 1) for g in self.groups], float))
        self.flops_model, self.model_flops = flops_model, self.account.model_flops
        self.window = StatsWindow(n, self.config.monitors.window, self.config.monitors.curv_factor)
        self.guard = Guard(self.config.guard)
        self.status = np.zeros(n, np.int8)
        self.streak_prune = np.zeros(n, np.int32)
        self.streak_freeze = np.zeros(n, np.int32)
        self.cool_until = np.full(n, -1, np.int64)
        self._cool_max = -1  # max(cool_until)
        self._masks: tuple[np.ndarray, np.ndarray | None] | None = None  # (active, pruned or None)
        self.chosen = np.zeros(n, bool)
        self.pi = PIState()
        self.banked = 0.0
        self.last_step: int | None = None
        self.last_event_step: int | None = None
        self.next_event_id = 0
        self.completed = False  # a final budget's completion (rule 9) has run

    # ------------------------------------------------------------------ accounting
    def saved_fraction(self) -> float:
        """``phi``: fraction of the dense model's training FLOPs/token saved now, as the budget
        counts it (:meth:`FlopsAccount.saved_fraction`: measured, exact or nominal; frozen
        groups as active with ``BudgetCounts.PRUNED_ONLY``)."""
        return self.account.saved_fraction(self.status)

    def training_fraction(self) -> float:
        """Training ``phi``, freezes included (:meth:`FlopsAccount.training_fraction`); the
        same number as :meth:`saved_fraction` unless the budget counts pruned groups only."""
        return self.account.training_fraction(self.status)

    def estimated_fraction(self) -> float:
        """Saved fraction by the decisions alone (:meth:`FlopsAccount.estimated_fraction`)."""
        return self.account.estimated_fraction(self.status)

    @property
    def fpt_ref(self) -> float | None:
        """The backend's FLOPs/token before any event (None until reported)."""
        return self.account.fpt_ref

    def _dense_flops(self) -> float:
        return self.account.dense_flops()

    def _saving(self, extra: np.ndarray) -> float:
        """FLOPs/token that pruning the ``extra`` groups would save now (one count)."""
        return self.account.saving(self.status, extra)

    def _changed(self) -> None:
        """Drop what is cached from ``status`` (call wherever it changes)."""
        self._masks = None
        self.account.changed()

    def _status_masks(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(status == ACTIVE, status == PRUNED or None if no group is pruned)``, cached."""
        if self._masks is None:
            pruned = self.status == PRUNED
            self._masks = (self.status == ACTIVE, pruned if pruned.any() else None)
        return self._masks

    def _hold(self, reason: str) -> ControlOutput:
        return ControlOutput((), (), (), np.zeros(self.n_groups), True, reason)

    # ------------------------------------------------------------------ main loop
    def observe(self, stats: GroupStats) -> ControlOutput:
        """One report in, one :class:`ControlOutput` out (deterministic)."""
        stats.validate(self.n_groups)
        if not (math.isfinite(stats.loss) and math.isfinite(stats.lr)):
            return self._hold(f"non-finite loss or lr at step {stats.step} (loss={stats.loss}, lr={stats.lr})")
        dt = stats.step - self.last_step if self.last_step is not None else stats.interval
        self.banked += self.saved_fraction() * max(dt, 0)
        self.last_step = stats.step
        self.account.measure(self.status, stats.flops_per_token)
        self.window.push(stats, ignore=self._status_masks()[1])
        restores, releases = self._run_guard(stats)
        eligible = self._eligible(stats)
        results = self._evaluate(eligible)
        rv = role_verdicts(results, self.n_groups, self.is_layer, self.config.allow_prune, self.config.allow_freeze)
        for streak, ok in ((self.streak_prune, rv.prune_ok), (self.streak_freeze, rv.freeze_ok)):
            ok &= eligible  # ok is this report's own array
            np.add(streak, 1, out=streak)
            streak *= ok  # 0 where not ok
        events: tuple[Event, ...] = ()
        reason = self._blocked(stats.step)
        # a pruned-only target met stops the prunes only: freezing what converged costs no capacity
        freezes_only = (reason == _TARGET_MET and self.account.pruned_only) or reason == _FREEZES_ONLY
        event = self._decide(stats.step, results, rv.roles, prune=not freezes_only) if not reason or freezes_only \
            else None
        if event is None and self._completing(stats.step):
            event = self._complete(stats, eligible)
        if event is not None:
            events = (event,)
            if self._exact(event, stats):
                releases.append(event)
            else:
                self.guard.watch(event)
        penalty = self._actuate(stats, eligible)
        return ControlOutput(events, tuple(restores), tuple(releases), penalty, False, reason or "ok", tuple(results))

    def _eligible(self, stats: GroupStats) -> np.ndarray:
        """``[n]``: active, out of cool-down, all statistics finite (a new array)."""
        eligible = self._status_masks()[0] & finite_mask(stats)
        if stats.step < self._cool_max:  # some group may still cool down
            eligible &= self.cool_until <= stats.step
        return eligible

    def _exact(self, event: Event, stats: GroupStats) -> bool:
        """True when the event only removes groups whose weights are exactly zero now: the
        removal cannot change the function (nor the loss), so there is nothing for the guard
        to watch or restore; such an event is released as it is applied (unless
        ``config.guard_exact_events``)."""
        if self.config.guard_exact_events:
            return False
        idx = [d.index for d in event.decisions]
        return all(d.action is Action.PRUNE for d in event.decisions) and bool(np.all(stats.w_sq[idx] == 0.0))

    def _run_guard(self, stats: GroupStats) -> tuple[list[Event], list[Event]]:
        self.guard.record(stats.step, stats.loss, stats.val_loss)
        restores, releases = self.guard.observe(stats.step, stats.loss, stats.val_loss)
        for event in restores:
            idx = np.array([d.index for d in event.decisions], np.int64)
            self.status[idx] = ACTIVE
            self._changed()
            self.cool_until[idx] = stats.step + self.config.cooldown_steps
            self._cool_max = int(self.cool_until.max())
            self.streak_prune[idx] = self.streak_freeze[idx] = 0
            mask = np.zeros(self.n_groups, bool)
            mask[idx] = True
            self.window.reset_groups(mask)
        return restores, releases

    def _evaluate(self, eligible: np.ndarray) -> list[MonitorResult]:
        """The monitors' results (see :func:`~lyactl.control.decision_rule.evaluate_monitors`)."""
        cfg = self.config
        return evaluate_monitors(self.monitors, self.window, eligible, self.is_layer, cfg.allow_prune, cfg.allow_freeze)

    def _blocked(self, step: int) -> str:
        """Why no event may be opened now ('' if one may)."""
        cfg = self.config
        if step < cfg.warmup_steps:
            return "warmup"
        late = cfg.last_decision_step is not None and step > cfg.last_decision_step
        if late and not (cfg.last_freeze_step is not None and step <= cfg.last_freeze_step):
            return "after last_decision_step"
        if self.last_event_step is not None and step - self.last_event_step < cfg.min_steps_between_events:
            return "min_steps_between_events"
        if self.guard.busy:
            return "guard watching the last event"
        if late:  # a freeze needs no time to recover: it may come after the prunes have stopped
            return _FREEZES_ONLY
        b = cfg.budget
        if b is not None and target_reached(b, step, self.banked, self.saved_fraction()):
            return _TARGET_MET
        return ""

    # ------------------------------------------------------------------ decisions
    def _shrinking(self, idx: np.ndarray) -> np.ndarray:
        """For groups ``idx``: whose ``w_sq`` fell below ``freeze_hold_ratio`` times its window
        maximum: they are on their way to zero (collapse), so freezing them now would forgo the
        larger, exact saving of pruning them; they wait for the collapse certificate."""
        w = self.window.field("w_sq")[:, idx]
        peak = np.fmax.reduce(w, axis=0)  # ignores NaN (unfilled or ignored reports); all-NaN -> NaN
        with np.errstate(invalid="ignore"):
            return w[-1] < self.config.freeze_hold_ratio * peak  # NaN compares False: no hold on no data

    def _decide(self, step: int, results: list[MonitorResult], role_ok: Mapping[Role, np.ndarray],
                prune: bool = True) -> Event | None:
        """The certified decisions of this report in one event (rule 6); ``prune`` False:
        freezes only (a pruned-only budget's target is met), prune-ready groups then freeze."""
        h = self.config.hysteresis
        ready_p = np.flatnonzero(self.streak_prune >= h) if prune else np.zeros(0, np.int64)
        ready_f = np.flatnonzero((self.streak_freeze >= h) & ((self.streak_prune < h) | (not prune)))
        ready_f = ready_f[~self._shrinking(ready_f)]
        if ready_p.size == 0 and ready_f.size == 0:
            return None
        idx = np.concatenate([ready_p, ready_f])
        act = np.concatenate([np.full(ready_p.size, PRUNED), np.full(ready_f.size, FROZEN)])
        gain = np.where(act == PRUNED, self.flops_remove[idx], self.flops_freeze[idx])
        order = np.lexsort((idx, -gain))
        ready = {int(i): int(a) for i, a in zip(idx[order], act[order])}
        enough = self._enough() if prune else None  # freezes only: the budget sets no limit
        picked = select(ready, self.status, self.structure, self.config.max_groups_per_event, enough)
        return self._event(step, picked, lambda i, action: self._certificates(i, action, results, role_ok))

    def _enough(self) -> Callable[[list[tuple[int, int]]], bool] | None:
        """For a final budget: whether picks would meet the target (rule 9), else None."""
        b = self.config.budget
        if b is None or b.kind is not BudgetKind.FINAL:
            return None
        phi0, dense = self.saved_fraction(), self._dense_flops()

        def enough(picked: list[tuple[int, int]]) -> bool:
            extra = np.zeros(self.n_groups, bool)
            extra[[j for j, a in picked if a == PRUNED]] = True
            frozen = sum(float(self.flops_freeze[j]) for j, a in picked if a == FROZEN)
            frozen = 0.0 if self.account.pruned_only else frozen  # a freeze never meets a pruned-only target
            pruned = self._saving(extra) if self.flops_model is not None else float(self.flops_remove[extra].sum())
            return phi0 + (pruned + frozen) / dense >= b.target
        return enough

    def _completing(self, step: int) -> bool:
        b, last = self.config.budget, self.config.last_decision_step
        return (b is not None and b.kind is BudgetKind.FINAL and not self.completed and last is not None
                and step >= last and not target_reached(b, step, self.banked, self.saved_fraction()))

    def _complete(self, stats: GroupStats, eligible: np.ndarray) -> Event | None:
        """Rule 9: prune the eligible groups the actuator pushes, then the lowest score
        (:attr:`scoring`), none larger than twice the remaining gap, until the final target is
        met; if those cannot meet it, the smallest larger group that can (the target is a
        bound the user asked for: an overshoot beats a miss)."""
        self.completed, b, phi = True, self.config.budget, self.saved_fraction()
        p = self.scoring.importance(stats)
        score = p / self.scoring.flops
        prior = (lambda i: {}) if self.scoring.prior is None else (lambda i: {"prior": float(p[i])})  # noqa: E731
        gap = (b.target - phi) * self._dense_flops()
        base = eligible & np.isfinite(score) & (self.flops_remove > 0)
        idx = np.flatnonzero(base & (self.flops_remove <= 2 * gap))
        big = np.flatnonzero(base & (self.flops_remove > 2 * gap))  # last resort: smallest overshoot first
        order = np.concatenate([idx[np.lexsort((idx, score[idx], ~self.chosen[idx]))],
                                big[np.lexsort((big, score[big], self.flops_remove[big]))]])
        picked = select({int(i): PRUNED for i in order}, self.status, self.structure, self.n_groups, self._enough())
        cert = lambda i, action: (Certificate(  # noqa: E731
            "budget:final", Verdict.UNKNOWN, (stats.step, stats.step), {"target": b.target, "phi": phi,
                                                                         "score": float(score[i]), **prior(i)},
            "target > phi", b.target - phi),)
        return self._event(stats.step, picked, cert)

    def _event(self, step: int, picked: list[tuple[int, int]],
               certificates: Callable[[int, Action], tuple[Certificate, ...]]) -> Event | None:
        """Apply ``picked`` to the statuses and make the event (None if nothing picked)."""
        if not picked:
            return None
        before = self._dense_flops() * (1.0 - self.training_fraction())  # training FLOPs/token
        decisions = []
        for i, a in picked:
            self.status[i] = a
            self._changed()
            action = Action.PRUNE if a == PRUNED else Action.FREEZE
            decisions.append(Decision(step, self.groups[i].name, i, action, certificates(i, action)))
        self.streak_prune[[i for i, _ in picked]] = 0
        self.streak_freeze[[i for i, _ in picked]] = 0
        after = self._dense_flops() * (1.0 - self.training_fraction())
        meta = {} if self.scoring.label is None else {"prior": self.scoring.label}
        event = Event(self.next_event_id, step, tuple(decisions), before, after, meta)
        self.next_event_id += 1
        self.last_event_step = step
        return event

    def _certificates(self, i: int, action: Action, results: list[MonitorResult],
                      role_ok: Mapping[Role, np.ndarray]) -> tuple[Certificate, ...]:
        """All certificates that justified the decision on group ``i``."""
        if action is Action.FREEZE:
            roles = {Role.SETTLED} if role_ok[Role.SETTLED][i] else set()
            if role_ok[Role.CONVERGED][i] and role_ok[Role.BOUNDED][i]:
                roles |= {Role.CONVERGED, Role.BOUNDED}
        else:
            roles = {Role.COLLAPSED} if role_ok[Role.COLLAPSED][i] else set()
            if role_ok[Role.CONVERGED][i] and role_ok[Role.HARMLESS][i]:
                roles |= {Role.CONVERGED, Role.HARMLESS}
        return tuple(r.certificate(i) for r in results if r.monitor.role in roles)

    # ------------------------------------------------------------------ actuator
    def _actuate(self, stats: GroupStats, eligible: np.ndarray) -> np.ndarray:
        """PI penalty on the cheapest-to-lose groups (zero without a budget)."""
        b = self.config.budget
        penalty = np.zeros(self.n_groups)
        if b is None or (self.config.last_decision_step is not None and stats.step > self.config.last_decision_step):
            self.chosen[:] = False
            return penalty
        phi = self.saved_fraction()
        error = setpoint(b, stats.step, self.banked) - phi
        dt = stats.interval
        self.pi = pi_step(b, self.pi, error, dt)
        if self.pi.u <= 0 or stats.step < self.config.warmup_steps:
            return penalty
        score = self.scoring.for_report(stats)  # computed only when topping up
        self.chosen = cheapest_groups(score, self.flops_remove, max(error, 0.0) * self._dense_flops(), eligible,
                                      self.chosen, saving=self._saving if self.flops_model is not None else None,
                                      room=lambda order, mask: within_min_keep(order, mask, self.status,
                                                                               self.structure.constraints))
        # lam_g = u sqrt(n_g): the proximal step then shrinks each coordinate by about
        # eta * u, on the scale of an Adam step (eta per coordinate), so u > 1 out-pushes the
        # optimizer and the group reaches exact zero; a bare u would not scale with the group.
        idx = np.flatnonzero(self.chosen)
        penalty[idx] = self.pi.u * self.sqrt_n[idx]
        return penalty

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; :meth:`load_state_dict` resumes with identical decisions."""
        return {"n_groups": self.n_groups, "window": self.window.state_dict(), "guard": self.guard.state_dict(),
                "status": self.status.tolist(), "streak_prune": self.streak_prune.tolist(),
                "streak_freeze": self.streak_freeze.tolist(), "cool_until": self.cool_until.tolist(),
                "chosen": self.chosen.tolist(), "pi": encode_array([self.pi.integral, self.pi.u]),
                "banked": encode_array([self.banked])[0], "last_step": self.last_step,
                "last_event_step": self.last_event_step, "next_event_id": self.next_event_id,
                "completed": self.completed,
                **self.account.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["n_groups"] != self.n_groups:
            raise InvalidArgumentError(bad_arg("state n_groups", self.n_groups, state["n_groups"]))
        self.window.load_state_dict(state["window"])
        self.guard.load_state_dict(state["guard"])
        self.status = np.array(state["status"], np.int8)
        self._changed()
        self.streak_prune = np.array(state["streak_prune"], np.int32)
        self.streak_freeze = np.array(state["streak_freeze"], np.int32)
        self.cool_until = np.array(state["cool_until"], np.int64)
        self._cool_max = int(self.cool_until.max(initial=-1))
        self.chosen = np.array(state["chosen"], bool)
        integral, u = decode_array(state["pi"])
        self.pi = PIState(float(integral), float(u))
        self.banked = float(decode_array([state["banked"]])[0])
        self.last_step, self.last_event_step = state["last_step"], state["last_event_step"]
        self.next_event_id = int(state["next_event_id"])
        self.completed = bool(state.get("completed", False))  # absent in states written before rule 9
        self.account.load_state_dict(state)
