"""Certified linear convergence rates over ``S(m, L)`` by a Lyapunov / IQC semidefinite program.

``S(m, L)``: the functions ``f`` that are ``m``-strongly convex with ``L``-Lipschitz gradient.
An iteration in Lur'e form (:mod:`lyactl.analysis.lure`) is run on every such ``f``; with
``p = u - m y`` and ``q = L y - u`` (deviations from a fixed point ``(xi*, y*, u*)``):

* sector IQC (pointwise): ``p_k q_k >= 0``;
* weighted off-by-one IQC (rho-hard, ``0 < rho <= 1``, ``q_{-1} = 0``)::

      sum_{k=0}^{N} rho^{-2k} p_k (q_k - rho^2 q_{k-1}) >= 0      for every N

  (Lessard, Recht & Packard 2016, Lemma 10; derived in :mod:`theory.iqc`).

The filter state ``zeta_k = q_{k-1}`` (``zeta_0 = 0``) lifts ``xi`` to ``eta = (xi, zeta)``; with
``v = (eta, u)``, ``eta+ = Z v`` and ``eta = E v``. The certificate is ``P > 0`` and multipliers
``lam_s, lam_o >= 0`` such that (Lessard et al. Thm 4)::

    M = Z^T P Z - rho^2 E^T P E + lam_s S + lam_o (S - rho^2 T)  <  0,

``S = sym(w_p w_q^T)``, ``T = sym(w_p w_zeta^T)``, i.e. ``V(eta+) - rho^2 V(eta) + lam_s p q
+ lam_o p (q - rho^2 zeta) <= 0`` for ``V = eta^T P eta``. Summing ``rho^{-2(k+1)}`` times it and
using the IQCs: ``V(eta_N) <= rho^{2N} V(eta_0)``, so ``|xi_N - xi*|^2 <= c rho^{2N} |xi_0 - xi*|^2``
with ``c = lambda_max(P_xi xi) / lambda_min(P)`` (:func:`norm_constant`); for ``d``-dimensional
``f`` the certificate is ``P (x) I_d``. Without the off-by-one term ``zeta`` is dropped (sector only).

Verdicts: HOLDS with ``rate = rho < 1`` when a certificate re-verifies with numpy alone
(:func:`reverify`); FAILS only with a counterexample, a quadratic ``lam y^2 / 2``, ``lam`` in
``[m, L]``, on which ``rho(A + lam B C) >= 1``; otherwise UNKNOWN (no certificate found: the
multipliers are sufficient, not necessary). The rate is found by bisection on ``rho``; since the
off-by-one multiplier depends on ``rho`` feasibility need not be monotone, so the bisection
returns *a* certified rate, at most ``tol`` above the least one it bracketed.

Each LMI is written in clarabel's conic form by hand (:mod:`lyactl.analysis.sdp`, which alone
imports clarabel, extra ``sdp``): cvxpy's import costs more than a whole ``lyactl rate`` call.
``tests/test_rates.py`` solves the same LMI through cvxpy as an independent check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from lyactl.analysis.lure import LureSystem, check_class, quadratic_rate
from lyactl.analysis.sdp import AffineLMI, solve_sdp, sym_basis
from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict

__all__ = [
    "RateCertificate",
    "RateResult",
    "lifted_forms",
    "lmi_matrix",
    "lmi_max_eig",
    "reverify",
    "norm_constant",
    "certify_rate",
    "lmi_oracle",
    "bisect_rate",
]

_EPS = 1e-7          # solve for M <= -_EPS I with P >= I (homogeneous LMI: no loss of generality)
_FAIL_TOL = 1e-9     # rho(A + lam B C) >= 1 + _FAIL_TOL is a counterexample


@dataclass(frozen=True, eq=False)
class RateCertificate:
    """``P`` (k, k), ``k = n + 1`` with the off-by-one filter state, else ``n``; multipliers
    ``lam_s`` (sector) and ``lam_o`` (weighted off-by-one, 0 when unused); the system and class."""

    system: LureSystem
    m: float
    L: float
    rho: float
    P: np.ndarray
    lam_s: float
    lam_o: float
    off_by_one: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the matrices as lists of lists, plus the recomputed ``lmi_max_eig``."""
        return {"rho": self.rho, "m": self.m, "L": self.L, "P": self.P.tolist(),
                "multipliers": {"sector": self.lam_s, "off_by_one": self.lam_o},
                "off_by_one": self.off_by_one, "A": self.system.A.tolist(),
                "B": self.system.B.tolist(), "C": self.system.C.tolist(),
                "lmi_max_eig": lmi_max_eig(self), "norm_constant": norm_constant(self),
                "reverifies": reverify(self)}


