"""Square-root balanced truncation with the H-infinity error certificate.

For a stable ``G(z) = C (zI - A)^{-1} B + D`` with Hankel singular values
``sigma_1 >= ... >= sigma_n`` (:mod:`lyactl.analysis.gramians`), balanced truncation to ``r``
states gives ``G_r`` with (Enns; Al-Saggaf & Franklin 1987 for discrete time)::

    ||G - G_r||_inf  <=  bound = 2 * (sigma_{r+1} + ... + sigma_n)

Square-root method (no Gramian is ever inverted): ``P = Lp Lp^H``, ``Q = Lq Lq^H`` (eigen
factors, robust to singular Gramians), ``Lq^H Lp = U S V^H``, and with the first ``r`` columns
``T = Lp V_r S_r^{-1/2}``, ``Tinv = S_r^{-1/2} U_r^H Lq^H`` (so ``Tinv T = I_r``):
``A_r = Tinv A T``, ``B_r = Tinv B``, ``C_r = C T``, ``D_r = D``.

Structure is kept: a diagonal ``A`` (1-D input) comes back diagonal, by re-diagonalising
``A_r = W diag(mu) W^{-1}`` (``scipy.linalg.eig``) and absorbing ``W`` into ``T``. When the
eigenvector condition number ``cond(W)`` exceeds ``max_cond`` the call is refused with an
:class:`InvalidArgumentError` naming ``rank``; pass ``rediagonalise=False`` for the dense
balanced system instead. LRU layers (``y = Re(C x) + D u``) use :func:`lru_truncation`,
which certifies on the 2N-state real-output realisation.

The measured error :func:`hinf_error` samples ``sigma_max(G - G_r)`` on the unit circle, so
it is a lower bound of the true norm: ``measured <= ||G - G_r||_inf <= bound``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg

from lyactl.analysis.gramians import (cc_to_real_map, check_system, gramians,
                                      hsv_from_gramians, is_diagonal, psd_factor, real_output_gramians,
                                      real_output_realisation)
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg

__all__ = [
    "Truncation",
    "balanced_truncation",
    "lru_truncation",
    "rank_for_energy",
    "frequency_response",
    "hinf_error",
]

_MAX_COND = 1e8


@dataclass(frozen=True)
class Truncation:
    """A reduced system and its certificate data.

    ``A, B, C, D``: the reduced system, same structure as the input (``A`` 1-D diagonal for a
    diagonal input; for :func:`lru_truncation` the complex-diagonal LRU form whose output is
    ``Re(C x) + D u``); ``D`` is the input's, unchanged (truncation does not touch it).
    ``hsv``: every HSV of the full system (its real-output realisation when ``real_output``),
    descending. ``rank``: states kept, counted in that system (real states for real output).
    ``bound = 2 * sum(hsv[rank:])``: ``||G - G_r||_inf <= bound``.
    ``T`` (n, m), ``Tinv`` (m, n): the state maps, ``x_r = Tinv x``, ``x ~ T x_r``, with
    ``A_r = Tinv A T``, ``B_r = Tinv B``, ``C_r = C T``. For :func:`lru_truncation` they act on
    the conjugate-augmented state ``[x; conj x]`` (n = 2N): ``B_r = Tinv @ [B; conj B]`` and
    ``C_r = [C, conj C] @ T`` (see there). ``real_output`` records which map was certified.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray | None
    hsv: np.ndarray
    rank: int
    bound: float
    T: np.ndarray
    Tinv: np.ndarray
    real_output: bool = False


