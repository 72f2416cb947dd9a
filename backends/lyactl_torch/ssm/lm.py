"""An SSM language model (optionally hybrid with attention) and its honest FLOPs count.

Architecture (pre-norm residual blocks; ``H = d_model``)::

    h = wte[idx]                                              [B, T, H]
    for each block:   h = h + SSM(norm(h));   h = h + MLP(norm(h))
    (every ``attn_every``-th block also: h = h + Attn(norm(h)); h = h + MLP(norm(h)))
    logits = norm(h) @ wte^T                                  (tied head)

The SSM layer is an :class:`~lyactl_torch.ssm.lru.LRU` (``kind="lru"``) or an
:class:`~lyactl_torch.ssm.s4d.S4DReal` (``kind="s4d"``) or a gated recall mixer around an LRU
(:class:`~lyactl_torch.ssm.recall.RecallLRU`, ``kind="recall"``, heads ``n_head`` x ``d_head``:
the recall task needs its multiplicative gates). No positional embedding: the
recurrence orders the sequence (attention blocks in a hybrid see the order through the SSM
blocks below them). The MLP is ``W2 gelu(W1 x)``.

:func:`flops_per_token` counts the multiply-adds the implementation executes (2 flops each),
per component, so the state's share of the training cost is reported, not assumed: the SSM
projections (``8 N H`` for a complex LRU, ``4 N H`` real) plus the chunked scan
(``(8 L + 16) N`` complex, ``(2 L + 4) N`` real; :mod:`.scan`), against the MLPs, attention and
the head. Training FLOPs are 3x forward (backward = 2x forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl_torch.ssm.lru import LRU, LRUConfig
from lyactl_torch.ssm.s4d import S4DReal, S4DRealConfig
from lyactl_torch.ssm.recall import RecallConfig, RecallLRU

__all__ = ["SSMLMConfig", "SSMLM", "SSMBlock", "default_r_min", "flops_per_token", "state_share"]


@dataclass(frozen=True)
class SSMLMConfig:
    """Shapes of an :class:`SSMLM` (``n_state`` is the starting state size of every layer);
    ``scan_layout``: the LRU scan's memory layout (:class:`~lyactl_torch.ssm.lru.LRUConfig`,
    the same outputs either way); ``r_min`` None: 0.99 for ``kind="recall"`` (its memory must
    last the sequence; at 0.9 MQAR stayed near chance), else 0.9."""

    vocab_size: int
    d_model: int
    n_layer: int
    n_state: int
    mlp_hidden: int | None = None
    kind: Literal["lru", "s4d", "recall"] = "lru"
    attn_every: int = 0
    n_head: int = 4
    d_head: int = 8
    chunk: int = 64
    r_min: float | None = None
    r_max: float = 0.999
    scan_layout: Literal["time", "state"] = "state"

    def __post_init__(self) -> None:
        if self.r_min is None:
            object.__setattr__(self, "r_min", default_r_min(self.kind))

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 4 * self.d_model


def default_r_min(kind: str) -> float:
    """The smallest initial ``|lam|`` of a layer kind: 0.99 for the recall memory (it must last
    the sequence; at 0.9 MQAR stayed near chance), 0.9 otherwise."""
    return 0.99 if kind == "recall" else 0.9


class _MLP(nn.Module):
    def __init__(self, H: int, M: int) -> None:
        super().__init__()
        self.fc, self.proj = nn.Linear(H, M, bias=False), nn.Linear(M, H, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class _Attention(nn.Module):
    """Causal multi-head self-attention (fused SDPA)."""

    def __init__(self, H: int, n_head: int) -> None:
        super().__init__()
        if H % n_head:
            raise InvalidArgumentError(bad_arg("n_head", f"a divisor of d_model={H}", n_head))
        self.n_head = n_head
        self.qkv, self.proj = nn.Linear(H, 3 * H, bias=False), nn.Linear(H, H, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, H // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, H))


class SSMBlock(nn.Module):
    """``h + mixer(norm(h))`` then ``+ MLP(norm(.))``; ``mixer`` is an SSM layer or attention."""

    def __init__(self, mixer: nn.Module, H: int, M: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(H), nn.RMSNorm(H)
        self.mixer, self.mlp = mixer, _MLP(H, M)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.mixer(self.norm1(h))
        return h + self.mlp(self.norm2(h))


def _ssm(cfg: SSMLMConfig, g: torch.Generator | None) -> nn.Module:
    if cfg.kind == "lru":
        return LRU(LRUConfig(cfg.d_model, cfg.n_state, cfg.r_min, cfg.r_max, chunk=cfg.chunk, layout=cfg.scan_layout), g)
    if cfg.kind == "s4d":
        return S4DReal(S4DRealConfig(cfg.d_model, cfg.n_state, r_max=cfg.r_max, chunk=cfg.chunk, layout=cfg.scan_layout), g)
    if cfg.kind == "recall":
        return RecallLRU(RecallConfig(cfg.d_model, cfg.n_head, cfg.d_head, cfg.n_state, cfg.r_min, cfg.r_max,
                                      chunk=cfg.chunk, layout=cfg.scan_layout), g)
    raise InvalidArgumentError(bad_arg("kind", "'lru', 's4d' or 'recall'", cfg.kind))


class SSMLM(nn.Module):
    """The language model; ``forward(idx [B, T] int64) -> logits [B, T, V]``."""

    def __init__(self, cfg: SSMLMConfig, seed: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        H, M = cfg.d_model, cfg.hidden
        self.wte = nn.Embedding(cfg.vocab_size, H)
        nn.init.normal_(self.wte.weight, std=0.02, generator=g)
        blocks = []
        for i in range(cfg.n_layer):
            blocks.append(SSMBlock(_ssm(cfg, g), H, M))
            if cfg.attn_every and (i + 1) % cfg.attn_every == 0:
                blocks.append(SSMBlock(_Attention(H, cfg.n_head), H, M))
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = nn.RMSNorm(H)
        for name, p in self.named_parameters():
            if name.endswith(("fc.weight", "qkv.weight")):
                nn.init.normal_(p, std=0.02, generator=g)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / (2 * cfg.n_layer) ** 0.5, generator=g)

    def ssm_layers(self) -> list[nn.Module]:
        """The SSM layers, bottom to top (a :class:`~.recall.RecallLRU` mixer's inner LRU)."""
        return [b.mixer.lru if isinstance(b.mixer, RecallLRU) else b.mixer for b in self.blocks
                if isinstance(b.mixer, (LRU, S4DReal, RecallLRU))]

    def states(self) -> list[int]:
        """The current state size of every SSM layer."""
        return [m.n_state for m in self.ssm_layers()]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.wte(idx)
        for b in self.blocks:
            h = b(h)
        return self.norm_f(h) @ self.wte.weight.to(h.dtype).T


def flops_per_token(model: SSMLM, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token by component, and ``"train"`` = 3 x their sum.

    ``ssm_proj``: ``2 * (2N H + 2N H)`` complex (LRU), ``2 * 2 N H`` real (S4D);
    ``ssm_scan``: ``(8L + 16) N`` complex, ``(2L + 4) N`` real, ``L = min(chunk, seq_len)``
    (the block-Toeplitz product of :mod:`.scan`: ``2 (2L)^2`` flops per chunk and state spread
    over ``L`` steps, plus the carry); ``mlp`` ``4 H M`` per block; ``attn`` ``8 H^2 + 4 T H``
    (causal: half of the ``T x T`` scores counted as executed by the fused kernel, i.e. all);
    ``head`` ``2 H V``; ``gates`` (a recall mixer, :mod:`.recall`): ``8 H n_head d + 4 n_head d^2``,
    its inner LRU counted in ``ssm_proj`` / ``ssm_scan`` with its width ``H' = n_head d^2`` in
    place of ``H``. Norms, gelu, residuals and D are left out (O(H), below 1 %).
    """
    cfg = model.config
    H, M, V = cfg.d_model, cfg.hidden, cfg.vocab_size
    L = min(cfg.chunk, seq_len)
    out = {"ssm_proj": 0.0, "ssm_scan": 0.0, "mlp": 0.0, "attn": 0.0, "gates": 0.0, "head": 2.0 * H * V}
    for b in model.blocks:
        out["mlp"] += 4.0 * H * M
        mixer = b.mixer
        if isinstance(mixer, RecallLRU):
            rc = mixer.cfg
            out["gates"] += 8.0 * H * rc.n_head * rc.d_head + 4.0 * rc.d_memory
            mixer = mixer.lru  # counted as an LRU of width H'
        if isinstance(mixer, LRU):
            N = mixer.n_state
            out["ssm_proj"] += 8.0 * N * mixer.cfg.d_model
            out["ssm_scan"] += (8.0 * L + 16.0) * N
        elif isinstance(mixer, S4DReal):
            N = mixer.n_state
            out["ssm_proj"] += 4.0 * N * H
            out["ssm_scan"] += (2.0 * L + 4.0) * N
        else:
            out["attn"] += 8.0 * H * H + 4.0 * seq_len * H
    out["forward"] = sum(out.values())
    out["train"] = 3.0 * out["forward"]
    return out


def state_share(model: SSMLM, seq_len: int) -> float:
    """The fraction of the training FLOPs spent on the state (SSM projections and scan)."""
    f = flops_per_token(model, seq_len)
    return (f["ssm_proj"] + f["ssm_scan"]) / f["forward"]
