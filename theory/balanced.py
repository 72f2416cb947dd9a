"""Derivations behind lyactl.analysis.gramians / balanced: closed-form diagonal Gramians and HSVs.

Each function returns ``(derived, check)``: the value obtained symbolically with sympy (from
the Lyapunov equation, solved entrywise), evaluated at the given numbers, and an independent
numerical check that never touches a Gramian (a geometric series summed term by term, or the
singular values of a finite Hankel matrix of Markov parameters ``h_k = C A^k B``);
``tests/test_theory_balanced.py`` asserts they agree.

Results (derived here, used by the library):

* diagonal Gramian entry: ``P_ij = m_ij / (1 - lam_i conj(lam_j))`` for ``m = B B^H``;
* one real state ``x+ = a x + b u, y = c x``: ``sigma = |b c| / (1 - a^2)``;
* one complex LRU mode with real output ``y = Re(c x)``, ``x+ = lam x + b u`` (2 real states):
  with ``h = |b| |c| / (1 - |lam|^2)`` (the HSV of the complex map ``y = c x``) and
  ``g = b c / (1 - lam^2)``,  ``sigma_{1,2} = ( sqrt(h^2 - Im(g)^2) +- |Re(g)| ) / 2``.
  So ``sigma_1 + sigma_2 <= h`` with equality iff ``g`` is real (e.g. real ``lam, b, c``: then
  ``sigma_2 = 0``), and the real output can carry as little as ``|Re g| / 2 ... h / 2``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

__all__ = ["diagonal_gramian_entry", "one_state_hsv", "lru_mode_real_output_hsv", "hankel_matrix_hsv"]


def hankel_matrix_hsv(markov: np.ndarray) -> np.ndarray:
    """Singular values of the finite Hankel matrix ``[h_{i+j}]`` of SISO Markov parameters
    ``h_0, h_1, ...`` (``h_k = c a^k b``); they converge to the HSVs as the length grows."""
    K = (len(markov) + 1) // 2  # markov of odd length 2K - 1
    H = np.array([[markov[i + j] for j in range(K)] for i in range(K)])
    return np.linalg.svd(H, compute_uv=False)


def _length(lam: complex) -> int:
    """Odd number of Markov parameters with ``|lam|^k`` below 1e-18 of the first (at least 41)."""
    k = int(np.ceil(np.log(1e-18) / np.log(max(abs(lam), 1e-3)))) + 1
    return 2 * max(k, 20) + 1


def diagonal_gramian_entry(lam_i: complex = 0.6 + 0.3j, lam_j: complex = -0.2 + 0.7j,
                           m: complex = 1.3 - 0.4j) -> tuple[complex, complex]:
    """Entry ``(i, j)`` of ``P = diag(lam) P diag(lam)^H + M``: solved symbolically from
    ``p = lam_i p conj(lam_j) + m``; check: the series ``sum_k (lam_i conj lam_j)^k m``."""
    li, lj, mm, p = sp.symbols("lambda_i lambda_j m p")
    (closed,) = sp.solve(sp.Eq(p, li * p * sp.conjugate(lj) + mm), p)
    assert sp.simplify(closed - mm / (1 - li * sp.conjugate(lj))) == 0
    derived = complex(closed.subs({li: lam_i, lj: lam_j, mm: m}).evalf())
    q = lam_i * np.conj(lam_j)
    check = complex(np.sum(m * q ** np.arange(4000)))
    return derived, check


def one_state_hsv(a: float = 0.8, b: float = 1.5, c: float = -0.7) -> tuple[float, float]:
    """``x+ = a x + b u, y = c x``: ``P = b^2 / (1 - a^2)``, ``Q = c^2 / (1 - a^2)``,
    ``sigma = sqrt(P Q) = |b c| / (1 - a^2)``; check: the top singular value of the Hankel
    matrix of ``c a^k b`` (rank one, ``|cb| * ||(1, a, a^2, ...)||^2``)."""
    A, Bs, Cs, P, Q = sp.symbols("a b c P Q", real=True)
    (Pv,) = sp.solve(sp.Eq(P, A * P * A + Bs**2), P)
    (Qv,) = sp.solve(sp.Eq(Q, A * Q * A + Cs**2), Q)
    sigma = sp.sqrt(sp.factor(Pv * Qv))
    derived = float(sigma.subs({A: a, Bs: b, Cs: c}))
    check = float(hankel_matrix_hsv(c * a ** np.arange(_length(a)) * b)[0])
    return derived, check


def _lru_mode_closed_form():
    """sympy: ``(tr(PQ), det(PQ))`` of the conjugate-augmented 2-state system of one LRU mode,
    each entry from the entrywise Lyapunov solution, checked against the ``h, g`` formula."""
    x, y, br, bi, cr, ci = sp.symbols("x y b_r b_i c_r c_i", real=True)
    lam, b, c = x + sp.I * y, br + sp.I * bi, cr + sp.I * ci
    lam_cc, B_cc, C_cc = [lam, sp.conjugate(lam)], [b, sp.conjugate(b)], [c / 2, sp.conjugate(c) / 2]
    p = sp.Symbol("p")

    def entry(li, lj, m):  # the Lyapunov equation solved entrywise
        return sp.solve(sp.Eq(p, li * p * sp.conjugate(lj) + m), p)[0]

    P = sp.Matrix(2, 2, lambda i, j: entry(lam_cc[i], lam_cc[j], B_cc[i] * sp.conjugate(B_cc[j])))
    Q = sp.Matrix(2, 2, lambda i, j: entry(sp.conjugate(lam_cc[i]), sp.conjugate(lam_cc[j]),
                                           sp.conjugate(C_cc[i]) * C_cc[j]))
    b2, c2 = br**2 + bi**2, cr**2 + ci**2
    h2 = b2 * c2 / (1 - x**2 - y**2) ** 2
    g = sp.expand_complex(b * c / (1 - lam**2))
    g_re, g_im = sp.re(g), sp.im(g)
    # h^2 - |g|^2 = |b|^2 |c|^2 w with w = 1/(1 - |lam|^2)^2 - 1/|1 - lam^2|^2
    w = 1 / (1 - x**2 - y**2) ** 2 - 1 / sp.expand_complex((1 - lam**2) * (1 - sp.conjugate(lam) ** 2))

    def zero(e):  # a rational function in real symbols: put over one denominator, expand
        return sp.expand(sp.numer(sp.together(sp.expand_complex(e)))) == 0

    assert zero((P * Q).trace() - (h2 + g_re**2 - g_im**2) / 2)       # sigma_1^2 + sigma_2^2
    assert zero(P.det() - b2**2 * w) and zero(Q.det() - c2**2 * w / 16)  # so det(PQ) = ((h^2 - |g|^2)/4)^2
    assert zero(h2 - g_re**2 - g_im**2 - b2 * c2 * w)
    sig = ((sp.sqrt(h2 - g_im**2) + sp.Abs(g_re)) / 2, (sp.sqrt(h2 - g_im**2) - sp.Abs(g_re)) / 2)
    return (x, y, br, bi, cr, ci), sig


def lru_mode_real_output_hsv(lam: object = 0.7 * np.exp(0.9j), b: object = 0.8 - 0.5j,
                             c: object = -0.3 + 1.1j) -> tuple[np.ndarray, np.ndarray]:
    """The two HSVs of ``y = Re(c x)``, ``x+ = lam x + b u`` (see module doc) at one point or at
    each entry of equal-length 1-D arrays ``lam, b, c``: ``(derived, check)``, both (k, 2);
    check: the two top singular values of the Hankel matrix of ``Re(c lam^k b)``."""
    symbols, sig = _lru_mode_closed_form()
    lam, b, c = (np.atleast_1d(np.asarray(v, dtype=complex)) for v in (lam, b, c))
    f = sp.lambdify(symbols, sp.Matrix([sig]), "numpy")
    derived = np.array([np.asarray(f(l.real, l.imag, bb.real, bb.imag, cc.real, cc.imag), dtype=float).ravel()
                        for l, bb, cc in zip(lam, b, c)])
    check = np.array([hankel_matrix_hsv(np.real(cc * l ** np.arange(_length(l)) * bb))[:2]
                      for l, bb, cc in zip(lam, b, c)])
    return derived, check
