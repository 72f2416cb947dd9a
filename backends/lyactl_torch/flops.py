"""Training FLOPs per token at the current shapes, with frozen blocks.

Convention (see :mod:`lyactl_torch.groups`): a block with ``M`` matmul weights and
training attention FLOPs ``A = 12 T head_dim n_head`` (forward ``A / 3``) costs per token

* trainable:               ``6 M + A``   (forward 2M, input grads 2M, weight grads 2M);
* frozen, above the prefix: ``4 M + A``  (no weight grads; attention has no weights);
* in the frozen prefix:     ``2 M + A/3`` (forward only, run under ``no_grad``).

Matmul weights outside the blocks (the LM head, tied or not) cost ``6 M``; embedding
lookups, norms, biases and elementwise work are not counted. Not modelled: the first
trainable block above a frozen prefix also skips its input gradient.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg

from .freeze import is_frozen
from .groups import ArchitectureAdapter, ModelCost, adapter_for

__all__ = ["flops_per_token", "model_flops_per_token", "training_flops_per_token", "step_flops"]


def flops_per_token(cost: ModelCost, frozen: Sequence[bool] = (), prefix: int = 0) -> float:
    """Training FLOPs/token of ``cost`` with ``frozen[i]`` blocks and a frozen ``prefix``."""
    n = len(cost.block_matmul)
    frozen = tuple(frozen) or (False,) * n
    if len(frozen) != n:
        raise InvalidArgumentError(bad_arg("frozen", f"{n} flags", len(frozen)))
    if not 0 <= prefix <= n or not all(frozen[:prefix]):
        raise InvalidArgumentError(bad_arg("prefix", f"an int in [0, {n}] covering frozen blocks only", prefix))
    total = 6.0 * cost.other_matmul
    for i, (M, A) in enumerate(zip(cost.block_matmul, cost.block_attn)):
        A += cost.other(i)  # non-matmul work: a frozen prefix runs only its forward third
        if i < prefix:
            total += 2.0 * M + A / 3.0
        elif frozen[i]:
            total += 4.0 * M + A
        else:
            total += 6.0 * M + A
    return total


def model_flops_per_token(model: nn.Module, adapter: ArchitectureAdapter | None = None) -> float:
    """Training FLOPs/token of ``model`` as it is now (frozen flags read from the blocks)."""
    adapter = adapter_for(model) if adapter is None else adapter
    blocks = adapter.blocks(model)
    frozen = [is_frozen(b) for b in blocks]
    prefix = next((i for i, f in enumerate(frozen) if not f), len(frozen))
    return flops_per_token(adapter.cost(model), frozen, prefix)


def training_flops_per_token(model: nn.Module, seq_len: int | None = None,
                             adapter: ArchitectureAdapter | None = None) -> float:
    """As :func:`model_flops_per_token`, with the attention term at sequence length
    ``seq_len`` (default: the adapter's, i.e. the config's). Works on a meta-device model."""
    adapter = adapter_for(model) if adapter is None else adapter
    cost = adapter.cost(model)
    if seq_len is not None:
        T = getattr(getattr(model, "config", None), "seq_len", None)
        if not T:
            raise InvalidArgumentError(bad_arg("seq_len", "a model whose config has seq_len", type(model).__name__))
        cost = ModelCost(cost.block_matmul, tuple(a * seq_len / T for a in cost.block_attn), cost.other_matmul,
                         cost.block_other)
    blocks = adapter.blocks(model)
    frozen = [is_frozen(b) for b in blocks]
    prefix = next((i for i, f in enumerate(frozen) if not f), len(frozen))
    return flops_per_token(cost, frozen, prefix)


def step_flops(flops_per_tok: float, batch_size: int, seq_len: int) -> float:
    """Training FLOPs of one optimizer step on ``batch_size x seq_len`` tokens."""
    return float(flops_per_tok) * int(batch_size) * int(seq_len)