def rank_for_energy(hsv: object, tol: float) -> int:
    """Smallest ``r`` with ``sum(hsv[:r]) >= (1 - tol) * sum(hsv)`` (0 for an all-zero ``hsv``).

    ``tol`` in ``[0, 1)``; the certificate then reads ``bound <= 2 * tol * sum(hsv)``.
    ``hsv`` must be finite, ``>= 0`` and descending (as :func:`hankel_singular_values` returns).
    """
    s = np.asarray(hsv, dtype=np.float64)
    if s.ndim != 1:
        raise ShapeError(bad_arg("hsv", "a 1-D array", s.shape))
    if not np.all(np.isfinite(s)):
        raise NonFiniteError(bad_arg("hsv", "finite entries", "NaN or inf"))
    if np.any(s < 0) or np.any(np.diff(s) > 0):
        raise InvalidArgumentError(bad_arg("hsv", "non-negative values in descending order", s[:8].tolist()))
    if not (isinstance(tol, (int, float)) and 0.0 <= tol < 1.0):
        raise InvalidArgumentError(bad_arg("tol", "a number in [0, 1)", tol))
    cum = np.cumsum(s)
    if s.size == 0 or cum[-1] == 0.0:
        return 0
    return int(np.searchsorted(cum, (1.0 - tol) * cum[-1], side="left")) + 1


def _check_rank(rank: object, n: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank <= n:
        raise InvalidArgumentError(bad_arg("rank", f"an int in [0, {n}]", rank))
    return int(rank)


def _balance(P: np.ndarray, Q: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hsv, T, Tinv)`` of the square-root method for ``rank`` states. O(n^3).

    HSVs are computed to an absolute accuracy of about ``eps ||Lq|| ||Lp|| = eps sqrt(||P|| ||Q||)``;
    a kept HSV below ``n`` times that is numerically zero (its balanced direction is noise)
    and the rank is refused, naming the numerical minimal order.
    """
    Lp, Lq = psd_factor(P), psd_factor(Q)
    U, s, Vh = np.linalg.svd(Lq.conj().T @ Lp)
    n = s.shape[0]
    zero = n * np.finfo(float).eps * np.linalg.norm(Lp, 2) * np.linalg.norm(Lq, 2)
    if rank and not s[rank - 1] > zero:
        raise InvalidArgumentError(bad_arg(
            "rank", f"at most the numerical minimal order {int(np.sum(s > zero))} "
                    f"(kept HSVs must exceed n eps sqrt(||P|| ||Q||) = {zero:.3g})", rank))
    scale = 1.0 / np.sqrt(s[:rank])
    T = (Lp @ Vh[:rank].conj().T) * scale
    Tinv = scale[:, None] * (U[:, :rank].conj().T @ Lq.conj().T)
    return s, T, Tinv


def _rediagonalise(Ar: np.ndarray, max_cond: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu, W, W^{-1})`` with ``Ar = W diag(mu) W^{-1}``; refuses ``cond(W) > max_cond``. O(r^3)."""
    mu, W = scipy.linalg.eig(Ar)
    cond = float(np.linalg.cond(W)) if Ar.size else 1.0
    if not cond <= max_cond:
        raise InvalidArgumentError(bad_arg(
            "rank", f"a rank whose reduced A is diagonalisable with cond(eigenvectors) <= {max_cond:g} "
                    "(or rediagonalise=False for the dense balanced system)", f"cond = {cond:.3g}"))
    return mu, W, np.linalg.inv(W)


def _check_reduced_stable(mu: np.ndarray) -> None:
    rho = float(np.max(np.abs(mu))) if mu.size else 0.0
    if not rho < 1.0:
        raise InvalidArgumentError(bad_arg(
            "rank", "a rank that does not split a repeated HSV (the truncated system must be stable)",
            f"rho(A_r) = {rho:.6g}"))


def balanced_truncation(A: object, B: object, C: object, D: object = None, *, rank: int,
                        real_output: bool = False, rediagonalise: bool = True,
                        max_cond: float = _MAX_COND) -> Truncation:
    """Balanced truncation of ``x+ = A x + B u``, ``y = C x + D u`` to ``rank`` states.

    Parameters
    ----------
    A : (N,) diagonal entries or (N, N); B : (N, H); C : (P, N); D : (P, H) or (H,) or None.
    rank : states kept, ``0 <= rank <= n`` (n = N, or 2N with ``real_output``).
    real_output : the output is ``Re(C x) (+ D u)`` with real ``u``. A diagonal complex system
        goes to :func:`lru_truncation`; a dense complex one is realified as
        ``[[Re A, -Im A], [Im A, Re A]]``, ``[Re B; Im B]``, ``[Re C, -Im C]`` (state
        ``[Re x; Im x]``) and returned as that real dense reduced system. No effect when
        ``A, B, C`` are all real (the output already is real).
    rediagonalise : for diagonal ``A``: re-diagonalise ``A_r`` (default) or return it dense.
    max_cond : refuse re-diagonalisation when ``cond(W) > max_cond`` (InvalidArgumentError).

    ``rank == n`` returns the input system with ``T = Tinv = I`` and ``bound = 0`` (nothing is
    truncated; no balancing needed). A ``rank`` that keeps a numerically zero HSV, or a
    truncated system that is not stable, raises InvalidArgumentError naming ``rank``.
    Cost per layer: O(N^2 (H + P)) Gramians (diagonal) or O(N^3) (dense), O(n^3) factors and SVD.
    """
    A, B, C, D = check_system(A, B, C, D)
    is_real = not (np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C))
    if real_output and not is_real:
        if is_diagonal(A):
            return lru_truncation(A, B, C, D, rank=rank, max_cond=max_cond)
        A = np.block([[A.real, -A.imag], [A.imag, A.real]])
        B, C = np.vstack([B.real, B.imag]), np.hstack([C.real, -C.imag])
    hsv_P_Q = gramians(A, B, C)
    n = A.shape[0]
    rank = _check_rank(rank, n)
    if rank == n:
        hsv = hsv_from_gramians(*hsv_P_Q)
        I = np.eye(n)
        return Truncation(A, B, C, D, hsv, n, 0.0, I, I, bool(real_output))
    hsv, T, Tinv = _balance(*hsv_P_Q, rank)
    Ar = Tinv @ (A[:, None] * T if is_diagonal(A) else A @ T)
    Br, Cr = Tinv @ B, C @ T
    if is_diagonal(A) and rediagonalise:
        mu, W, Winv = _rediagonalise(Ar, max_cond)
        if is_real and np.all(mu.imag == 0):  # a real system with real poles stays real
            mu, W, Winv = mu.real, W.real, Winv.real
        Ar, Br, Cr, T, Tinv = mu, Winv @ Br, Cr @ W, T @ W, Winv @ Tinv
    _check_reduced_stable(Ar if Ar.ndim == 1 else np.linalg.eigvals(Ar))
    return Truncation(Ar, Br, Cr, D, hsv, rank, 2.0 * float(np.sum(hsv[rank:])), T, Tinv, bool(real_output))


