"""Chunked parallel scan of a complex-diagonal linear recurrence, in real arithmetic.

The recurrence, per batch row and state ``n`` (LRU convention: the input enters the state
at the same step, zero state before the first step)::

    x[t] = lam * x[t-1] + b[t],   x[-1] = 0,   so   x[t] = sum_{s <= t} lam^(t-s) b[s]

with ``lam = exp(log_lam)``, ``log_lam = a + i w`` (``a < 0`` for a stable mode). Complex
numbers travel as (real, imaginary) pairs of real tensors: every op is a real op that
``torch.compile`` and autocast handle (no complex kernels in the graph).

Algorithm (two-level, both levels the same primitive):

1. Cut the time axis into chunks of ``L`` steps. Inside a chunk the scan is one matrix
   product with the Toeplitz decay matrix ``K[t, s] = lam^(t-s)`` (``t >= s``, else 0),
   built as ``exp((t - s) * log_lam)``: no repeated multiplication, so no error growth for
   ``|lam|`` close to 1, and no division by small powers (unlike a log-space cumsum, which
   overflows for ``|lam|^-L``). As a real product, ``[[K_re, -K_im], [K_im, K_re]]`` acts
   on the stacked (re, im) inputs: one batched matmul with the state as batch axis.
2. The chunk ends ``e[c]`` (local scan at the last step of chunk ``c``) obey the same
   recurrence with ``lam^L``: ``h[c] = lam^L h[c-1] + e[c]``; it is solved by calling this
   function again (chunks of chunks), so depth is ``ceil(log_L T)`` and nothing is sequential.
3. ``x[c, t] = local[c, t] + lam^(t+1) h[c-1]``.

Cost: ``O(B T N L)`` multiply-adds (``8 L`` real flops per state and step at level 1) and
a handful of memory passes; with ``L = 64`` that is tensor-core-free but cheap next to the
projections ``B`` and ``C`` when ``T`` is a few hundred. :func:`naive_scan` is the reference
(a Python loop in complex arithmetic) the tests compare with.
"""

from __future__ import annotations

import torch

from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

__all__ = ["chunked_scan", "chunked_scan_state_major", "chunked_scan_real", "chunked_scan_real_state_major",
           "naive_scan", "decay_powers"]


