"""Plain-loop API for certified in-training state truncation of an SSM model::

    trunc = StateTruncator(model, optimizer, StateTruncationPolicy(mode="energy", tau=0.01,
                           start_step=100, last_step=1000), log=DecisionLog("decisions.jsonl"))
    for step, batch in enumerate(data):
        ...; loss.backward(); optimizer.step()
        if trunc.step(loss):          # True when shapes changed: re-run torch.compile here
            fwd = torch.compile(model)

Every ``interval`` steps (one host sync for the loss, with a guard): the rollback guard sees the loss
(:meth:`lyactl.control.state_truncation.StateTruncation.observe`; restored events are undone
exactly, released ones forgotten); when the policy's window is open and the guard idle, each
SSM layer's weights are computed (:func:`~.state_op.layer_report`: HSVs of its real-output
realisation on the host), the policy proposes ranks, each proposal is carried out by a
:class:`~.state_op.TruncateState` operation, its certificate measured on the written layer,
and a cut whose certificate does not hold, that removes no mode (real eigenvalues of a
balanced LRU truncation each take a whole complex mode), or whose surgery refuses the rank,
is undone on the spot: no decision. The cuts that hold form one event, written to ``log`` with its
certificates (re-verifiable by :func:`lyactl.control.decision_log.reverify` and ``lyactl
report``). ``model`` is anything with ``ssm_layers()`` (e.g. :class:`~.lm.SSMLM`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from torch import nn

from lyactl.control.decision_log import DecisionLog
from lyactl.control.groups import Event
from lyactl.control.state_certificate import StateCertificate
from lyactl.control.state_truncation import StateOutput, StateTruncation, StateTruncationPolicy
from lyactl.errors import InvalidArgumentError, LyactlError, bad_arg
from lyactl.verdict import Verdict
from lyactl_torch.ssm.lm import SSMLM, flops_per_token
from lyactl_torch.ssm.state_op import StateRecord, TruncateState, layer_report

__all__ = ["StateTruncator"]


class StateTruncator:
    """Drive :class:`~lyactl.control.state_truncation.StateTruncation` from a training loop.

    Parameters
    ----------
    model, optimizer
        The model (with ``ssm_layers()``) and its optimizer (Adam / AdamW without amsgrad, or None).
    policy : StateTruncationPolicy
    log : DecisionLog, optional
        Where events, restores and releases are written.
    interval : int
        A report every ``interval`` calls of :meth:`step`.
    seq_len : int, optional
        Training sequence length for the FLOPs count (default: the layers' chunk).
    optimizer_policy : ``"reset"`` | ``"approx"`` | ``"slice"``
        Adam's state under a balanced change of basis (:mod:`~.truncate`).
    lru_method : ``"balanced"`` | ``"modal"``
        How LRU layers are cut (S4D-real layers always by modal selection).
    n_freq : int
        Frequency grid of the measured error.
    mode_scale : ``"eig"`` | ``"layer"``
        Scaling of the new LRU modes after a balanced cut (:func:`~.truncate.balanced_surgery`).
    equal_modes : bool
        A balanced cut to ``k`` real states keeps at most ``ceil(k / 2)`` complex LRU modes (what
        a modal cut to ``k`` real states keeps), stepping the rank down where the reduced system's
        real eigenvalues would need more: equal compute against modal selection at the same
        ``keep``. Off by default (a real eigenvalue then spends a whole mode on one real state).
    on_event : callable ``(truncator, events) -> None``, optional
        Called after shapes changed (cut or restored).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, policy: StateTruncationPolicy, *,
                 log: DecisionLog | None = None, interval: int = 50, seq_len: int | None = None,
                 optimizer_policy: Literal["approx", "reset", "slice"] = "reset",
                 lru_method: Literal["balanced", "modal"] = "balanced", n_freq: int = 512,
                 mode_scale: Literal["eig", "layer"] = "eig", equal_modes: bool = False,
                 on_event: Callable[["StateTruncator", list[Event]], None] | None = None) -> None:
        if not callable(getattr(model, "ssm_layers", None)):
            raise InvalidArgumentError(bad_arg("model", "a model with ssm_layers() (e.g. SSMLM)", type(model).__name__))
        if not (isinstance(interval, int) and interval >= 1):
            raise InvalidArgumentError(bad_arg("interval", "an int >= 1", interval))
        if lru_method not in ("balanced", "modal"):
            raise InvalidArgumentError(bad_arg("lru_method", "'balanced' or 'modal'", lru_method))
        if mode_scale not in ("eig", "layer"):
            raise InvalidArgumentError(bad_arg("mode_scale", "'eig' or 'layer'", mode_scale))
        self.mode_scale, self.equal_modes = mode_scale, bool(equal_modes)
        self.model, self.optimizer, self.log, self.interval = model, optimizer, log, interval
        self.decider = StateTruncation(policy)
        self.seq_len, self.optimizer_policy, self.lru_method, self.n_freq = seq_len, optimizer_policy, lru_method, n_freq
        self.on_event = on_event
        names = {id(m): n for n, m in model.named_modules()}
        self.names = [names[id(m)] for m in model.ssm_layers()]
        self.n_steps = 0
        self.held: dict[int, list[tuple[TruncateState, StateRecord]]] = {}
        self.events: list[Event] = []
        self.restored: list[Event] = []
        self.certificates: list[StateCertificate] = []
        self.refused: list[StateCertificate] = []

    def _seq_len(self) -> int:
        return self.seq_len or max(m.cfg.chunk for m in self.model.ssm_layers())

    def flops(self) -> float:
        """Training FLOPs/token of the model now (NaN for a model that is not an SSMLM)."""
        return flops_per_token(self.model, self._seq_len())["train"] if isinstance(self.model, SSMLM) else math.nan

    def step(self, loss: torch.Tensor | float, val_loss: float = math.nan) -> bool:
        """Count one optimizer step; on report steps run the guard and the decision.
        True iff shapes changed (a cut applied or restored)."""
        self.n_steps += 1
        if self.n_steps % self.interval:
            return False
        step = self.n_steps
        restores: list[Event] = []
        releases: list[Event] = []
        if self.decider.guard is not None:  # the loss is read (one host sync) only for the guard
            loss_f = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            restores, releases = self.decider.observe(step, loss_f, float(val_loss))
        for ev in restores:
            for op, rec in reversed(self.held.pop(ev.event_id, [])):
                op.undo(None, self.optimizer, rec)
            self.restored.append(ev)
        for ev in releases:
            self.held.pop(ev.event_id, None)
        event = self._decide(step) if self.decider.wants(step) else None
        if self.log is not None:
            self.log.write(StateOutput((event,) if event else (), tuple(restores), tuple(releases)))
        changed = list(restores) + ([event] if event else [])
        if changed and self.on_event is not None:
            self.on_event(self, changed)
        return bool(changed)

    def _decide(self, step: int) -> Event | None:
        layers = self.model.ssm_layers()
        reports = [layer_report(m, n, i, self._seq_len(), self.lru_method)
                   for i, (n, m) in enumerate(zip(self.names, layers))]
        proposals = self.decider.propose(step, reports, self.flops())
        before = self.flops()
        done: list[tuple[TruncateState, StateRecord]] = []
        for p in proposals:
            cap = -(-p.keep // 2) if self.equal_modes and p.method == "balanced" else None
            op = TruncateState(layers[p.index], p.name, p.method, p.keep, step, self.optimizer_policy, self.n_freq,
                               self.mode_scale, cap)
            try:
                rec = op.apply(None, self.optimizer)
            except LyactlError:  # the surgery refused the rank (e.g. it splits a repeated HSV): no decision
                continue
            c = rec.certificate
            if c.verdict is Verdict.HOLDS and c.modes_after < c.modes_before:
                done.append((op, rec))
            else:  # the written layer left its bound (or was not measured), or no mode went: undo
                op.undo(None, self.optimizer, rec)
                self.refused.append(c)
        certs = [rec.certificate for _, rec in done]
        event = self.decider.event(step, certs, [self.names.index(op.name) for op, _ in done], before, self.flops())
        if event is None:
            return None
        self.certificates += certs
        self.events.append(event)
        if self.decider.guard is not None:
            self.held[event.event_id] = done
        return event

    def summary(self) -> dict[str, Any]:
        """States now, events, restores and refused cuts."""
        return {"states": [m.n_state for m in self.model.ssm_layers()], "events": len(self.events),
                "restored": len(self.restored), "refused": len(self.refused), "flops_per_token": self.flops()}