def lru_truncation(lam: object, B: object, C: object, D: object = None, *, rank: int,
                   max_cond: float = _MAX_COND) -> Truncation:
    """Certified truncation of an LRU layer ``x+ = diag(lam) x + B u``, ``y = Re(C x) + D u``.

    1. Gramians of the 2N-state real realisation ``z = (Re x_1, Im x_1, ...)``
       (:func:`real_output_gramians`, closed form), its HSVs and ``bound = 2 sum(hsv[rank:])``.
    2. Square-root balancing; keep ``rank`` REAL states: real ``(A_z, B_z, C_z)`` of order ``rank``.
    3. Re-diagonalise ``A_z = W diag(mu) W^{-1}`` (real, so ``mu`` is real or comes in conjugate
       pairs) and map back to LRU form, one complex mode per pair or real eigenvalue:

       * a pair ``(mu, conj mu)``: ONE mode with ``lam = mu`` (the one with ``Im mu > 0``),
         ``B = (W^{-1} B_z)[k]``, ``C = 2 (C_z W)[:, k]``  (``c xi + conj(c xi) = Re(2 c xi)``);
       * a real ``mu``: ONE mode with real ``lam = mu``, real ``B`` and real ``C = (C_z W)[:, k]``;
         its state stays real, so it spends a complex LRU mode on one real state. An LRU
         parameterisation with a phase ``theta = exp(theta_log) > 0`` cannot hold ``mu > 0``
         exactly (``theta = 0``); the caller must clamp and account for that perturbation.

       Odd ``rank`` is allowed (it forces at least one real eigenvalue). The LRU layer gets
       ``N_r = (rank + #real eigenvalues) / 2`` modes and ``Re(C_r x_r)`` equals the reduced
       real system's output ``C_z z`` exactly (up to rounding).

    Returns a :class:`Truncation` with ``A = lam_r`` (N_r,) complex, ``B_r`` (N_r, H),
    ``C_r`` (P, N_r), ``D`` unchanged, ``rank`` in real states, ``real_output=True``;
    ``Tinv`` (N_r, 2N) and ``T`` (2N, N_r) act on ``[x; conj x]``:
    ``B_r = Tinv @ [B; conj B]``, ``C_r = [C, conj C] @ T``, ``x_r = Tinv @ [x; conj x]``.
    ``rank == 2N`` returns the layer itself (``T = [I; 0]``, ``Tinv = [I, 0]``, ``bound = 0``).
    Cost per layer: O(N^2 (H + P) + N^3) (real 2N x 2N factors, SVD and eig).
    """
    lam, B, C, D = check_system(lam, B, C, D)
    if not is_diagonal(lam):
        raise ShapeError(bad_arg("lam", "a 1-D array of diagonal entries (N,)", lam.shape))
    N = lam.shape[0]
    rank = _check_rank(rank, 2 * N)
    Az, Bz, Cz = real_output_realisation(lam, B, C)
    PQ = real_output_gramians(lam, B, C)
    if rank == 2 * N:  # nothing truncated: the layer itself, x_r = x = [I, 0] [x; conj x]
        I, O = np.eye(N), np.zeros((N, N))
        return Truncation(lam.astype(np.complex128), B, C, D, hsv_from_gramians(*PQ), rank, 0.0,
                          np.vstack([I, O]), np.hstack([I, O]), True)
    hsv, Tz, Tzinv = _balance(*PQ, rank)
    mu, W, Winv = _rediagonalise(Tzinv @ Az @ Tz, max_cond)
    _check_reduced_stable(mu)
    pair, real = mu.imag > 0, mu.imag == 0
    if np.sum(pair) != np.sum(mu.imag < 0):
        raise InvalidArgumentError(bad_arg("rank", "a reduced real A with conjugate-paired eigenvalues",
                                           mu.tolist()))
    keep = np.flatnonzero(pair | real)
    factor = np.where(real[keep], 1.0, 2.0)
    S, Sinv = cc_to_real_map(N)
    Tinv = (Winv @ Tzinv @ S)[keep]
    T = (Sinv @ Tz @ W)[:, keep] * (factor / 2)
    B_r, C_r = Winv[keep] @ (Tzinv @ Bz), (Cz @ Tz @ W)[:, keep] * factor
    B_r[real[keep]] = B_r[real[keep]].real
    C_r[:, real[keep]] = C_r[:, real[keep]].real
    return Truncation(mu[keep].astype(np.complex128), B_r, C_r, D, hsv, rank,
                      2.0 * float(np.sum(hsv[rank:])), T, Tinv, True)


