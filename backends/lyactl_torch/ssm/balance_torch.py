"""Certified balanced truncation of an LRU layer in torch, on the layer's device (float64).

The same mathematics, decisions and certificate as :func:`lyactl.analysis.balanced.lru_truncation`
(the torch-free oracle, which stays the reference the certificates are re-verified against),
with the O(N^3) steps moved to the layer's device (issue 14: ~12 s per layer of N = 1024
modes on the host). Layer ``x+ = diag(lam) x + B u``, ``y = Re(C x)``, ``lam`` [N] complex,
``B`` [N, H] (the effective ``gamma B``), ``C`` [P, N]; its REAL realisation has ``2N``
states, here in the BLOCK order ``z = [Re x; Im x]``::

    A_z = [[diag a, -diag b], [diag b, diag a]]  (lam = a + i b),  B_z = [Re B; Im B],  C_z = [Re C, -Im C]

(the core interleaves ``(Re x_1, Im x_1, ...)``; a permutation of the state changes no HSV, no
transfer function and no certificate).

1. Gramians in closed form, never through a dense 2N x 2N map. With
   ``P_a = B B^H / (1 - lam lam^H)``, ``P_b = B B^T / (1 - lam lam^T)`` (the sums
   ``sum_k lam^k B B^H conj(lam)^k`` and ``sum_k lam^k B B^T lam^k``, entrywise) and
   ``Re x = (x + conj x)/2``, ``Im x = (x - conj x)/(2i)``::

       P_z = 1/2 [[Re(P_a + P_b), Im(P_b - P_a)], [Im(P_b - P_a)^T, Re(P_a - P_b)]]

   and the same block formula for ``Q_z`` with ``Q_a = C^H C / (1 - conj(lam) lam^T)``,
   ``Q_b = C^H conj(C) / (1 - conj(lam) conj(lam)^T)`` (checked by the Lyapunov residuals
   ``P = A_z P A_z^T + B_z B_z^T``, ``Q = A_z^T Q A_z + C_z^T C_z`` in
   tests/test_torch_ssm_device_cut.py). Cost: 4 complex GEMMs, ``O(N^2 (H + P))``.
2. Eigen factors ``P = Lp Lp^T`` with the core's noise floor (:func:`psd_factor`); their 2-norms
   come from the top eigenvalues (the core takes two more 2N x 2N SVDs for them).
3. ``Lq^T Lp = U S V^T``, HSVs ``S`` (on CUDA through ``eigh`` of the Jordan-Wielandt matrix,
   :func:`_singular`); the rank refusal below ``n eps ||Lp|| ||Lq||``, the maps
   ``T = Lp V_r S_r^{-1/2}``, ``Tinv = S_r^{-1/2} U_r^T Lq^T`` and ``A_r = Tinv A_z T`` (``A_z``
   applied by its blocks, ``O(N r)``).
4. Re-diagonalisation of the small ``A_r`` (r x r), the ``cond(W)`` refusal and the stability
   check (:func:`_rediagonalise_on`): on CUDA by ``torch.linalg.eig`` when its eigenvalues
   have LAPACK's exact real / conjugate-pair structure (how modes map back depends on it),
   else on the host by the oracle's own code (scipy ``geev``). ``O(r^3)``.
5. Map back to LRU modes as :func:`~lyactl.analysis.balanced.lru_truncation` does, with
   ``S`` (``z = S [x; conj x]``) applied by its blocks.

The result is the core's :class:`~lyactl.analysis.balanced.Truncation` with float64 numpy
fields, so the caller (:func:`lyactl_torch.ssm.truncate.balanced_surgery`) treats both engines
alike. Cost per layer: two ``eigh`` of ``2N x 2N`` and one singular value decomposition of it,
an ``eig`` of ``r x r``, and transfers of ``O(N r + r H)`` numbers; a few host syncs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lyactl.analysis.balanced import _MAX_COND, Truncation, _check_rank, _check_reduced_stable, _rediagonalise
from lyactl.analysis.gramians import NonFiniteSystemError
from lyactl.errors import InvalidArgumentError, ShapeError, bad_arg

__all__ = ["diagonal_modes", "real_output_gramians", "psd_factor", "hankel_singular_values", "lru_truncation"]

_EPS = float(torch.finfo(torch.float64).eps)  # == np.finfo(float).eps, the core's


def diagonal_modes(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam [N], B [N, H], C [H, N])`` of an LRU (complex128, ``B`` the effective
    ``gamma B``) or S4D-real layer (float64) on the layer's device, detached: the torch twin of
    ``layer.system()[:3]``, the same numbers without a host copy (``log lam``, ``gamma`` and
    the S4D ``lam`` are evaluated in the parameters' dtype, as there and as in the forward
    pass, then widened). Cost ``O(N H)``."""
    with torch.no_grad():
        if hasattr(layer, "B_re"):
            a, w = (t.double() for t in layer.log_lam())
            g = torch.exp(layer.gamma_log).double()[:, None]
            B = torch.complex(layer.B_re.double() * g, layer.B_im.double() * g)
            return torch.exp(torch.complex(a, w)), B, torch.complex(layer.C_re.double(), layer.C_im.double())
        lam = torch.exp(-torch.exp(layer.nu_log)).double()
        return lam, layer.B.detach().double(), layer.C.detach().double()


