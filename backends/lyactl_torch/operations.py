"""Structural operations: what a decision does to the model, each with its exact undo.

An event's decisions become an ordered list of :class:`Operation` values
(:func:`plan`): width cuts per axis, then whole layers (removed or frozen), then
reparametrisations. Each operation's :meth:`~Operation.apply` returns a record from which
:meth:`~Operation.undo` puts back bit-identical weights and optimizer state; the backend
undoes a list in reverse order (an operation may change shapes a later one relies on).
This is the one place that says what an :class:`~lyactl.control.groups.Action` on a group
kind means.

:class:`Reparametrise` is the operation that deletes no slice: it replaces a set of
parameters by new tensors (any shapes: a change of state basis followed by truncation, a
low-rank factorisation, ...) computed from the current ones, with an explicit policy for
each optimizer moment (:class:`StatePolicy`): TRANSFORM maps the moment by a function the
reparametrisation supplies (for a linear change of variables ``w' = M w``, a first moment
``m' = M m`` is the moment of the new variables' gradients only when ``M`` is orthogonal;
say which map you use and why), SLICE is a TRANSFORM that indexes, RESET starts the
moment from zero (Adam's bias correction then treats it as fresh only if ``step`` is reset
too; it is kept, so a reset second moment is small for the first steps: the update is
larger, not smaller, than Adam's first step; prefer TRANSFORM where a map can be justified).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import nn

from lyactl.control.groups import Action, Event, GroupKind
from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

from .freeze import freeze_layer, unfreeze_layer
from .groups import Layout
from .surgery import prune_units, remove_layer, replace_data, restore_layer, restore_units

__all__ = ["CutUnits", "FreezeLayer", "NewValue", "Operation", "RemoveLayer", "Reparametrise", "StatePolicy",
           "plan"]


class Operation(Protocol):
    """One structural change: ``apply`` returns the record ``undo`` needs."""

    def apply(self, layout: Layout, optimizer: torch.optim.Optimizer) -> Any:
        ...

    def undo(self, layout: Layout, optimizer: torch.optim.Optimizer, record: Any) -> None:
        ...


@dataclass(frozen=True)
class CutUnits:
    """Remove ``units`` (original ids) of axis ``axis`` (:func:`~.surgery.prune_units`)."""

    axis: str
    units: tuple[int, ...]

    def apply(self, layout: Layout, optimizer: torch.optim.Optimizer) -> Any:
        return prune_units(layout, optimizer, self.axis, self.units)

    def undo(self, layout: Layout, optimizer: torch.optim.Optimizer, record: Any) -> None:
        restore_units(layout, optimizer, record)


@dataclass(frozen=True)
class RemoveLayer:
    """Delete block ``block`` (original index) from the model and the optimizer."""

    block: int

    def apply(self, layout: Layout, optimizer: torch.optim.Optimizer) -> Any:
        return remove_layer(layout, optimizer, self.block)

    def undo(self, layout: Layout, optimizer: torch.optim.Optimizer, record: Any) -> None:
        restore_layer(layout, optimizer, record)


@dataclass(frozen=True)
class FreezeLayer:
    """Stop training block ``block`` (a frozen bottom prefix also skips its backward)."""

    block: int

    def apply(self, layout: Layout, optimizer: torch.optim.Optimizer) -> Any:
        return freeze_layer(layout, self.block)

    def undo(self, layout: Layout, optimizer: torch.optim.Optimizer, record: Any) -> None:
        unfreeze_layer(layout, record)


class StatePolicy(enum.Enum):
    """What happens to an optimizer moment of a reparametrised parameter."""

    TRANSFORM = "transform"  # mapped by the reparametrisation's own function
    SLICE = "slice"          # a transform that indexes (modes kept in their parameterisation)
    RESET = "reset"          # zeros of the new shape


@dataclass(frozen=True, eq=False)
class NewValue:
    """The new tensor of one parameter and the map of each optimizer moment.

    ``moments`` maps a state key (``"exp_avg"``, ``"exp_avg_sq"``, ``"momentum_buffer"``)
    to ``(policy, fn)``; ``fn(old moment) -> new moment`` for TRANSFORM and SLICE, ignored
    for RESET. A key not named is RESET (never left at a stale shape).
    """

    value: torch.Tensor
    moments: Mapping[str, tuple[StatePolicy, Callable[[torch.Tensor], torch.Tensor] | None]] = field(
        default_factory=dict)


@dataclass(frozen=True, eq=False)
class _Saved:
    param: nn.Parameter
    data: torch.Tensor                    # host copy of the old value
    state: dict[str, torch.Tensor]        # host copies of the old shaped moments


@dataclass(frozen=True, eq=False)
class Reparametrise:
    """Replace ``params`` (name -> Parameter) by ``fn(current values)`` (name -> NewValue).

    The Parameter objects survive (their data is replaced), so the optimizer keeps its
    references; ``refresh`` (optional) updates module attributes that depend on shapes.
    :meth:`undo` returns the parameters and their shaped moments to their values before
    :meth:`apply` (training of these parameters since is lost; scalar state such as
    Adam's ``step`` counts on). Cost: one host copy of the old values and moments (kept
    for the undo until the event is released).
    """

    name: str
    params: Mapping[str, nn.Parameter]
    fn: Callable[[Mapping[str, torch.Tensor]], Mapping[str, NewValue]]
    refresh: Callable[[], None] | None = None

    def apply(self, layout: Layout, optimizer: torch.optim.Optimizer) -> tuple[_Saved, ...]:
        with torch.no_grad():
            new = self.fn({k: p.detach() for k, p in self.params.items()})
        if set(new) != set(self.params):
            raise InvalidArgumentError(bad_arg(f"{self.name}: fn(params)", sorted(self.params), sorted(new)))
        saved = []
        for key, p in self.params.items():
            nv = new[key]
            if not torch.isfinite(nv.value).all():
                raise InvalidArgumentError(bad_arg(f"{self.name}: new value of {key}", "finite entries", "non-finite"))
            st = optimizer.state.get(p, {})
            shaped = {k: v for k, v in st.items() if isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim() > 0}
            saved.append(_Saved(p, p.detach().cpu().clone(), {k: v.cpu().clone() for k, v in shaped.items()}))
            for k, m in shaped.items():
                st[k] = _moment(self.name, key, k, m, nv)
            replace_data(p, nv.value.to(p.device, p.dtype))
            p.grad = None
        if self.refresh is not None:
            self.refresh()
        return tuple(saved)

    def undo(self, layout: Layout, optimizer: torch.optim.Optimizer, record: tuple[_Saved, ...]) -> None:
        for s in reversed(record):
            st = optimizer.state.get(s.param, {})
            for k, v in s.state.items():
                st[k] = v.to(s.param.device)
            replace_data(s.param, s.data.to(s.param.device))
            s.param.grad = None
        if self.refresh is not None:
            self.refresh()


def _moment(op: str, key: str, state_key: str, m: torch.Tensor, nv: NewValue) -> torch.Tensor:
    policy, fn = nv.moments.get(state_key, (StatePolicy.RESET, None))
    if policy is StatePolicy.RESET or fn is None:
        return torch.zeros_like(nv.value, device=m.device, dtype=m.dtype)
    out = fn(m)
    if out.shape != nv.value.shape:
        raise ShapeError(bad_arg(f"{op}: {state_key} of {key}", f"shape {tuple(nv.value.shape)}", tuple(out.shape)))
    return out.to(m.device, m.dtype)


def plan(layout: Layout, event: Event, extra: Sequence[Operation] = ()) -> list[Operation]:
    """The operations of ``event``: width cuts per axis, then layers, then ``extra``.

    PRUNE of a width group cuts its units from its axis (decisions on one axis merged into
    one cut); PRUNE / FREEZE of a LAYER group removes / freezes the block; FREEZE of a
    width group is refused (a width group has no separate backward to skip).
    """
    cuts: dict[str, list[int]] = {}
    layers: list[Operation] = []
    for d in event.decisions:
        if not 0 <= d.index < len(layout.groups) or layout.groups[d.index].name != d.group:
            raise InvalidArgumentError(bad_arg("Decision.index", f"the index of group {d.group!r}", d.index))
        g, ref = layout.groups[d.index], layout.refs[d.index]
        if d.action is Action.PRUNE and g.kind is not GroupKind.LAYER:
            cuts.setdefault(ref.axis, []).extend(ref.units)
        elif d.action is Action.PRUNE:
            layers.append(RemoveLayer(ref.layer))
        elif d.action is Action.FREEZE and g.kind is GroupKind.LAYER:
            layers.append(FreezeLayer(ref.layer))
        elif d.action is Action.FREEZE:
            raise InvalidArgumentError(bad_arg(f"FREEZE of {d.group!r}", "a LAYER group", g.kind.value))
    return [CutUnits(axis, tuple(u)) for axis, u in cuts.items()] + layers + list(extra)