@dataclass(frozen=True, eq=False)
class RateResult:
    """Verdict, certified ``rate`` (None unless HOLDS), the ``certificate`` (None unless HOLDS),
    and for comparison the quadratic lower bound ``quadratic_rate`` = max over sampled
    curvatures of ``rho(A + lam B C)`` at ``worst_curvature``."""

    verdict: Verdict
    rate: float | None
    method: str
    certificate: RateCertificate | None
    quadratic_rate: float
    worst_curvature: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object: verdict, rate, method, certificate, lower bound, details."""
        cert = None if self.certificate is None else self.certificate.to_json()
        return {"verdict": self.verdict.value, "rate": self.rate, "method": self.method,
                "certificate": cert, "quadratic_rate": self.quadratic_rate,
                "worst_curvature": self.worst_curvature, "details": dict(self.details)}


def lifted_forms(system: LureSystem, m: float, L: float,
                 off_by_one: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(Z, E, S, T)`` on ``v = (xi, [zeta], u)`` of length ``k + 1``.

    ``eta+ = Z v`` and ``eta = E v`` (both (k, k + 1)); ``v^T S v = p q`` and
    ``v^T T v = p zeta`` (both (k + 1, k + 1), symmetric; ``T = 0`` without ``zeta``).
    """
    A, B, C, n = system.A, system.B, system.C, system.n
    k = n + 1 if off_by_one else n
    w_y, w_u, w_z = np.zeros(k + 1), np.zeros(k + 1), np.zeros(k + 1)
    w_y[:n], w_u[k] = C[0], 1.0
    Z = np.zeros((k, k + 1))
    Z[:n, :n], Z[:n, k] = A, B[:, 0]
    if off_by_one:
        w_z[n] = 1.0
        Z[n] = L * w_y - w_u          # zeta+ = q = L y - u
    E = np.eye(k, k + 1)
    w_p, w_q = w_u - m * w_y, L * w_y - w_u
    sym = lambda a, b: (np.outer(a, b) + np.outer(b, a)) / 2  # noqa: E731
    return Z, E, sym(w_p, w_q), sym(w_p, w_z)


def lmi_matrix(cert: RateCertificate) -> np.ndarray:
    """``M = Z^T P Z - rho^2 E^T P E + lam_s S + lam_o (S - rho^2 T)`` in numpy, (k+1, k+1)."""
    Z, E, S, T = lifted_forms(cert.system, cert.m, cert.L, cert.off_by_one)
    r2 = cert.rho ** 2
    M = Z.T @ cert.P @ Z - r2 * (E.T @ cert.P @ E) + (cert.lam_s + cert.lam_o) * S - r2 * cert.lam_o * T
    return (M + M.T) / 2


def lmi_max_eig(cert: RateCertificate) -> float:
    """``lambda_max(D M D)`` with ``D = diag(|M_ii|^{-1/2})`` (numpy ``eigvalsh``), or ``+inf`` if
    some ``M_ii >= 0``. A congruence: negative iff ``M < 0`` (Sylvester), but scale-free, so the
    sign survives rounding when ``P``'s blocks differ by orders of magnitude (large ``L``)."""
    return _scaled_max_eig(lmi_matrix(cert))


def _scaled_max_eig(M: np.ndarray) -> float:
    d = np.diag(M)
    if not np.all(d < 0):
        return math.inf
    D = 1.0 / np.sqrt(-d)
    return float(np.linalg.eigvalsh(M * np.outer(D, D))[-1])


