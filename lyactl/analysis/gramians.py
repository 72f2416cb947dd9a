"""Gramians and Hankel singular values of a stable discrete-time LTI system.

System and conventions (complex allowed everywhere; ``^H`` is the conjugate transpose)::

    x_{k+1} = A x_k + B u_k,    y_k = C x_k (+ D u_k),    A: (N,) diagonal or (N, N),
                                                          B: (N, H),  C: (P, N)

* controllability Gramian ``P = A P A^H + B B^H``  (``P = sum_k A^k B B^H (A^H)^k``),
* observability Gramian   ``Q = A^H Q A + C^H C``  (``Q = sum_k (A^H)^k C^H C A^k``),
* Hankel singular values (HSVs) ``sigma_i = sqrt(lambda_i(P Q))``, descending; they are the
  singular values of the Hankel operator (past inputs -> future outputs), so they do not
  depend on the state basis.

For a diagonal ``A = diag(lam)`` both equations are solved entrywise in closed form,
``P_ij = (B B^H)_ij / (1 - lam_i conj(lam_j))`` and ``Q_ij = (C^H C)_ij / (1 - conj(lam_i) lam_j)``
(derived in ``theory/balanced.py``); a dense ``A`` goes to ``scipy.linalg.solve_discrete_lyapunov``.
An unstable mode (``rho(A) >= 1``) has no Gramian: such input is refused, as is NaN or inf.

Real output of a complex diagonal layer (LRU): ``y = Re(C x)`` with real ``u`` is NOT the map
``y = C x``. Since ``Re(C x) = (C x + conj(C) conj(x)) / 2``, the true LTI map has 2N states,
the conjugate-augmented realisation ``lam_cc = [lam, conj lam]``, ``B_cc = [B; conj B]``,
``C_cc = [C, conj C] / 2`` (:func:`conjugate_augmented`), or, after the similarity
``z = (Re x_1, Im x_1, Re x_2, Im x_2, ...)``, a real one (:func:`real_output_realisation`).
Certified bounds for such layers must use these (:func:`real_output_gramians`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg

__all__ = [
    "NonFiniteSystemError",
    "check_system",
    "is_diagonal",
    "gramians",
    "psd_factor",
    "hankel_singular_values",
    "hsv_from_gramians",
    "conjugate_augmented",
    "real_output_realisation",
    "cc_to_real_map",
    "real_output_gramians",
]


class NonFiniteSystemError(NonFiniteError, InvalidArgumentError):
    """NaN or inf in a system matrix (both a :class:`NonFiniteError` and an
    :class:`InvalidArgumentError`, so either ``except`` catches it)."""


def is_diagonal(A: np.ndarray) -> bool:
    """True when ``A`` is given as the 1-D array of its diagonal entries."""
    return np.ndim(A) == 1


def _as_numeric(x: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        raise ShapeError(bad_arg(name, "a rectangular (non-ragged) array", type(x).__name__)) from exc
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.timedelta64)):
        raise InvalidArgumentError(bad_arg(name, "a real or complex numeric array", arr.dtype.name))
    arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)
    if not np.all(np.isfinite(arr)):
        raise NonFiniteSystemError(bad_arg(name, "finite entries", "NaN or inf"))
    return arr


def check_system(A: object, B: object, C: object, D: object = None, *,
                 stable: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``(A, B, C[, D])`` and return float64 / complex128 copies.

    ``A`` is ``(N,)`` (diagonal entries) or ``(N, N)``; ``B`` ``(N, H)``; ``C`` ``(P, N)``;
    ``D`` ``(P, H)``, or ``(H,)`` for an elementwise feedthrough ``D * u`` when ``P == H``.
    An empty system (N = 0, e.g. a truncation to rank 0) passes only with ``stable=False``.
    With ``stable=True`` a system with ``rho(A) >= 1`` raises :class:`InvalidArgumentError`
    naming ``A`` (cost: one O(N^3) ``eigvals`` for dense ``A``, O(N) for diagonal).
    """
    A, B, C = _as_numeric(A, "A"), _as_numeric(B, "B"), _as_numeric(C, "C")
    if A.ndim not in (1, 2) or (A.shape[0] == 0 and stable) or (A.ndim == 2 and A.shape[0] != A.shape[1]):
        raise ShapeError(bad_arg("A", "a non-empty (N,) diagonal or square (N, N) matrix", A.shape))
    N = A.shape[0]
    if B.ndim != 2 or B.shape[0] != N:
        raise ShapeError(bad_arg("B", f"a matrix of shape ({N}, H) matching A", B.shape))
    if C.ndim != 2 or C.shape[1] != N:
        raise ShapeError(bad_arg("C", f"a matrix of shape (P, {N}) matching A", C.shape))
    if D is not None:
        D = _as_numeric(D, "D")
        P, H = C.shape[0], B.shape[1]
        if D.shape != (P, H) and not (D.shape == (H,) and P == H):
            raise ShapeError(bad_arg("D", f"a matrix of shape ({P}, {H}) (or ({H},) when P == H)", D.shape))
    if stable:
        rho = float(np.max(np.abs(A if is_diagonal(A) else np.linalg.eigvals(A))))
        if not rho < 1.0:
            raise InvalidArgumentError(bad_arg(
                "A", "a Schur-stable system, rho(A) < 1 (an unstable mode has no Gramian)", f"rho(A) = {rho:.6g}"))
    return A, B, C, D


