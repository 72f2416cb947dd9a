"""Measure what removing each group costs, on the model as it is, and prune by it: the torch
side of :mod:`lyactl.control.removal_cost` (``lyactl compress --method measured``).

A group is removed for the measurement by zeroing its parameters in place and restored from
a copy afterwards (no surgery, no optimizer state touched):

* a head or an MLP block: its rows of the input projections and its columns of the output
  projection (every slice of its axis): the head's or neurons' contribution is then exactly
  zero, as after :func:`~.surgery.prune_units`;
* a whole block: every parameter of the block, norms included: a pre-norm residual block
  with zero weights adds nothing (``h + 0``), exactly as after :func:`~.surgery.remove_layer`;
* a residual channel block: its entries in every slice (embedding column, norm gains,
  every projection that reads or writes the channel). Exact for lyactl's GPT (its
  :class:`~lyactl_torch.model.RMSNorm` divides by a fixed reference width); for a norm over
  the current width (the Hugging Face models' RMSNorm or LayerNorm) the zeroed channel still
  counts in the normalisation, so the measurement is of the zeroed model, not the removal.

The loss is the language-model cross-entropy on held-out calibration batches (``X``, ``Y``:
``[m * b, T]``, ``m`` batches of ``b`` sequences), one forward over all of them per group
(``no_grad``, bf16 autocast on CUDA). Cost: ``n_groups + 1`` forwards of ``m b T`` tokens
and one host sync for all of them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lyactl.control.groups import PRUNED, Event
from lyactl.control.removal_cost import RemovalCosts, measured_event, removal_costs
from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

from .groups import Layout, ParamSlice

__all__ = ["zero_group", "restore", "batch_losses", "ablation_losses", "measured_round", "MeasuredRounds"]

Saved = list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor]]


def _index(s: ParamSlice, positions: Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    """Indices along ``s.dim`` of the units at ``positions`` (``n`` live units on the axis;
    the dimension is ``segments x n x width``)."""
    W = s.width
    idx = [seg * n * W + p * W + w for seg in range(s.segments) for p in positions for w in range(W)]
    return torch.tensor(idx, dtype=torch.long, device=device)


@torch.no_grad()
def zero_group(layout: Layout, i: int) -> Saved:
    """Zero group ``i``'s parameters in place (module docstring); returns what
    :func:`restore` needs. A group already pruned raises :class:`InvalidArgumentError`."""
    if layout.is_pruned(i):
        raise InvalidArgumentError(bad_arg("group", "a live group", layout.groups[i].name))
    ref, saved = layout.refs[i], []
    if ref.axis is None:
        block = layout.adapter.blocks(layout.model)[layout.block_ids.index(ref.layer)]
        for p in block.parameters():
            idx = torch.arange(p.shape[0], device=p.device)
            saved.append((p, 0, idx, p.detach().clone()))
            p.zero_()
        return saved
    axis = layout.axes[ref.axis]
    live = layout.live[ref.axis]
    where = {u: j for j, u in enumerate(live)}
    positions = [where[u] for u in ref.units]
    for s in layout.live_slices(axis):
        idx = _index(s, positions, len(live), s.param.device)
        saved.append((s.param, s.dim, idx, s.param.index_select(s.dim, idx).clone()))
        s.param.index_fill_(s.dim, idx, 0.0)
    return saved


@torch.no_grad()
def restore(saved: Saved) -> None:
    """Undo :func:`zero_group` (in reverse order: a parameter in two slices comes back whole)."""
    for p, dim, idx, values in reversed(saved):
        p.index_copy_(dim, idx, values)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block, its training flag restored after (also on error)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@torch.no_grad()
def batch_losses(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, m: int,
                 logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``[m]`` mean cross-entropy per calibration batch (rows of ``X`` in ``m`` equal batches),
    on the device (no host sync)."""
    if X.shape != Y.shape or X.dim() != 2 or X.shape[0] % m:
        raise ShapeError(bad_arg("X/Y", f"two equal [m * b, T] tensors with m = {m}", (tuple(X.shape), tuple(Y.shape))))
    with torch.autocast(X.device.type, torch.bfloat16, enabled=X.device.type == "cuda"):
        z = logits(model, X)
    ce = F.cross_entropy(z.float().reshape(-1, z.shape[-1]), Y.reshape(-1), reduction="none")
    return ce.reshape(m, -1).mean(dim=1)


