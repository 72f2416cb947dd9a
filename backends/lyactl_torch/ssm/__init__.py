"""State-space layers for the torch backend: the scan (:mod:`.scan`), the LRU (:mod:`.lru`)
and real-diagonal (:mod:`.s4d`) layers, an SSM language model (:mod:`.lm`), in-training
state truncation with certificates and the optimizer state carried over (:mod:`.truncate`),
as an undoable operation (:mod:`.state_op`) driven from a plain loop by
:class:`~.truncator.StateTruncator` (imported lazily, PEP 562)."""

from __future__ import annotations

from typing import Any

__all__ = ["StateTruncator", "TruncateState"]


def __getattr__(name: str) -> Any:
    if name == "StateTruncator":
        from lyactl_torch.ssm.truncator import StateTruncator

        return StateTruncator
    if name == "TruncateState":
        from lyactl_torch.ssm.state_op import TruncateState

        return TruncateState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