def reverify(cert: RateCertificate) -> bool:
    """Re-check a certificate with numpy only: finite data, ``0 < rho < 1``, ``P = P^T > 0``,
    ``lam_s, lam_o >= 0`` (``lam_o = 0`` without the filter state) and ``M < 0``
    (:func:`lmi_max_eig` ``< 0``; ``P > 0`` checked the same scale-free way)."""
    P = np.asarray(cert.P, dtype=np.float64)
    k = cert.system.n + (1 if cert.off_by_one else 0)
    scalars = (cert.rho, cert.lam_s, cert.lam_o, cert.m, cert.L)
    if P.shape != (k, k) or not (np.all(np.isfinite(P)) and all(map(math.isfinite, scalars))):
        return False
    if not (0 < cert.rho < 1 and cert.lam_s >= 0 and cert.lam_o >= 0 and 0 <= cert.m <= cert.L):
        return False
    if (cert.lam_o != 0 and not cert.off_by_one) or not np.allclose(P, P.T, rtol=0, atol=0):
        return False
    return bool(_scaled_max_eig(-P) < 0 and lmi_max_eig(cert) < 0)


def norm_constant(cert: RateCertificate) -> float:
    """``c = lambda_max(P_xx) / lambda_min(P_xx - P_xz P_zz^{-1} P_zx)`` (``x`` = the ``n`` states
    ``xi``, ``z`` = the filter state): ``|xi_N - xi*|^2 <= c rho^{2N} |xi_0 - xi*|^2``, because
    ``zeta_0 = 0`` gives ``V(eta_0) <= lambda_max(P_xx) |xi_0|^2`` and ``V(eta) >= min_zeta V``,
    which is the Schur complement's quadratic form in ``xi``."""
    n, P = cert.system.n, cert.P
    schur = P[:n, :n] - P[:n, n:] @ np.linalg.solve(P[n:, n:], P[n:, :n]) if P.shape[0] > n else P
    return float(np.linalg.eigvalsh(P[:n, :n])[-1] / np.linalg.eigvalsh(schur)[0])


def certify_rate(system: LureSystem, m: float, L: float, *, off_by_one: bool = True,
                 tol: float = 1e-5) -> RateResult:
    """Certify ``|xi_k - xi*| <= sqrt(c) rho^k |xi_0 - xi*|`` for every ``f`` in ``S(m, L)``.

    Bisection on ``rho`` (to width ``tol``) over the LMI of the module docstring, starting
    from the quadratic lower bound; each step is one SDP with LMIs of sizes ``n + 1`` and ``n + 2``
    (:func:`lmi_oracle`, clarabel). Cost: about ``log2(1 / tol)`` small SDP solves, a few ms each.
    """
    if not isinstance(system, LureSystem):
        raise InvalidArgumentError(bad_arg("system", "a LureSystem", type(system).__name__))
    check_class(m, L)
    if not (isinstance(tol, float) and 0 < tol < 0.1):
        raise InvalidArgumentError(bad_arg("tol", "a float in (0, 0.1)", tol))
    rho_q, lam_q = quadratic_rate(system, m, L)
    base = {"stationary_fixed_points": system.fixed_points_are_stationary(), "m": m, "L": L}
    if rho_q >= 1 + _FAIL_TOL:
        return RateResult(Verdict.FAILS, None, "quadratic counterexample: rho(A + lam B C) >= 1",
                          None, rho_q, lam_q, {**base, "counterexample": f"f(y) = {lam_q!r} * y**2 / 2"})
    # Solve in units where L = 1 (f -> f / L maps S(m, L) onto S(m / L, 1), B -> L B), so the
    # SDP's conditioning does not depend on the scale of f; then map the certificate back.
    unit = LureSystem(system.A, system.B * L, system.C, system.name)
    solve, method = lmi_oracle(unit, m / L, 1.0, off_by_one), _method(off_by_one)
    found = bisect_rate(solve, rho_q, tol) if rho_q < 1 - tol else None
    cert = None if found is None else _rescale(found, system, m, L)
    if cert is None or not reverify(cert):
        return RateResult(Verdict.UNKNOWN, None, method + ": no certificate for rho < 1", None,
                          rho_q, lam_q, base)
    details = {**base, "lmi_max_eig": lmi_max_eig(cert), "norm_constant": norm_constant(cert)}
    return RateResult(Verdict.HOLDS, cert.rho, method, cert, rho_q, lam_q, details)


