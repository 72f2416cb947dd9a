"""The project's reference GPT: pre-norm transformer with per-block widths.

A nanoGPT-style decoder, written so that structural surgery (removing attention heads,
MLP neurons, whole blocks and residual-stream channels) is *exact*: the pruned model
computes the same function as the original model with those units set to zero.

The one non-standard piece is :class:`RMSNorm`, whose mean square is taken over a FIXED
reference width ``d_ref`` (the original ``d_model``) instead of the current width::

    y = x * rsqrt(sum_c x_c^2 / d_ref + eps) * weight

If residual channels whose values are identically zero are removed, ``sum_c x_c^2`` is
unchanged and ``d_ref`` is unchanged, so every remaining output is unchanged. A standard
RMSNorm (mean over the *current* width) or a LayerNorm (which also subtracts the mean)
would change the scale of every channel when one is removed. With ``d_ref = d_model`` the
unpruned model is a standard RMSNorm model.

Per-block widths may differ after pruning: each :class:`Attention` stores ``n_head`` and
``n_kv_head``, each :class:`MLP` its ``hidden``; :meth:`Attention.refresh` and
:meth:`MLP.refresh` re-derive them from the weight shapes, which are the truth.

Shapes follow PyTorch: ``idx`` is ``[B, T]`` (int64), logits ``[B, T, V]``.
Everything is compile-friendly: no data-dependent Python control flow in ``forward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["GPTConfig", "BlockShape", "RMSNorm", "Attention", "MLP", "Block", "GPT"]


@dataclass(frozen=True)
class GPTConfig:
    """Configuration of the reference GPT (the *original*, unpruned shapes).

    ``n_kv_head`` is the number of key/value heads (grouped-query attention: each KV head
    serves ``n_head // n_kv_head`` query heads); ``None`` means ``n_head`` (plain MHA).
    ``mlp_hidden`` ``None`` means ``4 * d_model``. Positions are learned and absolute.
    """

    vocab_size: int
    seq_len: int
    d_model: int
    n_layer: int
    n_head: int
    head_dim: int = 64
    mlp_hidden: int | None = None
    n_kv_head: int | None = None
    bias: bool = False
    tie_embeddings: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "d_model", "n_layer", "n_head", "head_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InvalidArgumentError(bad_arg(f"GPTConfig.{name}", "an int >= 1", value))
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise InvalidArgumentError(bad_arg("GPTConfig.mlp_hidden", "an int >= 1 or None", self.mlp_hidden))
        kv = self.kv_heads
        if kv < 1 or self.n_head % kv:
            raise InvalidArgumentError(
                bad_arg("GPTConfig.n_kv_head", f"a divisor of n_head={self.n_head}", self.n_kv_head)
            )
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise InvalidArgumentError(bad_arg("GPTConfig.norm_eps", "a finite float > 0", self.norm_eps))

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        return 4 * self.d_model if self.mlp_hidden is None else self.mlp_hidden


@dataclass(frozen=True)
class BlockShape:
    """Widths of one block: query heads, key/value heads, MLP hidden neurons."""

    n_head: int
    n_kv_head: int
    mlp_hidden: int


class RMSNorm(nn.Module):
    """RMS normalisation over a fixed reference width (see the module docstring).

    ``y = x * rsqrt(sum(x^2, -1) / d_ref + eps) * weight``; computed in float32.
    """

    def __init__(self, dim: int, d_ref: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.d_ref = int(d_ref)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) / self.d_ref + self.eps)
        return (xf * r).to(x.dtype) * self.weight.to(x.dtype)


class Attention(nn.Module):
    """Causal self-attention with separate q, k, v, o projections and optional GQA.

    Query head ``i`` uses key/value head ``i // (n_head // n_kv_head)`` (the
    ``repeat_interleave`` layout of Llama), so the query rows of KV group ``g`` are the
    contiguous range ``[g * rep * head_dim, (g + 1) * rep * head_dim)``.
    """

    def __init__(self, d: int, n_head: int, n_kv_head: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q = nn.Linear(d, n_head * head_dim, bias=bias)
        self.k = nn.Linear(d, n_kv_head * head_dim, bias=bias)
        self.v = nn.Linear(d, n_kv_head * head_dim, bias=bias)
        self.o = nn.Linear(n_head * head_dim, d, bias=bias)
        self.n_head = n_head
        self.n_kv_head = n_kv_head

    def refresh(self) -> None:
        """Re-derive ``n_head`` and ``n_kv_head`` from the weight shapes."""
        self.n_head = self.q.weight.shape[0] // self.head_dim
        self.n_kv_head = self.k.weight.shape[0] // self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        hd = self.head_dim
        q = self.q(x).view(B, T, self.n_head, hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.n_kv_head, hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.n_kv_head, hd).transpose(1, 2)
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_head * hd))


class MLP(nn.Module):
    """``proj(gelu(fc(x)))`` with ``hidden`` neurons."""

    def __init__(self, d: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(d, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d, bias=bias)
        self.hidden = hidden

    def refresh(self) -> None:
        """Re-derive ``hidden`` from the weight shape."""
        self.hidden = self.fc.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: GPTConfig, d: int, shape: BlockShape) -> None:
        super().__init__()
        self.ln1 = RMSNorm(d, cfg.d_model, cfg.norm_eps)
        self.attn = Attention(d, shape.n_head, shape.n_kv_head, cfg.head_dim, cfg.bias)
        self.ln2 = RMSNorm(d, cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(d, shape.mlp_hidden, cfg.bias)

    def shape(self) -> BlockShape:
        return BlockShape(self.attn.n_head, self.attn.n_kv_head, self.mlp.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """The reference GPT.

    Parameters
    ----------
    config : GPTConfig
        The original shapes (``d_model`` is also the RMSNorm reference width).
    shapes : sequence of BlockShape, optional
        Per-block widths of a pruned model (default: the config's, ``n_layer`` blocks).
    d_live : int, optional
        Current residual width (default ``config.d_model``).

    Attributes
    ----------
    frozen_prefix : int
        The first ``frozen_prefix`` blocks run under ``torch.no_grad()``: no autograd graph
        is built for them, so their backward (weight *and* input gradients) is skipped.
        Consequence: nothing below the prefix (``wpe``, the input use of ``wte``) receives
        a gradient through the blocks while the prefix is frozen.
    """

    def __init__(self, config: GPTConfig, shapes: list[BlockShape] | None = None, d_live: int | None = None) -> None:
        super().__init__()
        cfg = config
        d = cfg.d_model if d_live is None else int(d_live)
        if shapes is None:
            shapes = [BlockShape(cfg.n_head, cfg.kv_heads, cfg.hidden)] * cfg.n_layer
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.wpe = nn.Embedding(cfg.seq_len, d)
        self.blocks = nn.ModuleList([Block(cfg, d, s) for s in shapes])
        self.ln_f = RMSNorm(d, cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.frozen_prefix = 0
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual writers scaled by 1/sqrt(2 n_layer)."""
        std_proj = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = std_proj if name.endswith(("attn.o", "mlp.proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @property
    def d_live(self) -> int:
        """Current residual-stream width."""
        return self.wte.weight.shape[1]

    def shapes(self) -> list[BlockShape]:
        """Current per-block widths."""
        return [blk.shape() for blk in self.blocks]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return logits ``[B, T, V]``, or ``(logits, loss)`` when ``targets`` is given."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for i, blk in enumerate(self.blocks):
            if i < self.frozen_prefix:
                with torch.no_grad():
                    x = blk(x)
            else:
                x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss
