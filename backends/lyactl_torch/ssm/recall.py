"""A recall mixer around an LRU: multiplicative gates outside, a linear time-invariant core inside.

Recall of a key seen many steps ago needs an input-dependent interaction (Zoology: gating-free
recurrences such as the plain LRU stay near chance on multi-query associative recall). H3 gets
it with multiplicative gates around linear time-invariant SSMs; this mixer does the same with
one MIMO :class:`~lyactl_torch.ssm.lru.LRU` as the memory, so the memory stays an LTI system and
balanced truncation keeps its certificate. Per head ``h`` (``n_head`` heads of size ``d``)::

    q_t, k_t, v_t = W_q u_t, W_k u_t, W_v u_t                       [d] per head
    z_t  = vec(k_{t-1} v_t^T)                                      [d^2] per head (k shifted one step)
    M_t  = LRU(z)_t  reshaped to [d, d] per head                   (x[t] = lam x[t-1] + gamma B z_t,
                                                                    M = Re(C x) + D z)
    y_t  = W_o concat_h(q_t^T M_t)

With ``C gamma B = I`` and ``lam = 1`` the memory is ``M_t = sum_{j <= t} k_{j-1} v_j^T``: linear
attention over (key, next value) pairs. The LRU has ``H' = n_head d^2`` inputs and outputs and
``N`` complex states shared by all heads, so ``N`` caps how many associations survive (the
state is what recall needs, and what truncation removes).

What the certificate covers: truncating the inner LRU changes its map ``z -> M`` by at most the
bound in the H-infinity norm (energy gain over all input sequences); the gates are outside it,
so the mixer's output changes by at most ``||W_o|| max_{t,h} ||q_{t,h}|| bound ||z||`` (l2 over
time) on a given input: a data-dependent factor, not a uniform guarantee about the mixer.

Cost per token: the LRU's ``8 N H'`` (its projections dominate: ``H'`` is ``n_head d^2``), plus
``8 H n_head d`` for the four dense maps and ``4 n_head d^2`` for the outer and inner products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl_torch.ssm.lru import LRU, LRUConfig

__all__ = ["RecallConfig", "RecallLRU"]


@dataclass(frozen=True)
class RecallConfig:
    """``d_model`` in and out, ``n_head`` heads of ``d_head``, an LRU of ``n_state`` complex states."""

    d_model: int
    n_head: int
    d_head: int
    n_state: int
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 0.01
    chunk: int = 64
    layout: str = "state"

    def __post_init__(self) -> None:
        for name in ("d_model", "n_head", "d_head", "n_state"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(bad_arg(name, "a positive integer", getattr(self, name)))

    @property
    def d_memory(self) -> int:
        """``H' = n_head d_head^2``: the inner LRU's input and output width."""
        return self.n_head * self.d_head**2


def _memory_init(lru: LRU, generator: torch.Generator | None) -> None:
    """Start the memory as decaying linear attention on a random ``2N``-dimensional subspace.

    With ``Q = [Q1 Q2]`` orthonormal columns (``H' x N`` each):
    ``C = Q1 - i Q2`` with ``gamma B = Q1^T + i Q2^T`` (so ``Re(C x) = Q1 x_re + Q2 x_im``) and
    ``D = 0``, the map at ``lam = 1`` is
    ``M_t = (Q1 Q1^T + Q2 Q2^T) sum_j z_j``: the projection of linear attention's memory (all of
    it when ``2N >= H'``). The LRU's own random ``B, C`` make a random mix of the pairs instead,
    and the model stayed at chance on recall from it (a CPU trial, 800 steps); small phases
    (``max_phase``) keep stored keys from rotating. ``B`` absorbs ``1 / gamma``: with the LRU's
    input normalisation left in, the memory started ``gamma`` (0.05 to 0.4) times too small and
    learned recall far more slowly (0.05 accuracy after 400 steps at ``r_min = 0.99``).
    """
    H, N = lru.B_re.shape[1], lru.n_state
    k = min(2 * N, H)
    G = torch.randn(H, k, generator=generator)
    Q = torch.linalg.qr(G).Q  # [H, k] orthonormal columns
    extra = torch.randn(H, 2 * N - k, generator=generator) * (1e-2 / H**0.5)
    Qb, Qc = torch.cat([Q, extra], dim=1), torch.cat([Q, torch.zeros_like(extra)], dim=1)
    with torch.no_grad():  # states beyond H' start silent in C, with a small random B (so C learns)
        g = torch.exp(lru.gamma_log).unsqueeze(-1)  # [N, 1]: gamma B = Q^T, whatever gamma is
        lru.B_re.copy_(Qb[:, :N].T / g)
        lru.B_im.copy_(Qb[:, N:].T / g)
        lru.C_re.copy_(Qc[:, :N])
        lru.C_im.copy_(-Qc[:, N:])
        lru.D.zero_()  # no direct path: the current pair is recalled through the state only


class RecallLRU(nn.Module):
    """``forward(u [B, T, H]) -> y [B, T, H]`` (module docstring); ``lru`` is the truncatable core."""

    def __init__(self, cfg: RecallConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        H, hd = cfg.d_model, cfg.n_head * cfg.d_head
        self.wqkv = nn.Linear(H, 3 * hd, bias=False)
        self.out = nn.Linear(hd, H, bias=False)
        nn.init.normal_(self.wqkv.weight, std=H**-0.5, generator=generator)
        nn.init.normal_(self.out.weight, std=hd**-0.5, generator=generator)
        self.lru = LRU(LRUConfig(cfg.d_memory, cfg.n_state, cfg.r_min, cfg.r_max, cfg.max_phase, chunk=cfg.chunk,
                                 layout=cfg.layout), generator)
        _memory_init(self.lru, generator)

    @property
    def n_state(self) -> int:
        return self.lru.n_state

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Bt, T, _ = u.shape
        h, d = self.cfg.n_head, self.cfg.d_head
        q, k, v = self.wqkv(u).view(Bt, T, 3, h, d).unbind(2)
        k = F.pad(k, (0, 0, 0, 0, 1, 0))[:, :T]  # k_{t-1}; zero at t = 0
        z = (k.unsqueeze(-1) * v.unsqueeze(-2)).reshape(Bt, T, h * d * d)
        M = self.lru(z).view(Bt, T, h, d, d)
        y = torch.einsum("bthi,bthij->bthj", q, M)
        return self.out(y.reshape(Bt, T, h * d))