def gramians(A: object, B: object, C: object) -> tuple[np.ndarray, np.ndarray]:
    """Controllability ``P = A P A^H + B B^H`` and observability ``Q = A^H Q A + C^H C``.

    Parameters
    ----------
    A : (N,) diagonal entries ``lam`` or (N, N) matrix, real or complex, ``rho(A) < 1``.
    B : (N, H).   C : (P, N).

    Returns
    -------
    P, Q : (N, N) Hermitian positive semidefinite; float64 when A, B, C are all real,
        else complex128.

    Diagonal ``A``: closed form ``P_ij = (B B^H)_ij / (1 - lam_i conj(lam_j))``,
    ``Q_ij = (C^H C)_ij / (1 - conj(lam_i) lam_j)``, cost O(N^2 (H + P)).
    Dense ``A``: ``scipy.linalg.solve_discrete_lyapunov`` (which solves ``A X A^H - X + W = 0``),
    cost O(N^3 + N^2 (H + P)).

    Raises
    ------
    InvalidArgumentError naming ``A`` for ``rho(A) >= 1``; :class:`NonFiniteSystemError`
    (an InvalidArgumentError) naming the array for NaN/inf; ShapeError for mismatched shapes.
    """
    A, B, C, _ = check_system(A, B, C)
    BBh, ChC = B @ B.conj().T, C.conj().T @ C
    if is_diagonal(A):
        P = BBh / (1.0 - np.outer(A, A.conj()))
        Q = ChC / (1.0 - np.outer(A.conj(), A))
    else:
        P = scipy.linalg.solve_discrete_lyapunov(A, BBh)
        Q = scipy.linalg.solve_discrete_lyapunov(A.conj().T, ChC)
    real = not (np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C))
    P, Q = (P + P.conj().T) / 2, (Q + Q.conj().T) / 2
    return (P.real, Q.real) if real else (P.astype(np.complex128), Q.astype(np.complex128))


def psd_factor(M: np.ndarray) -> np.ndarray:
    """``L`` with ``M ~ L L^H`` for Hermitian positive semidefinite ``M``: ``V sqrt(w)`` from
    ``eigh``, with eigenvalues ``w <= N eps max(w)`` (rounding noise, negative ones included)
    set to 0.

    Uses ``eigh`` rather than Cholesky: a (numerically) singular Gramian, common for layers with
    near-uncontrollable modes, has no Cholesky factor but a well-defined eigen factor. Dropping
    the noise eigenvalues matters: their square roots (``~ sqrt(eps)``) would otherwise show up
    as spurious HSVs of size ``~ sqrt(eps ||P|| ||Q||)`` where the exact ones are 0. O(N^3).
    """
    w, V = np.linalg.eigh((M + M.conj().T) / 2)
    floor = w.shape[0] * np.finfo(float).eps * max(float(w[-1]), 0.0) if w.size else 0.0
    return V * np.sqrt(np.where(w > floor, w, 0.0))