def ablation_losses(layout: Layout, X: torch.Tensor, Y: torch.Tensor, m: int,
                    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(dL [m, n_groups], base [m])``: each live group's paired loss increase per batch
    (NaN for groups already pruned: never chosen); one host sync. ``progress``: a tqdm bar
    over the groups."""
    from tqdm.auto import tqdm

    model, pruned = layout.model, layout.pruned_mask()
    with _evaluating(model):
        base = batch_losses(model, X, Y, m, logits)
        rows = []
        for i in tqdm(range(len(layout.groups)), desc="measure removals", disable=not progress, leave=False):
            if pruned[i]:
                rows.append(torch.full_like(base, float("nan")))
                continue
            saved = zero_group(layout, i)
            try:
                rows.append(batch_losses(model, X, Y, m, logits) - base)
            finally:
                restore(saved)
    dL = torch.stack(rows, dim=1).double().cpu().numpy()
    return dL, base.double().cpu().numpy()


def measured_round(backend: Any, constraints: Sequence[Any], X: torch.Tensor, Y: torch.Tensor, m: int,
                   target: float, *, step: int, eps: float, event_id: int,
                   logits: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                   progress: bool = False) -> tuple[Event, dict[str, Any]]:
    """Measure every live group (:func:`ablation_losses`), prune to ``target`` of the FLOPs the
    model has now by the lowest certified cost per FLOP
    (:func:`lyactl.control.removal_cost.measured_event`), apply it on ``backend``, and measure
    the joint loss increase on the same batches. Returns the event and a record: the sums of
    the chosen groups' means and bounds against ``joint`` (additivity), counts, seconds."""
    if not (0.0 < target <= 1.0):
        raise InvalidArgumentError(bad_arg("target", "a number in (0, 1]", target))
    t0 = time.perf_counter()
    layout = backend.layout
    dL, base = ablation_losses(layout, X, Y, m, logits, progress)
    costs: RemovalCosts = removal_costs(dL, float(base.mean()))
    status = np.where(np.array(layout.pruned_mask()), PRUNED, 0).astype(np.int8)
    event = measured_event(backend.groups(), constraints, costs, backend.flops_model, float(target), step=step,
                           eps=eps, event_id=event_id, status=status)
    measured_s = time.perf_counter() - t0
    if event.decisions:
        backend.apply(event)
    with _evaluating(layout.model):
        after = batch_losses(layout.model, X, Y, m, logits).double().cpu().numpy()
    rec = {"step": step, "event_id": event_id, "forwards": int(np.isfinite(dL[0]).sum()) + 2, "target": float(target),
           "taken": event.meta["taken"], "certified": event.meta["certified"], "tol": event.meta["tol"], "sum_mean": event.meta["sum_mean"],
           "sum_upper": event.meta["sum_upper"], "joint": float((after - base).mean()),
           "base_loss": float(base.mean()), "flops_ratio": event.flops_after / event.flops_before,
           "measure_s": measured_s, "seconds": time.perf_counter() - t0}
    return event, rec


class MeasuredRounds:
    """Pruning rounds at given steps: call it before every training step; at ``steps[k]`` it
    runs :func:`measured_round` to ``target^((k+1)/R)`` of the original size ``size0``
    (``R = len(steps)``; ``size()`` the training FLOPs/token now, in the same units) and
    returns True when the model changed. ``events`` and ``records`` collect what the rounds
    did; a record's ``flops`` prices its forwards (one per live group, the base and the joint
    check) at the forward FLOPs/token before the cut."""

    def __init__(self, backend: Any, constraints: Sequence[Any], X: torch.Tensor, Y: torch.Tensor, m: int,
                 steps: Sequence[int], target: float, eps: float, size: Callable[[], float], size0: float,
                 logits: Callable[[nn.Module, torch.Tensor], torch.Tensor], progress: bool = False) -> None:
        if len(set(steps)) != len(steps) or not steps:
            raise InvalidArgumentError(bad_arg("steps", "distinct round steps, at least one", list(steps)))
        self.backend, self.constraints, self.X, self.Y, self.m = backend, tuple(constraints), X, Y, m
        self.at = {int(s): k for k, s in enumerate(steps)}
        self.target, self.eps, self.size, self.size0, self.logits = target, eps, size, size0, logits
        self.progress = progress
        self.events: list[Event] = []
        self.records: list[dict[str, Any]] = []

    def __call__(self, step: int) -> bool:
        k = self.at.get(step)
        if k is None:
            return False
        size = self.size()
        rel = min(1.0, self.target ** ((k + 1) / len(self.at)) * self.size0 / size)
        forward_fpt = size / 3.0  # training FLOPs/token are 3x the forward's
        event, rec = measured_round(self.backend, self.constraints, self.X, self.Y, self.m, rel, step=step,
                                    eps=self.eps, event_id=k, logits=self.logits, progress=self.progress)
        rec["flops"] = rec["forwards"] * self.X.numel() * forward_fpt  # measured before the cut: an upper bound
        self.events.append(event)
        self.records.append(rec)
        return bool(event.decisions)
