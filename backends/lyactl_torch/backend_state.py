"""The state of a :class:`~lyactl_torch.loop.Lyactl` loop as plain data, and its exact restore.

A run checkpoint must put a *fresh* loop (original model shapes, the controller's original
group indices) back into the state of the checkpointed one. Group indices are fixed at
discovery, so a backend rebuilt from the pruned model would number its groups
differently; instead the structure is **replayed**: the recorded applies and restores
(``backend.record``, in order, with the events kept in ``loop.events`` /
``loop.restored``) are carried out again on the fresh model, then events released since
are dropped. That reproduces the shapes, the live unit ids, the optimizer's
param-group order and the held records exactly; afterwards every *value* is overwritten
from the checkpoint:

* the removed-but-held slices and their optimizer state (``backend.held``),
  the removed blocks' weights, ``requires_grad`` flags and optimizer state, freeze flags;
* the statistics snapshot ``p_prev`` that ``dw_sq = ||p - p_prev||^2`` is taken against
  (saved, not re-based, so the first report after a resume is bit-identical);
* the penalty strengths, the step counters and the backend's event record;
* the controller (``state_dict`` / ``load_state_dict``).

The per-report diagnostics ``loop.outputs`` and ``loop.stats`` are not saved (they grow
with the run); after a resume they hold the reports since the resume only.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from lyactl.control.decision_log import event_from_json, event_to_json
from lyactl.errors import CheckpointError, InvalidArgumentError, bad_arg

from .freeze import FreezeRecord, update_prefix
from .loop import Lyactl
from .operations import CutUnits, FreezeLayer, Operation, RemoveLayer
from .surgery import AxisRemoval, LayerRemoval, SliceRecord

__all__ = ["check_checkpointable", "loop_state", "replay_structure", "load_loop_values"]


def check_checkpointable(loop: Lyactl) -> None:
    """Raise :class:`InvalidArgumentError` if ``loop.controller`` cannot be saved."""
    c = loop.controller
    if c is not None and not (hasattr(c, "state_dict") and hasattr(c, "load_state_dict")):
        raise InvalidArgumentError(bad_arg("loop.controller", "a controller with state_dict()/load_state_dict() "
                                           "(needed to checkpoint the run)", type(c).__name__))


def _kind(op: Operation) -> str:
    """The checkpoint's name of an operation's record (a Reparametrise is not checkpointed)."""
    for cls, kind in ((CutUnits, "cut"), (RemoveLayer, "layer"), (FreezeLayer, "freeze")):
        if isinstance(op, cls):
            return kind
    raise CheckpointError(bad_arg("held operation", "a cut, layer removal or freeze (checkpointable)",
                                  type(op).__name__))


def _held_part(op: Operation, rec: Any) -> dict[str, Any]:
    kind = _kind(op)
    if kind == "cut":
        return {"kind": kind, "axis": rec.axis, "units": list(rec.units),
                "slices": [{"name": r.s.name, "data": r.data, "state": dict(r.state)} for r in rec.slices]}
    if kind == "layer":
        return {"kind": kind, "block_id": rec.block_id, "module": rec.module.state_dict(),
                "requires_grad": [p.requires_grad for p in rec.module.parameters()],
                "state": [{k: v for k, (v, _) in st.items()} for st in rec.state],
                "on_cpu": [{k: dev is None or torch.device(dev).type == "cpu" for k, (_, dev) in st.items()}
                           for st in rec.state],
                "slots": [None if s is None else list(s) for s in rec.slots]}
    return {"kind": kind, "block_id": rec.block_id, "flags": list(rec.flags)}


def loop_state(loop: Lyactl) -> dict[str, Any]:
    """Everything of ``loop`` (backend and controller) a resume needs, as plain containers
    and host or device tensors (``torch.save``-able, loads with ``weights_only=True``)."""
    check_checkpointable(loop)
    b = loop.backend
    names = {id(p): n for n, p in b.model.named_parameters()}
    return {
        "groups": [g.name for g in b.groups()],
        "events": [event_to_json(e) for e in loop.events],
        "restored": [event_to_json(e) for e in loop.restored],
        "controller": None if loop.controller is None else loop.controller.state_dict(),
        "step": b.step, "last_stats_step": b.last_stats_step, "record": [dict(r) for r in b.record],
        "live": {k: list(v) for k, v in b.layout.live.items()}, "block_ids": list(b.layout.block_ids),
        "lam": torch.as_tensor(b.prox.lam_host, dtype=torch.float64),
        "prev": {names[key]: t for key, t in b.plan.prev.items()},
        "held": {int(eid): [_held_part(op, r) for op, r in parts] for eid, parts in b.held.items()},
    }


def replay_structure(loop: Lyactl, state: Mapping[str, Any]) -> None:
    """Re-apply the recorded structural history on ``loop``'s fresh backend.

    Raises :class:`CheckpointError` when the fresh model does not have the checkpoint's
    groups, or when the replay does not reproduce the saved live units, blocks and held
    events (the checkpoint then belongs to another model or history).
    """
    b = loop.backend
    names = [g.name for g in b.groups()]
    if names != list(state["groups"]) or b.held or b.record:
        raise CheckpointError(bad_arg("loop", "a fresh loop on the run's original model "
                                      f"({len(state['groups'])} groups)", f"{len(names)} groups, "
                                      f"{len(b.record)} events already applied"))
    applied = {e["event_id"]: event_from_json(e) for e in state["events"]}
    restores = iter(event_from_json(e) for e in state["restored"])
    try:
        for rec in state["record"]:
            if rec["kind"] == "apply":
                b.apply(applied[rec["event_id"]])
            else:
                b.restore(next(restores))
    except (KeyError, StopIteration, InvalidArgumentError) as exc:
        raise CheckpointError(bad_arg("checkpoint event history", "a replayable history", repr(exc))) from exc
    for eid in [e for e in b.held if e not in state["held"]]:  # released since
        b.held.pop(eid)
        b.held_groups.pop(eid)
    found = (b.layout.live, b.layout.block_ids, sorted(b.held))
    wanted = (state["live"], state["block_ids"], sorted(state["held"]))
    if found != wanted:
        raise CheckpointError(bad_arg("replayed structure", f"live/blocks/held {wanted}", found))


def _held_values(kind: str, rec: Any, saved: Mapping[str, Any]) -> Any:
    """A held record of the replayed structure with the checkpoint's values."""
    if saved["kind"] != kind:
        raise CheckpointError(bad_arg("held record", f"kind {saved['kind']!r}", kind))
    if kind == "cut":
        if [r.s.name for r in rec.slices] != [s["name"] for s in saved["slices"]]:
            raise CheckpointError(bad_arg(f"held slices of {rec.axis!r}", "the saved parameters", rec.slices))
        slices = tuple(SliceRecord(r.s, s["data"], dict(s["state"])) for r, s in zip(rec.slices, saved["slices"]))
        return AxisRemoval(rec.axis, rec.units, slices)
    if kind == "layer":
        if [None if s is None else list(s) for s in rec.slots] != saved["slots"]:
            raise CheckpointError(bad_arg(f"slots of block {rec.block_id}", saved["slots"], rec.slots))
        rec.module.load_state_dict(saved["module"])
        for p, flag in zip(rec.module.parameters(), saved["requires_grad"]):
            p.requires_grad_(flag)
        state = tuple({k: (v, None if not isinstance(v, torch.Tensor) else
                           (torch.device("cpu") if cpu[k] else rec.device)) for k, v in st.items()}
                      for st, cpu in zip(saved["state"], saved["on_cpu"]))
        return LayerRemoval(rec.block_id, rec.module, rec.device, state, rec.slots)
    return FreezeRecord(rec.block_id, tuple(saved["flags"]))