def hsv_from_gramians(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """HSVs as the singular values of ``Lq^H Lp`` (``P = Lp Lp^H``, ``Q = Lq Lq^H``).

    Equal to ``sqrt(eig(P Q))`` but computed without forming ``P Q`` (whose eigenvalues lose
    their small end to rounding and may come out negative or complex). O(N^3).
    """
    return np.linalg.svd(psd_factor(Q).conj().T @ psd_factor(P), compute_uv=False)


def hankel_singular_values(A: object, B: object, C: object) -> np.ndarray:
    """Hankel singular values of ``(A, B, C)``: ``(N,)`` real, descending, ``>= 0``.

    ``sigma_i = sqrt(lambda_i(P Q))`` for the Gramians of :func:`gramians`; computed by the
    square-root route (:func:`hsv_from_gramians`). Cost O(N^3 + N^2 (H + P)) per layer.
    Raises as :func:`gramians` does.
    """
    return hsv_from_gramians(*gramians(A, B, C))


def conjugate_augmented(lam: object, B: object, C: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2N-state complex-diagonal realisation of ``y = Re(C x)``, ``x+ = diag(lam) x + B u``.

    Returns ``lam_cc = [lam, conj lam]`` (2N,), ``B_cc = [B; conj B]`` (2N, H) and
    ``C_cc = [C, conj C] / 2`` (P, 2N); ``C_cc lam_cc^k B_cc = Re(C lam^k B)`` for every k.
    """
    lam, B, C, _ = check_system(lam, B, C, stable=False)
    if not is_diagonal(lam):
        raise ShapeError(bad_arg("lam", "a 1-D array of diagonal entries (N,)", lam.shape))
    return (np.concatenate([lam, lam.conj()]).astype(np.complex128),
            np.vstack([B, B.conj()]).astype(np.complex128),
            np.hstack([C, C.conj()]).astype(np.complex128) / 2)


def cc_to_real_map(N: int) -> tuple[np.ndarray, np.ndarray]:
    """``S`` (2N, 2N) with ``z = S x_cc``, ``x_cc = [x; conj x]``, ``z = (Re x_1, Im x_1, ...)``,
    and its inverse ``S^{-1}`` (``x_cc = S^{-1} z``)."""
    S = np.zeros((2 * N, 2 * N), dtype=np.complex128)
    Sinv = np.zeros_like(S)
    i = np.arange(N)
    S[2 * i, i], S[2 * i, N + i] = 0.5, 0.5
    S[2 * i + 1, i], S[2 * i + 1, N + i] = -0.5j, 0.5j
    Sinv[i, 2 * i], Sinv[i, 2 * i + 1] = 1.0, 1.0j
    Sinv[N + i, 2 * i], Sinv[N + i, 2 * i + 1] = 1.0, -1.0j
    return S, Sinv


def real_output_realisation(lam: object, B: object, C: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The REAL 2N-state realisation of ``y = Re(C x)``, ``x+ = diag(lam) x + B u``, ``u`` real.

    This function returns the real-valued one (use :func:`conjugate_augmented` for the
    complex-diagonal one; the two are similar through :func:`cc_to_real_map`). State
    ``z = (Re x_1, Im x_1, Re x_2, Im x_2, ...)`` (interleaved), so

    * ``A`` (2N, 2N) block diagonal, block i ``[[Re lam_i, -Im lam_i], [Im lam_i, Re lam_i]]``,
    * ``B`` (2N, H) rows ``2i, 2i+1`` = ``Re B_i, Im B_i``,
    * ``C`` (P, 2N) columns ``2i, 2i+1`` = ``Re C_i, -Im C_i``.

    All three are float64. A real ``lam_i`` with real ``B_i`` leaves ``Im x_i = 0``: the
    realisation is then not minimal (zero HSVs), which is correct, not an error. O(N^2 + N(H+P)).
    """
    lam, B, C, _ = check_system(lam, B, C, stable=False)
    if not is_diagonal(lam):
        raise ShapeError(bad_arg("lam", "a 1-D array of diagonal entries (N,)", lam.shape))
    N = lam.shape[0]
    lam = lam.astype(np.complex128)
    A = np.zeros((2 * N, 2 * N))
    i = np.arange(N)
    A[2 * i, 2 * i], A[2 * i, 2 * i + 1] = lam.real, -lam.imag
    A[2 * i + 1, 2 * i], A[2 * i + 1, 2 * i + 1] = lam.imag, lam.real
    Bz = np.empty((2 * N, B.shape[1]))
    Bz[0::2], Bz[1::2] = B.real, np.imag(B)
    Cz = np.empty((C.shape[0], 2 * N))
    Cz[:, 0::2], Cz[:, 1::2] = C.real, -np.imag(C)
    return A, Bz, Cz


def real_output_gramians(lam: object, B: object, C: object) -> tuple[np.ndarray, np.ndarray]:
    """Gramians (float64, (2N, 2N)) of :func:`real_output_realisation`, without a dense solve.

    The closed-form diagonal Gramians of the conjugate-augmented system, mapped by ``S``
    (:func:`cc_to_real_map`): ``P = S P_cc S^H`` and ``Q = S^{-H} Q_cc S^{-1}``.
    Cost O(N^2 (H + P) + N^3), against O(N^3) with a ~25x larger constant for a dense solve.
    """
    lam_cc, B_cc, C_cc = conjugate_augmented(lam, B, C)
    P_cc, Q_cc = gramians(lam_cc, B_cc, C_cc)
    S, Sinv = cc_to_real_map(lam_cc.shape[0] // 2)
    P = S @ P_cc @ S.conj().T
    Q = Sinv.conj().T @ Q_cc @ Sinv
    return (P.real + P.real.T) / 2, (Q.real + Q.real.T) / 2
