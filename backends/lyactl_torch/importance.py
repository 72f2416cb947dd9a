"""Activation-based importance of heads and MLP neuron blocks, measured on the original model
before the first step (the width criterion of Minitron, Muralidharan et al. 2024).

For every block, forward pre-hooks on the output projections read

* heads: the attention output before ``o_proj`` (``o``, ``c_proj``), ``[B, T, n_head * hd]``,
  viewed as ``[B, T, n_units, rep * hd]`` (one unit = one KV head with its ``rep`` query
  heads, the unit the adapters cut);
* MLP neurons: the input of the down projection (``proj``, ``down_proj``, ``c_proj``),
  ``[B, T, hidden]``.

A unit's importance is its mean absolute activation over calibration tokens,

    I_u = (1 / (N d_u)) sum_{n, c in u} |a_{n c}|,

and a group's (``block`` units, or one KV head) is the mean of its units' ``I_u``. Lower
means less important (pruned first), the convention of :data:`lyactl.control.baselines.ScoreRule`.
Layers and residual channels are not scored (``inf``: never chosen): Minitron ranks depth
separately. Cost: ``n_batches`` forward passes under ``no_grad``.

:func:`activation_rule` turns the scores into a ScoreRule for
:class:`lyactl.control.baselines.ReplayController`; :func:`oneshot_event` prunes to a FLOPs
target in one event (the one-shot importance baseline: prune at step 0, then train).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from lyactl.control.baselines import ScoreRule
from lyactl.control.groups import PRUNED, Action, Certificate, Constraint, Decision, Event, Group, GroupKind, GroupStats
from lyactl.control.removal_cost import cheapest_to_target
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict

from .groups import Layout

__all__ = ["output_projections", "activation_importance", "activation_rule", "oneshot_event"]

_ATTN_OUT = (("attn", "o"), ("self_attn", "o_proj"), ("attn", "c_proj"))
_MLP_OUT = (("mlp", "proj"), ("mlp", "down_proj"), ("mlp", "c_proj"))


def _find(blk: nn.Module, paths: Sequence[tuple[str, str]], what: str) -> nn.Module:
    for outer, inner in paths:
        mod = getattr(getattr(blk, outer, None), inner, None)
        if isinstance(mod, nn.Module):
            return mod
    raise InvalidArgumentError(bad_arg("model block", f"a block with an {what} projection "
                                       f"({', '.join('.'.join(p) for p in paths)})", type(blk).__name__))


def output_projections(layout: Layout) -> dict[str, nn.Module]:
    """Axis name -> the module whose INPUT holds that axis' units (head axes: the attention
    output projection; MLP axes: the down projection)."""
    blocks = layout.adapter.blocks(layout.model)
    pos = {b: i for i, b in enumerate(layout.block_ids)}
    out = {}
    for name, axis in layout.axes.items():
        if axis.kind is GroupKind.HEAD:
            out[name] = _find(blocks[pos[axis.layer]], _ATTN_OUT, "attention output")
        elif axis.kind is GroupKind.MLP_BLOCK:
            out[name] = _find(blocks[pos[axis.layer]], _MLP_OUT, "MLP down")
    return out


def _unit_hook(sums: dict[str, torch.Tensor], counts: dict[str, int], name: str, n_units: int) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        a = args[0].detach().float()
        a = a.reshape(-1, n_units, a.shape[-1] // n_units).abs()
        s = a.sum(dim=(0, 2))
        sums[name] = s if name not in sums else sums[name] + s
        counts[name] = counts.get(name, 0) + a.shape[0] * a.shape[2]
    return hook


def activation_importance(layout: Layout, batches: Iterable[torch.Tensor],
                          forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> np.ndarray:
    """Mean absolute activation ``I_g`` of every group of ``layout`` (see the module
    docstring), ``[n_groups]`` float64; ``inf`` for layers and residual channels.

    ``batches``: token ids ``[B, T]`` (a few calibration batches on the model's device);
    ``forward(model, x)`` runs the model (default ``model(x)``). Raises
    :class:`InvalidArgumentError` when no batch is given or an activation is non-finite
    (no ranking is made from NaN).
    """
    model = layout.model
    forward = forward if forward is not None else (lambda m, x: m(x))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = [mod.register_forward_pre_hook(_unit_hook(sums, counts, name, layout.axes[name].size))
               for name, mod in output_projections(layout).items()]
    was_training, n = model.training, 0
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                forward(model, x)
                n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise InvalidArgumentError(bad_arg("batches", "at least one calibration batch", "none"))
    per_unit = {name: (sums[name] / counts[name]).cpu().numpy().astype(np.float64) for name in sums}
    return _group_scores(layout, per_unit)


def _group_scores(layout: Layout, per_unit: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the units' scores per group; units are looked up by their current position."""
    scores = np.full(len(layout.groups), np.inf)
    for i, ref in enumerate(layout.refs):
        if ref.axis not in per_unit:
            continue
        position = {u: j for j, u in enumerate(layout.live[ref.axis])}
        values = per_unit[ref.axis][[position[u] for u in ref.units]]
        if not np.all(np.isfinite(values)):
            raise InvalidArgumentError(bad_arg(f"activations of {layout.groups[i].name}", "finite values",
                                               "NaN or inf (model output)"))
        scores[i] = float(values.mean())
    return scores


def activation_rule(scores: np.ndarray) -> ScoreRule:
    """A :data:`~lyactl.control.baselines.ScoreRule` returning the fixed ``scores`` (measured
    once, before training, by :func:`activation_importance`)."""
    fixed = np.asarray(scores, dtype=np.float64).copy()

    def rule(stats: GroupStats, groups: Sequence[Group]) -> np.ndarray:
        if len(groups) != fixed.size:
            raise InvalidArgumentError(bad_arg("groups", f"{fixed.size} groups (as scored)", len(groups)))
        return fixed

    rule.__name__ = "activation"
    return rule


def oneshot_event(groups: Sequence[Group], constraints: Sequence[Constraint], scores: np.ndarray,
                  flops_model: Callable[[np.ndarray], float], target: float, step: int = 0,
                  rule_name: str = "activation") -> Event:
    """One event pruning the lowest-scored groups until ``flops_model(status) <= target *
    flops_model(dense)``, honouring ``constraints`` (min_keep, together, uniform): the
    smallest number that meets the target, or all the constraints allow
    (:func:`lyactl.control.removal_cost.cheapest_to_target`). Decisions carry an UNKNOWN
    certificate naming the rule: a baseline is not certified."""
    if not (isinstance(target, float) and 0.0 < target < 1.0):
        raise InvalidArgumentError(bad_arg("target", "a float in (0, 1)", target))
    scores = np.asarray(scores, dtype=np.float64)
    chosen = cheapest_to_target(groups, constraints, scores, flops_model, target)
    dense = flops_model(np.zeros(len(groups), np.int8))
    decisions = tuple(Decision(step, groups[i].name, i, Action.PRUNE, (Certificate(
        monitor=f"baseline:{rule_name}", verdict=Verdict.UNKNOWN, window=(step, step),
        numbers={"score": float(scores[i])}, condition="none: selected by a baseline rule, not certified",
        margin=math.nan),)) for i, _ in chosen)
    return Event(0, step, decisions, dense, flops_model(_status_of(len(groups), chosen)), meta={"rule": rule_name})


def _status_of(n: int, chosen: Sequence[tuple[int, int]]) -> np.ndarray:
    status = np.zeros(n, np.int8)
    status[[i for i, _ in chosen]] = PRUNED
    return status
