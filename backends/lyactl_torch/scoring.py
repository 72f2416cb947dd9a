"""Batched log-likelihood scoring of (context, continuation) token requests.

For a request with context tokens c and continuation tokens y (|y| = m >= 1) the model sees
``x = (c + y)[-(max_len + 1):][:-1]`` (truncated from the left to ``max_len`` tokens, as
lm-evaluation-harness does) and we return

    logprob  = sum_{k=1..m} log p(y_k | x_{< position of y_k})
    is_greedy = all_k argmax_v p(v | ...) == y_k
    n_tokens = m

Requests are sorted by input length (longest first), right-padded and run one forward per
batch (padding sits after every scored position, so a causal model is unaffected). Only the
``m`` scored positions of each row go through ``log_softmax`` (in float32). One host sync per
batch. ``torch.inference_mode`` throughout; bf16 autocast only on CUDA.

The model is any callable mapping a LongTensor ``[B, T]`` to logits ``[B, T, V]``, or to an
object with ``.logits`` (Hugging Face), or to a tuple whose first element is the logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from lyactl.errors import InvalidArgumentError, ShapeError, UnsupportedModelError, bad_arg

__all__ = ["Request", "Scored", "score_requests", "logits_of", "mc_predictions"]


@dataclass(frozen=True)
class Request:
    """Context and continuation token ids; the continuation must be non-empty."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Scored:
    """Sum of continuation log-probabilities (nats), greedy match, number of scored tokens."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def logits_of(out: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, an object with ``.logits``, or a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise UnsupportedModelError(bad_arg("model output", "logits tensor, .logits or (logits, ...)", type(out).__name__))


def _inputs(req: Request, max_len: int) -> tuple[list[int], int]:
    """The model input row and the number of scored (last) positions."""
    m = len(req.continuation)
    if m == 0:
        raise InvalidArgumentError(bad_arg("continuation", "at least one token", req.continuation))
    if m > max_len:
        raise InvalidArgumentError(bad_arg("continuation length", f"<= max_len={max_len}", m))
    if not req.context:
        raise InvalidArgumentError(bad_arg("context", "at least one token (use EOT/BOS)", req.context))
    whole = list(req.context) + list(req.continuation)
    return whole[-(max_len + 1):][:-1], m


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _score_batch(model: Callable[[torch.Tensor], Any], rows: list[tuple[list[int], int, tuple[int, ...]]],
                 device: torch.device) -> list[Scored]:
    """One forward on a right-padded batch; gather the scored positions of each row."""
    B, T = len(rows), max(len(r[0]) for r in rows)
    M = max(r[1] for r in rows)
    x = torch.zeros((B, T), dtype=torch.long)
    pos = torch.zeros((B, M), dtype=torch.long)
    tgt = torch.zeros((B, M), dtype=torch.long)
    mask = torch.zeros((B, M), dtype=torch.bool)
    for b, (inp, m, cont) in enumerate(rows):
        x[b, : len(inp)] = torch.tensor(inp)
        pos[b, :m] = torch.arange(len(inp) - m, len(inp))
        tgt[b, :m] = torch.tensor(cont)
        mask[b, :m] = True
    x, pos, tgt, mask = (t.to(device, non_blocking=True) for t in (x, pos, tgt, mask))
    with _autocast(device):
        logits = logits_of(model(x))
    if logits.ndim != 3 or logits.shape[:2] != (B, T):
        raise ShapeError(bad_arg("logits", f"shape [{B}, {T}, V]", tuple(logits.shape)))
    sel = logits.gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1])).float()  # [B, M, V]
    logp = torch.log_softmax(sel, dim=-1)
    tok_lp = logp.gather(2, tgt[:, :, None])[:, :, 0]
    greedy = (sel.argmax(dim=-1) == tgt) | ~mask
    sums = torch.where(mask, tok_lp, torch.zeros_like(tok_lp)).sum(dim=1)
    res = torch.stack([sums.double(), greedy.all(dim=1).double()], dim=1).cpu()  # one host sync
    return [Scored(float(res[b, 0]), bool(res[b, 1]), rows[b][1]) for b in range(B)]


def score_requests(
    model: Callable[[torch.Tensor], Any],
    requests: Sequence[Request],
    *,
    max_len: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    max_batch_tokens: int | None = None,
) -> list[Scored]:
    """Score every request (results in the order of ``requests``).

    Parameters
    ----------
    model : callable ``LongTensor[B, T] -> logits[B, T, V]`` (or ``.logits`` / tuple), already
        on ``device`` and in eval mode (this function does not change its mode).
    requests : the requests; each context must hold at least one token (use EOT as BOS).
    max_len : the model's maximum sequence length (left truncation to it).
    batch_size : maximum rows per forward.
    max_batch_tokens : optional cap on ``rows * longest row`` per forward (memory guard).
    """
    if max_len < 1 or batch_size < 1:
        raise InvalidArgumentError(bad_arg("max_len/batch_size", "integers >= 1", (max_len, batch_size)))
    device = torch.device(device)
    prepared = [(*_inputs(r, max_len), r.continuation) for r in requests]
    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
    out: list[Scored | None] = [None] * len(prepared)
    with torch.inference_mode():
        start = 0
        while start < len(order):
            longest = len(prepared[order[start]][0])
            cap = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // longest))
            idx = order[start : start + cap]
            for i, s in zip(idx, _score_batch(model, [prepared[i] for i in idx], device)):
                out[i] = s
            start += cap
    return [s for s in out if s is not None]


def mc_predictions(logprobs: Sequence[float], lengths: Sequence[int]) -> tuple[int, int]:
    """``(argmax logprob, argmax logprob / length)`` with ties to the lowest index (numpy's rule)."""
    if len(logprobs) != len(lengths) or not logprobs or min(lengths) < 1:
        raise InvalidArgumentError(bad_arg("lengths", f"{len(logprobs)} positive lengths", lengths))
    raw = max(range(len(logprobs)), key=lambda k: (logprobs[k], -k))
    norm = max(range(len(logprobs)), key=lambda k: (logprobs[k] / lengths[k], -k))
    return raw, norm