def load_loop_values(loop: Lyactl, state: Mapping[str, Any]) -> None:
    """After :func:`replay_structure` and loading the model's weights: put back the held
    values, the statistics snapshot, penalty, counters, record and controller state."""
    b = loop.backend
    for eid, parts in b.held.items():
        saved = state["held"][eid]
        b.held[eid] = [(op, _held_values(_kind(op), r, s)) for (op, r), s in zip(parts, saved, strict=True)]
    names = {id(p): n for n, p in b.model.named_parameters()}
    try:
        b.plan.prev = {id(e.param): state["prev"][names[id(e.param)]].to(e.param.device) for e in b.plan.entries}
    except KeyError as exc:
        raise CheckpointError(bad_arg("statistics snapshot", "one tensor per grouped parameter", repr(exc))) from exc
    update_prefix(b.layout)
    b.set_penalty(state["lam"].numpy())
    b.step, b.last_stats_step = int(state["step"]), int(state["last_stats_step"])
    b.record[:] = [dict(r) for r in state["record"]]
    if (state["controller"] is None) != (loop.controller is None):
        raise CheckpointError(bad_arg("loop.controller", "the checkpoint's (None or a controller)",
                                      type(loop.controller).__name__))
    if loop.controller is not None:
        check_checkpointable(loop)
        loop.controller.load_state_dict(state["controller"])
    loop.events[:] = [event_from_json(e) for e in state["events"]]
    loop.restored[:] = [event_from_json(e) for e in state["restored"]]
    loop.outputs.clear()
    loop.stats.clear()

