"""Importance of whole blocks and residual channels, measured on the original model before the
first step: the depth and embedding-channel criteria that complete the width criterion of
:mod:`.importance` (a one-shot baseline that may remove layers and channels, as Minitron and
ShortGPT do, not only heads and MLP neurons).

* Layers: ShortGPT's Block Influence (Men et al. 2024), the mean over calibration tokens of
  ``BI_l = 1 - cos(x_l, y_l)`` between the hidden state entering block ``l`` and the one leaving
  it: a block that barely turns the residual stream matters little.
* Residual channels: Minitron's embedding-channel importance, the mean absolute value of each
  channel of the hidden state entering every block, averaged over blocks; a channel group scores
  the mean of its channels.

Heads and MLP blocks keep their activation importance (:func:`.importance.activation_importance`).
Lower means less important (pruned first). The scores of different kinds are on different
scales and must not be ranked against each other: use them within a kind, e.g. with
:class:`lyactl.control.baselines.ReplayController`, which takes a given number of groups of each
kind. Cost: ``n_batches`` forward passes under ``no_grad`` (twice: once here, once for widths).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from lyactl.control.groups import GroupKind
from lyactl.errors import InvalidArgumentError, bad_arg

from .groups import Layout
from .importance import activation_importance

__all__ = ["block_statistics", "depth_width_importance"]


def _hidden(x: object, kwargs: dict | None = None) -> torch.Tensor:
    """The hidden state of a block's input or output: a tensor, the first of a tuple, or (a
    Hugging Face decoder layer called with keywords) ``kwargs["hidden_states"]``."""
    if isinstance(x, (tuple, list)):
        return x[0] if len(x) else kwargs["hidden_states"]
    return x


def block_statistics(layout: Layout, batches: Iterable[torch.Tensor],
                     forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(BI [n_blocks], channel_abs [d_model])``: each current block's Block Influence and the
    residual stream's mean absolute value per channel (module docstring), float64.

    Raises :class:`InvalidArgumentError` when no batch is given or a statistic is non-finite.
    """
    model, blocks = layout.model, layout.adapter.blocks(layout.model)
    forward = forward if forward is not None else (lambda m, x: m(x))
    bi = torch.zeros(len(blocks), dtype=torch.float64)
    chan: list[torch.Tensor] = []
    tokens = [0]

    def hook(i: int) -> Callable:
        def fn(module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            x, y = _hidden(args, kwargs).detach().double(), _hidden(out).detach().double()
            x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
            bi[i] += (1.0 - torch.nn.functional.cosine_similarity(x2, y2, dim=-1)).sum().cpu()
            s = x2.abs().sum(0).cpu()
            if i == 0:
                tokens[0] += x2.shape[0]
                chan.append(s)
            else:
                chan[-1] += s
        return fn

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                forward(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if tokens[0] == 0:
        raise InvalidArgumentError(bad_arg("batches", "at least one calibration batch", "none"))
    BI = (bi / tokens[0]).numpy()
    channel = (torch.stack(chan).sum(0) / (tokens[0] * len(blocks))).numpy()
    if not (np.all(np.isfinite(BI)) and np.all(np.isfinite(channel))):
        raise InvalidArgumentError(bad_arg("block statistics", "finite values", "NaN or inf (model output)"))
    return BI, channel


def depth_width_importance(layout: Layout, batches: Iterable[torch.Tensor],
                           forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> np.ndarray:
    """``[n_groups]``: heads and MLP blocks by activation importance, layers by Block
    Influence, residual channel groups by their channels' mean ``|x|`` (module docstring)."""
    batches = list(batches)
    scores = activation_importance(layout, batches, forward)
    BI, channel = block_statistics(layout, batches, forward)
    pos = {b: i for i, b in enumerate(layout.block_ids)}
    for i, (g, ref) in enumerate(zip(layout.groups, layout.refs)):
        if g.kind is GroupKind.LAYER:
            scores[i] = float(BI[pos[ref.layer]])
        elif g.kind is GroupKind.CHANNEL_BLOCK:
            where = {u: j for j, u in enumerate(layout.live[ref.axis])}
            scores[i] = float(channel[[where[u] for u in ref.units]].mean())
    return scores