def _as_lti(system: object, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(system, Truncation):
        return system.A, system.B, system.C, system.D
    if isinstance(system, Sequence) and not isinstance(system, str) and len(system) in (3, 4):
        return tuple(system) + ((None,) if len(system) == 3 else ())  # type: ignore[return-value]
    raise InvalidArgumentError(bad_arg(name, "a tuple (A, B, C[, D]) or a Truncation", type(system).__name__))


def frequency_response(A: object, B: object, C: object, D: object = None, *, w: object,
                       real_output: bool = False) -> np.ndarray:
    """``G(e^{iw}) = C (e^{iw} I - A)^{-1} B + D`` at each ``w``: (len(w), P, H) complex.

    With ``real_output`` the map is ``y = Re(C x) + D u`` (real ``u``), whose response is
    ``(G(e^{iw}) + conj(G(e^{-iw}))) / 2`` (D counted once). A 1-D ``D`` is ``diag(D)``.
    Cost: O(len(w) N P H) for diagonal ``A``; O(len(w) (N^3 + N^2 H + N P H)) for dense ``A``.
    """
    A, B, C, D = check_system(A, B, C, D, stable=False)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if real_output:
        lam_side = frequency_response(A, B, C, None, w=w) + frequency_response(A, B, C, None, w=-w).conj()
        G = lam_side / 2
    else:
        z = np.exp(1j * w)
        if is_diagonal(A):
            G = (C[None] * (1.0 / (z[:, None] - A[None, :]))[:, None, :]) @ B  # batched BLAS
        else:
            I = np.eye(A.shape[0])
            G = C @ np.linalg.solve(z[:, None, None] * I - A, np.broadcast_to(B, (len(w),) + B.shape))
    if D is not None:
        G = G + (np.diag(D) if D.ndim == 1 else D)
    return G


def _poles(A: np.ndarray) -> np.ndarray:
    return A if is_diagonal(A) else np.linalg.eigvals(A)


def hinf_error(full: object, reduced: object, n_freq: int = 2048, *, real_output: bool = False) -> float:
    """Measured ``max_w sigma_max(G(e^{iw}) - G_r(e^{iw}))`` of two systems ``(A, B, C[, D])``.

    ``full`` and ``reduced`` are tuples ``(A, B, C[, D])`` or :class:`Truncation` s (an LRU
    truncation needs ``real_output=True``, as does the full LRU layer). The grid is ``n_freq``
    points evenly on ``[0, pi]`` (real maps, ``G(e^{-iw}) = conj G(e^{iw})``) or ``[0, 2 pi)``,
    plus the pole angles of both systems (where resonance peaks sit); then the best point is
    refined three times on a 33-point local grid of the neighbouring spacing. A sampled max is
    a LOWER bound of the H-infinity norm. Cost: (n_freq + N + r + 99) evaluations of the two
    responses (:func:`frequency_response`) plus as many SVDs of a P x H matrix.
    """
    if isinstance(n_freq, bool) or not isinstance(n_freq, (int, np.integer)) or n_freq < 2:
        raise InvalidArgumentError(bad_arg("n_freq", "an int >= 2", n_freq))
    G, Gr = _as_lti(full, "full"), _as_lti(reduced, "reduced")
    real = real_output or not any(np.iscomplexobj(np.asarray(x)) for x in G[:3] + Gr[:3])
    top = math.pi if real else 2 * math.pi
    grid = np.linspace(0.0, top, n_freq, endpoint=real)
    angles = np.angle(np.concatenate([_poles(np.asarray(G[0])), _poles(np.asarray(Gr[0]))]))
    grid = np.unique(np.concatenate([grid, np.abs(angles) if real else np.mod(angles, 2 * math.pi)]))

    P, N = np.shape(G[2])
    per_chunk = max(1, int(2**24 // max(1, P * max(N, np.shape(G[1])[1]))))  # ~256 MiB of complex

    def err(ws: np.ndarray) -> np.ndarray:
        out = []
        for chunk in np.array_split(ws, max(1, -(-len(ws) // per_chunk))):
            E = frequency_response(*G, w=chunk, real_output=real_output) \
                - frequency_response(*Gr, w=chunk, real_output=real_output)
            out.append(np.linalg.svd(E, compute_uv=False)[:, 0] if E.size else np.zeros(len(chunk)))
        return np.concatenate(out)

    values = err(grid)
    best_w, best = float(grid[np.argmax(values)]), float(np.max(values))
    step = top / (n_freq - 1)
    for _ in range(3):
        local = np.linspace(best_w - step, best_w + step, 33)
        v = err(local)
        if v.max() > best:
            best_w, best = float(local[np.argmax(v)]), float(v.max())
        step /= 16
    return best