def _checked(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    """The core's ``check_system`` refusals for a diagonal system (one host sync)."""
    N = lam.shape[0]
    if lam.ndim != 1 or N == 0 or B.ndim != 2 or B.shape[0] != N or C.ndim != 2 or C.shape[1] != N:
        raise ShapeError(bad_arg("lam, B, C", "shapes (N,), (N, H), (P, N) with N >= 1",
                                 (tuple(lam.shape), tuple(B.shape), tuple(C.shape))))
    flags = torch.stack([torch.isfinite(x).all() for x in (lam, B, C)] + [lam.abs().max().double()]).cpu()
    for name, ok in zip(("A", "B", "C"), flags[:3]):
        if not ok:
            raise NonFiniteSystemError(bad_arg(name, "finite entries", "NaN or inf"))
    rho = float(flags[3])
    if not rho < 1.0:
        raise InvalidArgumentError(bad_arg(
            "A", "a Schur-stable system, rho(A) < 1 (an unstable mode has no Gramian)", f"rho(A) = {rho:.6g}"))


def _blocks(Ma: torch.Tensor, Mb: torch.Tensor) -> torch.Tensor:
    """``1/2 [[Re(Ma + Mb), Im(Mb - Ma)], [Im(Mb - Ma)^T, Re(Ma - Mb)]]``, symmetrised."""
    RI = (Mb - Ma).imag
    M = torch.cat([torch.cat([(Ma + Mb).real, RI], 1), torch.cat([RI.mT, (Ma - Mb).real], 1)], 0) / 2
    return (M + M.mT) / 2


def real_output_gramians(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, Q)`` [2N, 2N] float64 of the block-ordered real realisation (module docstring,
    step 1): ``P = A_z P A_z^T + B_z B_z^T``, ``Q = A_z^T Q A_z + C_z^T C_z``. ``O(N^2 (H + P))``."""
    lam, B, C = lam.to(torch.complex128), B.to(torch.complex128), C.to(torch.complex128)
    l, lc = lam[:, None], lam.conj()[:, None]
    Pa, Pb = (B @ B.mH) / (1 - l * l.mH), (B @ B.mT) / (1 - l * l.mT)
    Qa, Qb = (C.mH @ C) / (1 - lc * l.mT), (C.mH @ C.conj()) / (1 - lc * lc.mT)
    return _blocks(Pa, Pb), _blocks(Qa, Qb)


def psd_factor(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, ||L||_2)`` with ``M ~ L L^T``: :func:`lyactl.analysis.gramians.psd_factor` in torch
    (``V sqrt(w)`` from ``eigh``, eigenvalues ``w <= n eps max(w)`` set to 0). ``O(n^3)``."""
    w, V = torch.linalg.eigh((M + M.mT) / 2)
    top = w[-1].clamp_min(0.0)
    w = torch.where(w > w.shape[0] * _EPS * top, w, torch.zeros_like(w))
    return V * torch.sqrt(w), torch.sqrt(top)


def _jordan_wielandt(M: torch.Tensor) -> torch.Tensor:
    """``[[0, M], [M^H, 0]]``: Hermitian, eigenvalues ``+-s_i`` (the singular values of square
    ``M``) with eigenvectors ``[u_i; +-v_i] / sqrt(2)``."""
    Z = torch.zeros_like(M)
    return torch.cat([torch.cat([Z, M], 1), torch.cat([M.mH, Z], 1)], 0)


def _singular(M: torch.Tensor, rank: int, jordan_wielandt: bool | None = None) -> tuple[torch.Tensor, ...]:
    """``(s, U_r, V_r)``: all singular values of square ``M`` (descending) and the leading
    ``rank`` singular vectors (``M V_r = U_r diag(s_r)``).

    On CUDA (``jordan_wielandt=None``) from ``eigh`` of :func:`_jordan_wielandt` (size 2n): a
    backward-stable symmetric eigensolver gives the same absolute accuracy, ``~ eps ||M||``, as
    an SVD, and cuSOLVER's ``syevd`` of 4096 was faster than its SVD (``gesvdj``) of 2048
    (issue 14, H200: 0.36 s for the SVD). Elsewhere ``torch.linalg.svd``; ``jordan_wielandt``
    forces the choice (tests). ``rank == 0``: values only.
    """
    n = M.shape[0]
    if not (M.is_cuda if jordan_wielandt is None else jordan_wielandt):
        if rank == 0:
            return torch.linalg.svdvals(M), M[:, :0], M[:, :0]
        U, s, Vh = torch.linalg.svd(M)
        return s, U[:, :rank], Vh[:rank].mT
    if rank == 0:
        return torch.linalg.eigvalsh(_jordan_wielandt(M)).flip(0)[:n].clamp_min(0.0), M[:, :0], M[:, :0]
    w, X = torch.linalg.eigh(_jordan_wielandt(M))  # ascending: +s_i are the top n
    top = X[:, 2 * n - rank:].flip(1) * math.sqrt(2.0)
    return w.flip(0)[:n].clamp_min(0.0), top[:n], top[n:]


def _balance(P: torch.Tensor, Q: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(hsv, T, Tinv)`` of the square-root method (the core's ``_balance``, same refusal of a
    kept HSV below ``n eps ||Lp|| ||Lq||``). ``O(n^3)``, one host sync."""
    (Lp, np_), (Lq, nq) = psd_factor(P), psd_factor(Q)
    s, U_r, V_r = _singular(Lq.mT @ Lp, rank)
    n = s.shape[0]
    if rank:
        kept, zero = (float(x) for x in torch.stack([s[rank - 1], n * _EPS * np_ * nq]).cpu())
        if not kept > zero:
            raise InvalidArgumentError(bad_arg(
                "rank", f"at most the numerical minimal order {int((s > zero).sum())} "
                        f"(kept HSVs must exceed n eps sqrt(||P|| ||Q||) = {zero:.3g})", rank))
    scale = 1.0 / torch.sqrt(s[:rank])
    return s, (Lp @ V_r) * scale, scale[:, None] * (U_r.mT @ Lq.mT)


@torch.no_grad()
def hankel_singular_values(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> np.ndarray:
    """The ``2N`` HSVs (descending, float64 numpy) of the real-output layer ``(lam, B, C)``:
    :func:`lyactl.analysis.gramians.hsv_from_gramians` of :func:`real_output_gramians`, on the
    tensors' device. Refuses non-finite or unstable input as the core does."""
    _checked(lam, B, C)
    return _hsv(*real_output_gramians(lam, B, C))


def _hsv(P: torch.Tensor, Q: torch.Tensor) -> np.ndarray:
    (Lp, _), (Lq, _) = psd_factor(P), psd_factor(Q)
    return _host(_singular(Lq.mT @ Lp, 0)[0])


def _host(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy()


def _exact_pairs(mu: np.ndarray) -> bool:
    """LAPACK's structure for a real matrix: real eigenvalues with imaginary part exactly 0, the
    others in exactly conjugate pairs (how modes map back depends on it)."""
    up, down = mu[mu.imag > 0], mu[mu.imag < 0]
    return len(up) == len(down) and bool(np.array_equal(np.sort_complex(up), np.sort_complex(down.conj())))


def _rediagonalise_on(Ar: torch.Tensor, max_cond: float,
                      torch_eig: bool | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """``(mu, W, W^{-1})`` with ``Ar = W diag(mu) W^{-1}``, refusing ``cond(W) > max_cond``.

    On CUDA by ``torch.linalg.eig`` (cuSOLVER ``geev``; 0.12 s against 0.37 s for scipy on the
    host at r = 512, H200 of issue 14) with ``cond(W)`` from :func:`_jordan_wielandt`, when its
    eigenvalues have :func:`_exact_pairs`; otherwise, and off CUDA, the oracle's own host step
    (:func:`lyactl.analysis.balanced._rediagonalise`, scipy). ``torch_eig`` forces the choice
    (tests). ``O(r^3)``.
    """
    if (Ar.is_cuda if torch_eig is None else torch_eig) and Ar.numel():
        mu_t, W = torch.linalg.eig(Ar)
        mu = _host(mu_t)
        if _exact_pairs(mu):
            s = torch.linalg.eigvalsh(_jordan_wielandt(W))[Ar.shape[0]:]  # the singular values, ascending
            cond = float(s[-1] / s[0]) if float(s[0]) > 0 else math.inf
            if not cond <= max_cond:
                raise InvalidArgumentError(bad_arg(
                    "rank", f"a rank whose reduced A is diagonalisable with cond(eigenvectors) <= {max_cond:g}",
                    f"cond = {cond:.3g}"))
            return mu, W, torch.linalg.inv(W)
    mu, W, Winv = _rediagonalise(_host(Ar), max_cond)
    return mu, *(torch.as_tensor(x, dtype=torch.complex128, device=Ar.device) for x in (W, Winv))


def _map_back(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor, Tz: torch.Tensor, Tzinv: torch.Tensor,
              max_cond: float) -> tuple[np.ndarray, ...]:
    """Steps 4-5 of the module docstring: ``(lam_r, B_r, C_r, T, Tinv)`` as numpy."""
    N, c128 = lam.shape[0], torch.complex128
    a, b = lam.real[:, None], lam.imag[:, None]
    AT = torch.cat([a * Tz[:N] - b * Tz[N:], b * Tz[:N] + a * Tz[N:]], 0)  # A_z T, by blocks
    mu, W, Winv = _rediagonalise_on(Tzinv @ AT, max_cond)
    _check_reduced_stable(mu)
    pair, real = mu.imag > 0, mu.imag == 0
    if np.sum(pair) != np.sum(mu.imag < 0):
        raise InvalidArgumentError(bad_arg("rank", "a reduced real A with conjugate-paired eigenvalues", mu.tolist()))
    keep = np.flatnonzero(pair | real)
    factor = torch.as_tensor(np.where(real[keep], 1.0, 2.0), device=lam.device)
    k = torch.as_tensor(keep, device=lam.device)
    Wk, Wik = W[:, k].to(c128), Winv[k].to(c128)
    TW, TinvW = Tz.to(c128) @ Wk, Wik @ Tzinv.to(c128)  # z-side maps of the kept modes
    B_r = TinvW @ torch.cat([B.real, B.imag], 0).to(c128)
    C_r = (torch.cat([C.real, -C.imag], 1).to(c128) @ TW) * factor
    is_real = torch.as_tensor(real[keep], device=lam.device)
    B_r = torch.where(is_real[:, None], B_r.real.to(c128), B_r)
    C_r = torch.where(is_real[None, :], C_r.real.to(c128), C_r)
    R, I = TinvW[:, :N], TinvW[:, N:]
    Tinv = torch.cat([(R - 1j * I) / 2, (R + 1j * I) / 2], 1)  # TinvW S, S = [[I, I], [-iI, iI]] / 2
    T = torch.cat([TW[:N] + 1j * TW[N:], TW[:N] - 1j * TW[N:]], 0) * (factor / 2)  # S^-1 TW
    return (mu[keep].astype(np.complex128),) + tuple(_host(x) for x in (B_r, C_r, T, Tinv))


@torch.no_grad()
def lru_truncation(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor, *, rank: int,
                   max_cond: float = _MAX_COND) -> Truncation:
    """:func:`lyactl.analysis.balanced.lru_truncation` of ``(lam, B, C)`` on their device.

    Same arguments (``rank`` in REAL states, ``0 <= rank <= 2N``), same refusals
    (InvalidArgumentError naming ``rank`` or ``A``, NonFiniteSystemError), same returned
    :class:`~lyactl.analysis.balanced.Truncation` (numpy; ``D`` is None, ``real_output``
    True). Its HSVs, bound and reduced transfer function equal the oracle's up to float64
    round-off; the modes' order and per-mode scaling of ``B_r`` / ``C_r`` may differ (an
    eigenvector basis is unique only up to those). Cost: module docstring.
    """
    _checked(lam, B, C)
    N = lam.shape[0]
    rank = _check_rank(rank, 2 * N)
    lam, B, C = lam.to(torch.complex128), B.to(torch.complex128), C.to(torch.complex128)
    P, Q = real_output_gramians(lam, B, C)
    if rank == 2 * N:  # nothing truncated: the layer itself, x_r = x = [I, 0] [x; conj x]
        I, O = np.eye(N), np.zeros((N, N))
        return Truncation(_host(lam), _host(B), _host(C), None, _hsv(P, Q), rank, 0.0,
                          np.vstack([I, O]), np.hstack([I, O]), True)
    s, Tz, Tzinv = _balance(P, Q, rank)
    del P, Q
    lam_r, B_r, C_r, T, Tinv = _map_back(lam, B, C, Tz, Tzinv, max_cond)
    hsv = _host(s)
    return Truncation(lam_r, B_r, C_r, None, hsv, rank, 2.0 * float(np.sum(hsv[rank:])), T, Tinv, True)
