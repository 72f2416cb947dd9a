"""FSDP2 units: gather one ``fully_shard`` unit to plain tensors, and shard it again.

A *unit* is a module that ``torch.distributed.fsdp.fully_shard`` was applied to (a block,
the root); it owns the parameters of its subtree that no nested unit owns. Surgery on a
unit (:mod:`.fsdp`) runs between :func:`open_unit` and :func:`close_unit`:

* :func:`open_unit` all-gathers the unit's parameters and their optimizer moments
  (``DTensor.full_tensor()``, one all-gather per tensor, every rank in the same order),
  removes FSDP from the module and puts plain ``nn.Parameter`` objects holding the full
  values in place of the sharded ones (in the module and in the optimizer). Memory: the
  full values of ONE unit (and its moments) on every rank, never the whole model.
* :func:`close_unit` applies ``fully_shard`` to the module again (new shapes, new
  ``DTensor`` parameters) and hands the optimizer the new parameters, with each moment cut
  to this rank's rows (``Shard(0)``: rank ``r`` holds rows ``[r c, min((r + 1) c, N))`` with
  ``c = ceil(N / R)``, ``torch.chunk``'s split, checked against the new parameter).
* :func:`reset_root` makes the root re-run FSDP's lazy initialisation at the next forward
  (its list of units changed).

FSDP2 has no public call that removes ``fully_shard`` from a module; :func:`_strip` undoes
what ``fully_shard`` and its lazy init did (hooks, the composable-API registry entries, the
module-state mapping, the lazy init's shared context, the dynamic ``FSDP<cls>`` class).
These are private names of torch's FSDP2 (tested with torch 2.13; the param-group
attribute's older singular name is handled); a torch that renamed them fails here loudly
(:class:`~lyactl.errors.UnsupportedModelError`), not silently.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from lyactl.errors import UnsupportedModelError, bad_arg

__all__ = ["Opened", "adopt", "mesh_of", "units", "unit_params", "open_unit", "close_unit", "reset_root", "shard_rows", "shard_like"]


@dataclass(frozen=True, eq=False)
class Opened:
    """A unit between :func:`open_unit` and :func:`close_unit`: the module, its slots
    ``(owner module, attribute name)`` per plain parameter, the mesh and ``fully_shard``
    keyword arguments to shard it with again."""

    module: nn.Module
    slots: tuple[tuple[tuple[nn.Module, str], ...], ...]
    mesh: Any
    kwargs: dict[str, Any]


def units(model: nn.Module) -> list[nn.Module]:
    """The ``fully_shard`` units of ``model`` in pre-order (the root first)."""
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def unit_params(unit: nn.Module) -> list[nn.Parameter]:
    """The parameters ``unit`` owns: its subtree's, minus those of nested units."""
    nested = {id(p) for m in unit.modules() if m is not unit and isinstance(m, FSDPModule) for p in m.parameters()}
    return [p for p in unit.parameters() if id(p) not in nested]


def shard_rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """``(start, length)`` of rank ``rank``'s rows of a dimension of ``n`` rows sharded
    ``torch.chunk``-style over ``world`` ranks (FSDP2's ``Shard(0)``)."""
    c = math.ceil(n / world) if n else 0
    start = min(rank * c, n)
    return start, max(0, min(c, n - start))


def shard_like(full: torch.Tensor, p: DTensor) -> DTensor:
    """This rank's rows of ``full`` (the global value) as a DTensor laid out like ``p``."""
    mesh = p.device_mesh
    start, n = shard_rows(full.shape[0], mesh.size(), mesh.get_local_rank())
    local = full.narrow(0, start, n).to(p.to_local().device).clone()
    if local.shape != p.to_local().shape:
        raise UnsupportedModelError(bad_arg("FSDP2 shard layout", f"torch.chunk rows {tuple(local.shape)}",
                                            tuple(p.to_local().shape)))
    return DTensor.from_local(local, mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())


def _slots(unit: nn.Module, params: list[nn.Parameter]) -> list[list[tuple[nn.Module, str]]]:
    """Every ``(module, name)`` holding each parameter (a tied weight has two)."""
    where = {id(p): i for i, p in enumerate(params)}
    out: list[list[tuple[nn.Module, str]]] = [[] for _ in params]
    for m in unit.modules():
        for name, q in m._parameters.items():
            if q is not None and id(q) in where:
                out[where[id(q)]].append((m, name))
    return out


def _swap(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter, state: dict[str, Any]) -> None:
    for pg in optimizer.param_groups:
        pg["params"] = [new if q is old else q for q in pg["params"]]
    optimizer.state.pop(old, None)
    if state:
        optimizer.state[new] = state


