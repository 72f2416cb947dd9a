"""Freezing whole blocks (LAYER groups).

A frozen block's parameters get ``requires_grad_(False)`` and ``grad = None``: autograd
computes no weight gradients for them and the optimizers skip them (``grad is None``), so
neither the update nor weight decay touches them. Input gradients still flow through a
frozen block that has trainable blocks below it.

The contiguous run of frozen blocks from the bottom is the *frozen prefix*: the adapter
runs it under ``torch.no_grad()`` (``model.frozen_prefix`` for the reference GPT), so it
builds no graph and runs no backward at all (no weight and no input gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

from lyactl.errors import InvalidArgumentError, bad_arg

from .groups import Layout

__all__ = ["FreezeRecord", "is_frozen", "frozen_prefix", "update_prefix", "freeze_layer", "unfreeze_layer"]


@dataclass(frozen=True)
class FreezeRecord:
    """Block ``block_id`` was frozen; ``flags`` are its parameters' previous ``requires_grad``."""

    block_id: int
    flags: tuple[bool, ...]


def _block(layout: Layout, block_id: int):
    if block_id not in layout.block_ids:
        raise InvalidArgumentError(bad_arg("block_id", f"a live block of {layout.block_ids}", block_id))
    return layout.adapter.blocks(layout.model)[layout.block_ids.index(block_id)]


def is_frozen(module) -> bool:
    """True if no parameter of ``module`` requires a gradient."""
    return not any(p.requires_grad for p in module.parameters())


def frozen_prefix(layout: Layout) -> int:
    """Number of contiguous frozen blocks from the bottom."""
    n = 0
    for blk in layout.adapter.blocks(layout.model):
        if not is_frozen(blk):
            break
        n += 1
    return n


def update_prefix(layout: Layout) -> int:
    """Recompute the frozen prefix and hand it to the adapter; return it."""
    p = frozen_prefix(layout)
    layout.adapter.set_frozen_prefix(layout.model, p)
    return p


def freeze_layer(layout: Layout, block_id: int) -> FreezeRecord:
    """Freeze block ``block_id`` (original index) and update the frozen prefix."""
    blk = _block(layout, block_id)
    params = list(blk.parameters())
    rec = FreezeRecord(block_id, tuple(p.requires_grad for p in params))
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    update_prefix(layout)
    return rec


def unfreeze_layer(layout: Layout, rec: FreezeRecord) -> None:
    """Give the block its previous ``requires_grad`` flags back and update the prefix."""
    blk = _block(layout, rec.block_id)
    for p, flag in zip(blk.parameters(), rec.flags):
        p.requires_grad_(flag)
    update_prefix(layout)