def decay_powers(log_re: torch.Tensor, log_im: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam^k = exp(k a) (cos k w + i sin k w)`` for integer powers ``k`` (any shape ``S``).

    ``log_re``, ``log_im``: ``[N]``; returns two tensors of shape ``S + [N]``.
    """
    kk = k.to(log_re.dtype).unsqueeze(-1)
    mag = torch.exp(kk * log_re)
    ang = kk * log_im
    return mag * torch.cos(ang), mag * torch.sin(ang)


def _toeplitz_parts(log_re: torch.Tensor, log_im: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K_re, K_im)``, each ``[N, L, L]``: ``K[n, t, s] = lam_n^(t-s)`` for ``t >= s``, else 0."""
    t = torch.arange(L, device=log_re.device)
    d = t[:, None] - t[None, :]
    k_re, k_im = decay_powers(log_re, log_im, d.clamp(min=0))  # [L, L, N]
    mask = (d >= 0).to(log_re.dtype).unsqueeze(-1)
    return (k_re * mask).permute(2, 0, 1), (k_im * mask).permute(2, 0, 1)


def _toeplitz(log_re: torch.Tensor, log_im: torch.Tensor, L: int) -> torch.Tensor:
    """Real block decay matrix ``[N, 2L, 2L]``: rows/cols ``(part, step)``, part re then im."""
    k_re, k_im = _toeplitz_parts(log_re, log_im, L)
    return torch.cat([torch.cat([k_re, -k_im], dim=2), torch.cat([k_im, k_re], dim=2)], dim=1)


def _real_toeplitz(log_lam: torch.Tensor, L: int) -> torch.Tensor:
    """``[N, L, L]``: ``K[n, t, s] = lam_n^(t-s)`` for ``t >= s``, else 0 (``lam`` real)."""
    t = torch.arange(L, device=log_lam.device)
    d = t[:, None] - t[None, :]
    K = torch.exp(d.clamp(min=0).to(log_lam.dtype).unsqueeze(-1) * log_lam) * (d >= 0).unsqueeze(-1)
    return K.permute(2, 0, 1)


def chunked_scan(
    log_re: torch.Tensor, log_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor, chunk: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``x[t] = lam x[t-1] + b[t]`` (``x[-1] = 0``) for all ``t`` at once.

    Parameters
    ----------
    log_re, log_im : ``[N]`` real and imaginary part of ``log lam`` (``log_re < 0``: stable).
    b_re, b_im : ``[B, T, N]`` the input sequence.
    chunk : ``L``, the chunk length of the block-Toeplitz products (>= 2).

    Returns
    -------
    (x_re, x_im), each ``[B, T, N]``, in the dtype of ``b_re`` promoted with ``log_re``.
    """
    if chunk < 2:
        raise InvalidArgumentError(bad_arg("chunk", "an integer >= 2", chunk))
    if b_re.shape != b_im.shape or b_re.dim() != 3 or b_re.shape[-1] != log_re.shape[-1]:
        raise ShapeError(bad_arg("b_re/b_im", f"two [B, T, {log_re.shape[-1]}] tensors", (tuple(b_re.shape), tuple(b_im.shape))))
    Bt, T, N = b_re.shape
    L = min(chunk, T)
    C = -(-T // L)
    pad = C * L - T
    if pad:
        b_re = torch.nn.functional.pad(b_re, (0, 0, 0, pad))
        b_im = torch.nn.functional.pad(b_im, (0, 0, 0, pad))
    K = _toeplitz(log_re, log_im, L).to(b_re.dtype)  # [N, 2L, 2L]
    # (re, im) stacked along the step axis: [N, 2L, B*C]
    u = torch.cat([b_re.reshape(Bt, C, L, N), b_im.reshape(Bt, C, L, N)], dim=2)
    u = u.permute(3, 2, 0, 1).reshape(N, 2 * L, Bt * C)
    v = torch.bmm(K, u).reshape(N, 2, L, Bt, C).permute(1, 3, 4, 2, 0)  # [2, B, C, L, N]
    loc_re, loc_im = v[0], v[1]
    if C > 1:
        h_re, h_im = chunked_scan(L * log_re, L * log_im, loc_re[:, :, -1], loc_im[:, :, -1], chunk)
        # carry from the previous chunk: h[c-1] (zero before the first chunk)
        h_re = torch.nn.functional.pad(h_re[:, :-1], (0, 0, 1, 0)).unsqueeze(2)
        h_im = torch.nn.functional.pad(h_im[:, :-1], (0, 0, 1, 0)).unsqueeze(2)
        p_re, p_im = decay_powers(log_re, log_im, torch.arange(1, L + 1, device=b_re.device))  # [L, N]
        p_re, p_im = p_re.to(b_re.dtype), p_im.to(b_re.dtype)
        loc_re = loc_re + p_re * h_re - p_im * h_im
        loc_im = loc_im + p_re * h_im + p_im * h_re
    x_re = loc_re.reshape(Bt, C * L, N)[:, :T]
    x_im = loc_im.reshape(Bt, C * L, N)[:, :T]
    return x_re, x_im


def chunked_scan_state_major(
    log_re: torch.Tensor, log_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor, chunk: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunked_scan` with the state axis first: ``b_re``, ``b_im`` and the result are
    ``[N, B, T]``. Same algorithm and cost in flops; what differs is memory traffic.

    With the state first, ``[N, B, T]`` is ``[N, B*C, L]`` as a free view, and the chunk's
    Toeplitz product is ``local = b K^T`` per state, a batched matmul whose operands already have
    a unit stride in their last axis, so no permuted copy of the input or the output is made (the
    time-major version permutes both, and on an H200 at batch 32 those copies were the largest
    device time of the step: ``benchmarks/results/ssm_step_time_h200.json``). The complex product
    is two real matmuls against ``[K_re^T | K_im^T]`` (``[N, L, 2L]``). A layer feeds it by
    computing its input projection as ``W_b u^T`` (``[2N, B*T]``, a transposed GEMM operand, no
    copy); see :class:`~lyactl_torch.ssm.lru.LRU` (``layout="state"``).
    """
    if chunk < 2:
        raise InvalidArgumentError(bad_arg("chunk", "an integer >= 2", chunk))
    if b_re.shape != b_im.shape or b_re.dim() != 3 or b_re.shape[0] != log_re.shape[-1]:
        raise ShapeError(bad_arg("b_re/b_im", f"two [{log_re.shape[-1]}, B, T] tensors", (tuple(b_re.shape), tuple(b_im.shape))))
    N, Bt, T = b_re.shape
    L = min(chunk, T)
    C = -(-T // L)
    if C * L > T:
        b_re = torch.nn.functional.pad(b_re, (0, C * L - T))
        b_im = torch.nn.functional.pad(b_im, (0, C * L - T))
    k_re, k_im = _toeplitz_parts(log_re, log_im, L)
    Kt = torch.cat([k_re, k_im], dim=1).mT.to(b_re.dtype)  # [N, L, 2L] = [K_re^T | K_im^T]
    P = torch.bmm(b_re.reshape(N, Bt * C, L), Kt)  # [b_re K_re^T | b_re K_im^T]
    Q = torch.bmm(b_im.reshape(N, Bt * C, L), Kt)  # [b_im K_re^T | b_im K_im^T]
    loc_re = (P[..., :L] - Q[..., L:]).reshape(N, Bt, C, L)
    loc_im = (P[..., L:] + Q[..., :L]).reshape(N, Bt, C, L)
    if C > 1:
        h_re, h_im = chunked_scan_state_major(L * log_re, L * log_im, loc_re[..., -1].contiguous(),
                                              loc_im[..., -1].contiguous(), chunk)  # [N, B, C]
        h_re = torch.nn.functional.pad(h_re[..., :-1], (1, 0)).unsqueeze(-1)  # h[c-1], zero first
        h_im = torch.nn.functional.pad(h_im[..., :-1], (1, 0)).unsqueeze(-1)
        p_re, p_im = decay_powers(log_re, log_im, torch.arange(1, L + 1, device=b_re.device))  # [L, N]
        p_re, p_im = p_re.mT.to(b_re.dtype)[:, None, None], p_im.mT.to(b_re.dtype)[:, None, None]  # [N, 1, 1, L]
        loc_re, loc_im = loc_re + p_re * h_re - p_im * h_im, loc_im + p_re * h_im + p_im * h_re
    return loc_re.reshape(N, Bt, C * L)[..., :T], loc_im.reshape(N, Bt, C * L)[..., :T]


def chunked_scan_real(log_lam: torch.Tensor, b: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The real-diagonal case (``lam = exp(log_lam)`` real, ``[N]``; ``b`` real ``[B, T, N]``):
    the same two-level algorithm with the real Toeplitz block only (a quarter of the work)."""
    if chunk < 2:
        raise InvalidArgumentError(bad_arg("chunk", "an integer >= 2", chunk))
    if b.dim() != 3 or b.shape[-1] != log_lam.shape[-1]:
        raise ShapeError(bad_arg("b", f"a [B, T, {log_lam.shape[-1]}] tensor", tuple(b.shape)))
    Bt, T, N = b.shape
    L = min(chunk, T)
    C = -(-T // L)
    if C * L > T:
        b = torch.nn.functional.pad(b, (0, 0, 0, C * L - T))
    K = _real_toeplitz(log_lam, L)
    u = b.reshape(Bt, C, L, N).permute(3, 2, 0, 1).reshape(N, L, Bt * C)
    loc = torch.bmm(K.to(b.dtype), u).reshape(N, L, Bt, C).permute(2, 3, 1, 0)  # [B, C, L, N]
    if C > 1:
        h = chunked_scan_real(L * log_lam, loc[:, :, -1], chunk)
        h = torch.nn.functional.pad(h[:, :-1], (0, 0, 1, 0)).unsqueeze(2)
        p = torch.exp(torch.arange(1, L + 1, device=b.device).to(log_lam.dtype).unsqueeze(-1) * log_lam)
        loc = loc + p.to(b.dtype) * h
    return loc.reshape(Bt, C * L, N)[:, :T]


def chunked_scan_real_state_major(log_lam: torch.Tensor, b: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """:func:`chunked_scan_real` with the state axis first (``b`` and the result ``[N, B, T]``):
    ``local = b K^T`` on ``[N, B*C, L]`` views, no permuted copies (as
    :func:`chunked_scan_state_major`)."""
    if chunk < 2:
        raise InvalidArgumentError(bad_arg("chunk", "an integer >= 2", chunk))
    if b.dim() != 3 or b.shape[0] != log_lam.shape[-1]:
        raise ShapeError(bad_arg("b", f"a [{log_lam.shape[-1]}, B, T] tensor", tuple(b.shape)))
    N, Bt, T = b.shape
    L = min(chunk, T)
    C = -(-T // L)
    if C * L > T:
        b = torch.nn.functional.pad(b, (0, C * L - T))
    K = _real_toeplitz(log_lam, L)
    loc = torch.bmm(b.reshape(N, Bt * C, L), K.mT.to(b.dtype)).reshape(N, Bt, C, L)  # b K^T
    if C > 1:
        h = chunked_scan_real_state_major(L * log_lam, loc[..., -1].contiguous(), chunk)  # [N, B, C]
        h = torch.nn.functional.pad(h[..., :-1], (1, 0)).unsqueeze(-1)
        p = torch.exp(torch.arange(1, L + 1, device=b.device).to(log_lam.dtype) * log_lam[:, None])  # [N, L]
        loc = loc + p.to(b.dtype)[:, None, None] * h
    return loc.reshape(N, Bt, C * L)[..., :T]


def naive_scan(lam: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: the recurrence as a Python loop in complex arithmetic.

    ``lam``: complex ``[N]``; ``b``: complex ``[B, T, N]``; returns complex ``[B, T, N]``.
    """
    x = torch.zeros_like(b[:, 0])
    out = []
    for t in range(b.shape[1]):
        x = lam * x + b[:, t]
        out.append(x)
    return torch.stack(out, dim=1)
