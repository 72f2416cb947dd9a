"""The backend protocol: what an ML backend must offer the core controller.

The core never imports an ML framework. A backend (e.g. ``lyactl_torch``) implements
:class:`Backend`; the adapter loop is::

    stats = backend.statistics()          # every K steps, one host sync
    out = controller.observe(stats)       # pure numpy, deterministic
    for event in out.events: backend.apply(event)
    for event in out.restores: backend.restore(event)
    for event in out.releases: backend.release(event)
    backend.set_penalty(out.penalty)      # optional feedback actuator
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from lyactl.control.groups import Constraint, Event, Group, GroupStats

__all__ = ["Backend", "FlopsModel", "CountsFlops"]


@runtime_checkable
class Backend(Protocol):
    """An ML backend driven by the core controller."""

    def groups(self) -> Sequence[Group]:
        """All groups of the model, in a fixed order (indices are stable for a run)."""
        ...

    def constraints(self) -> Sequence[Constraint]:
        """Constraints between groups (GQA ties, minimum widths)."""
        ...

    def statistics(self) -> GroupStats:
        """Per-group statistics since the last call (one host synchronisation)."""
        ...

    def apply(self, event: Event) -> None:
        """Carry out an event (prune / freeze), keeping removed slices for restore."""
        ...

    def restore(self, event: Event) -> None:
        """Undo a previously applied event exactly (weights and optimizer state)."""
        ...

    def release(self, event: Event) -> None:
        """Drop the slices kept for an event: it can no longer be restored."""
        ...

    def set_penalty(self, strength: np.ndarray) -> None:
        """Set a per-group sparsity-penalty strength (shape ``[n_groups]``, >= 0)."""
        ...


class FlopsModel(Protocol):
    """Training FLOPs per token of the model with each group's status applied.

    ``status`` has shape ``[n_groups]`` (int8: 0 active, 1 frozen, 2 pruned, in the order of
    ``Backend.groups()``). Group costs do not add up when groups overlap (a block of residual
    channels crosses every head and MLP block: cutting both removes their intersection
    once), so a backend that knows its shapes can count a hypothetical state exactly. A
    plain function plugs in. Called a few times per decision event, never per step.
    """

    def __call__(self, status: np.ndarray) -> float:
        ...


@runtime_checkable
class CountsFlops(Protocol):
    """A backend that offers a :class:`FlopsModel` of its model (optional to
    :class:`Backend`; ``lyactl_torch.TorchBackend`` does)."""

    def flops_model(self, status: np.ndarray) -> float:
        """Training FLOPs/token with ``status`` applied to the model as it is now."""
        ...