def _rescale(cert: RateCertificate, system: LureSystem, m: float, L: float) -> RateCertificate:
    """From units ``L = 1`` back: ``zeta' = zeta / L`` and ``p' q' = p q / L^2``, so
    ``P = D P' D`` with ``D = diag(1, .., 1, 1 / L)`` and ``lam = lam' / L^2``."""
    D = np.ones(cert.P.shape[0])
    if cert.off_by_one:
        D[-1] = 1.0 / L
    return RateCertificate(system, float(m), float(L), cert.rho, cert.P * np.outer(D, D),
                           cert.lam_s / L**2, cert.lam_o / L**2, cert.off_by_one)


def bisect_rate(solve: Callable[[float], RateCertificate | None], rho_q: float,
                tol: float) -> RateCertificate | None:
    """Smallest certified rho found by ``solve`` (e.g. :func:`lmi_oracle`): try ``rho_q + tol``
    (tight), then ``1 - tol / 10``, then bisect to width ``tol``. At most ``2 + log2(1 / tol)`` solves."""
    cert = solve(rho_q + tol)
    if cert is not None:
        return cert
    lo, best = rho_q + tol, solve(1 - tol / 10)
    while best is not None and best.rho - lo > tol:
        mid = (lo + best.rho) / 2
        cert = solve(mid)
        lo, best = (lo, cert) if cert is not None else (mid, best)
    return best


def lmi_oracle(system: LureSystem, m: float, L: float,
               off_by_one: bool) -> Callable[[float], RateCertificate | None]:
    """``solve(rho)``: a certificate for ``rho`` that passes :func:`reverify`, or None.

    The LMI in clarabel's conic form (:mod:`lyactl.analysis.sdp`): variables ``x = (P_ij (i <= j),
    lam_s, lam_o)``, constraints ``P - I >= 0`` and ``-M - eps I >= 0`` (both affine in ``x`` for
    fixed ``rho``), ``lam >= 0``, and ``lam_o = 0`` without the filter state; feasibility only
    (``c = 0``). The ``rho``-free products ``Z^T P_t Z``, ``E^T P_t E`` are formed once.
    """
    Z, E, S, T = lifted_forms(system, m, L, off_by_one)
    k = Z.shape[0]
    basis = sym_basis(k)
    nP = basis.shape[0]
    ZPZ, EPE = Z.T @ basis @ Z, E.T @ basis @ E                   # (nP, k + 1, k + 1) each
    P_ge_I = AffineLMI(-np.eye(k), np.concatenate([basis, np.zeros((2, k, k))]))
    G = None if off_by_one else np.eye(nP + 2)[[nP + 1]]           # lam_o = 0

    def solve(rho: float) -> RateCertificate | None:
        r2 = rho * rho
        Ms = np.concatenate([ZPZ - r2 * EPE, S[None], (S - r2 * T)[None]])
        M_le = AffineLMI(-_EPS * np.eye(k + 1), -Ms)                  # -M - eps I >= 0
        sol = solve_sdp(nP + 2, [P_ge_I, M_le], nonneg=(nP, nP + 1), G=G)
        if sol.x is None or sol.status == "infeasible":
            return None
        Pv = np.tensordot(sol.x[:nP], basis, axes=1)
        cert = RateCertificate(system, float(m), float(L), float(rho), Pv, float(max(sol.x[nP], 0.0)),
                               float(max(sol.x[nP + 1], 0.0)) if off_by_one else 0.0, off_by_one)
        return cert if reverify(cert) else None

    return solve


def _method(off_by_one: bool) -> str:
    iqcs = "sector + weighted off-by-one (Zames-Falb)" if off_by_one else "sector"
    return f"iqc-sdp [{iqcs}; Lessard-Recht-Packard 2016; clarabel]"