def _strip(unit: nn.Module) -> None:
    """Remove FSDP2 from ``unit`` (hooks, registry, state mapping, context, class); see the module doc."""
    try:
        _contract = importlib.import_module("torch.distributed._composable.contract")
        _cs = importlib.import_module("torch.distributed._composable_state")
        _fsdp_state = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_state")

        state = fully_shard.state(unit)
        state._pre_forward_hook_handle.remove()
        state._post_forward_hook_handle.remove()
        groups = getattr(state, "_fsdp_param_groups", None)  # torch < 2.10 has one, singular
        groups = groups if groups is not None else [g for g in [state._fsdp_param_group] if g is not None]
        for group in groups:
            for handles in (group._module_to_pre_save_state_dict_hook_handle,
                            group._module_to_pre_load_state_dict_hook_handle):
                for h in handles.values():
                    h.remove()
                handles.clear()
            for fp in group.fsdp_params:  # load_state_dict post-hook of each sharded parameter
                fp._post_load_hook_handle.remove()
        applied = unit.__dict__[_contract.STATE_KEY]
        for fn in [f for f in applied if getattr(f, "__name__", None) == "fully_shard"]:
            del applied[fn]
        unit.__dict__[_contract.REGISTRY_KEY].pop("fully_shard", None)
        _cs._module_state_mapping.pop(unit, None)
        # Lazy init shares one context whose ``all_states`` lists every state, itself
        # included: a cycle that kept the stripped state (its old sharded parameters and
        # gradients) alive until Python's cyclic gc ran, at an unpredictable later step.
        ctx = state._state_ctx
        ctx.all_states[:] = [s for s in ctx.all_states if s is not state]  # absent before a lazy init
        state._state_ctx = _fsdp_state.FSDPStateContext()
    except (AttributeError, KeyError, ImportError) as exc:
        raise UnsupportedModelError(bad_arg("torch FSDP2 internals", "those of torch 2.13 (FSDP2)", repr(exc))) from exc
    unit.__class__ = unit.__class__.__mro__[2]  # FSDP<cls> -> FSDPModule -> cls


def open_unit(unit: nn.Module, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any] | None = None) -> Opened:
    """Gather ``unit`` into plain full parameters (with optimizer moments); collective.
    ``kwargs``: the ``fully_shard`` arguments (besides ``mesh``) :func:`close_unit` uses."""
    params = unit_params(unit)
    if not params or not all(isinstance(p, DTensor) for p in params):
        raise UnsupportedModelError(bad_arg("FSDP2 unit", "DTensor parameters (fully_shard applied)", type(unit).__name__))
    mesh = params[0].device_mesh
    slots = _slots(unit, params)
    full = []
    for p in params:  # one all-gather per tensor, the same order on every rank
        st = {k: (v.full_tensor() if isinstance(v, DTensor) else v) for k, v in optimizer.state.get(p, {}).items()}
        full.append((p, p.full_tensor(), st))
        p.grad = None  # stale (a new parameter replaces p); freed now, not with p
    _strip(unit)
    for (p, value, st), where in zip(full, slots):
        q = nn.Parameter(value, requires_grad=p.requires_grad)
        for m, name in where:
            m._parameters[name] = q
        _swap(optimizer, p, q, st)
    return Opened(unit, tuple(tuple(w) for w in slots), mesh, dict(kwargs or {}))


def close_unit(opened: Opened, optimizer: torch.optim.Optimizer) -> None:
    """Shard ``opened.module`` again with ``fully_shard`` and give the optimizer the new
    parameters with this rank's rows of every moment; collective-free (local slicing)."""
    plain = [where[0][0]._parameters[where[0][1]] for where in opened.slots]
    fully_shard(opened.module, mesh=opened.mesh, **opened.kwargs)
    for q, where in zip(plain, opened.slots):
        new = where[0][0]._parameters[where[0][1]]
        st = {k: (shard_like(v, new) if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape == q.shape else v)
              for k, v in optimizer.state.get(q, {}).items()}
        _swap(optimizer, q, new, st)


def mesh_of(model: nn.Module) -> Any:
    """The device mesh of ``model``'s first DTensor parameter."""
    for p in model.parameters():
        if isinstance(p, DTensor):
            return p.device_mesh
    raise UnsupportedModelError(bad_arg("model", "DTensor parameters (fully_shard applied)", "none"))


def adopt(unit: nn.Module, mesh: Any, kwargs: dict[str, Any] | None = None) -> Opened:
    """An :class:`Opened` for a plain module (its parameters full, in the optimizer), e.g.
    a removed block put back, so that :func:`close_unit` shards it."""
    params = list(unit.parameters())
    return Opened(unit, tuple(tuple(w) for w in _slots(unit, params)), mesh, dict(kwargs or {}))


def reset_root(model: nn.Module) -> None:
    """Make FSDP2 lazily re-initialise from ``model`` (the root) at its next forward."""
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPStateContext

    for m in units(model):
        st = fully_shard.state(m)
        st._is_root = None
        st._state_ctx = FSDPStateContext()
    if dist.is_initialized():
        dist.barrier()
