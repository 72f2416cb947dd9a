"""Lyapunov verification of ``x_{k+1} = f(x_k)``: the decrease ``Delta V = V(f(x)) - V(x)``.

Three routes, each answering :class:`Evidence` (three-valued verdict, margin, conditions):

* :func:`verify_dlyap`      -- linear ``x+ = A x``: solve ``A^T P A - P = -Q`` and check
  ``P > 0``; agrees with ``rho(A) < 1`` (Lyapunov's theorem), both are reported.
* :func:`quadratic_decrease` -- quadratic ``V = x^T P x`` on ``x+ = A x`` (numeric or sympy):
  ``Delta V = x^T (A^T P A - P) x``, negative definite iff every leading principal minor of
  ``P - A^T P A`` is positive (Sylvester); symbolic minors become conditions on parameters.
* :func:`verify_decrease`   -- any system and any candidate (see :mod:`lyactl.analysis.candidates`):
  exact when the pair is (linear, quadratic) or the symbolic ``Delta V`` is a quadratic form;
  otherwise a seeded search for a counterexample (found: FAILS; none: UNKNOWN, never HOLDS).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import sympy as sp

from lyactl.analysis.candidates import LyapunovCandidate, QuadraticCandidate, as_candidate
from lyactl.errors import InvalidArgumentError, LyactlError, ShapeError, UnresolvedSymbolError, bad_arg
from lyactl.analysis.systems import LinearSystem, NumericSystem, SymbolicSystem, as_square_matrix, spectral_radius
from lyactl.verdict import Evidence, Verdict, verdict_from_margin

__all__ = [
    "delta_v",
    "sylvester_conditions",
    "quadratic_decrease",
    "quadratic_decrease_conditions",
    "verify_dlyap",
    "verify_decrease",
]


def delta_v(system: SymbolicSystem, candidate: object) -> sp.Expr:
    """Symbolic ``Delta V(x) = V(f(x)) - V(x)`` in the system's state symbols."""
    cand = as_candidate(candidate, system.state)
    if not hasattr(cand, "expr"):
        raise InvalidArgumentError(bad_arg("candidate", "a symbolic candidate (matrix or sympy Expr)",
                                           type(cand).__name__))
    V = cand.expr(system.state)
    V_next = V.subs(dict(zip(system.state, list(system.f))), simultaneous=True)
    return sp.expand(V_next - V)


def sylvester_conditions(M: sp.Matrix) -> tuple[sp.Basic, ...]:
    """Conditions ``D_k > 0`` on the leading principal minors of ``M`` (``M`` positive definite
    iff all hold, for symmetric ``M``). Each minor is factored; decided ones become True/False."""
    M = sp.Matrix(M)
    out = []
    for k in range(1, M.shape[0] + 1):
        minor = sp.factor(sp.simplify(M[:k, :k].det()))
        out.append(sp.sympify(bool(minor > 0)) if minor.is_number else sp.StrictGreaterThan(minor, 0))
    return tuple(out)


def quadratic_decrease(A: np.ndarray | sp.Matrix, P: np.ndarray | sp.Matrix,
                       values: Mapping[sp.Symbol, float] | None = None, tol: float = 1e-9) -> Evidence:
    """Is ``V = x^T P x`` a strict Lyapunov function of ``x+ = A x``?

    Holds iff ``P > 0`` and ``P - A^T P A > 0``. With numbers (after ``values``): decided by
    ``eigvalsh``; ``margin = min(lambda_min(P - A^T P A), lambda_min(P)) / lambda_max(P)``
    (so ``V(x+) <= (1 - margin) V(x)`` when it holds). With symbols left: the Sylvester
    conditions on both matrices, verdict HOLDS/FAILS only if sympy decides all of them.
    """
    if isinstance(A, sp.MatrixBase) or isinstance(P, sp.MatrixBase):
        A_s, P_s = sp.Matrix(A).subs(values or {}), sp.Matrix(P).subs(values or {})
        if A_s.shape != P_s.shape or not A_s.is_square:
            raise ShapeError(bad_arg("P", f"a square matrix of the shape of A {A_s.shape}", P_s.shape))
        if A_s.free_symbols or P_s.free_symbols:
            return _symbolic_decrease(A_s, P_s)
        A, P = np.array(A_s.evalf(), dtype=np.float64), np.array(P_s.evalf(), dtype=np.float64)
    A = as_square_matrix(A, "A")
    P = QuadraticCandidate(P).numeric_P()
    if P.shape != A.shape:
        raise ShapeError(bad_arg("P", f"a matrix of shape {A.shape}", P.shape))
    D = P - A.T @ P @ A
    lam_P = np.linalg.eigvalsh(P)
    scale = float(max(abs(lam_P[-1]), abs(lam_P[0]))) or 1.0
    margin = float(min(np.linalg.eigvalsh((D + D.T) / 2)[0], lam_P[0])) / scale
    return Evidence(verdict_from_margin(margin, tol), "quadratic-eigvalsh", margin,
                    ("P > 0", "P - A^T P A > 0"), {}, {"lambda_min_P": float(lam_P[0])})


def quadratic_decrease_conditions(A: sp.Matrix, P: sp.Matrix) -> tuple[sp.Basic, ...]:
    """Sylvester conditions (sympy relations) for ``P > 0`` and ``P - A^T P A > 0``."""
    A, P = sp.Matrix(A), sp.Matrix(P)
    return sylvester_conditions(P) + sylvester_conditions(P - A.T * P * A)


def _symbolic_decrease(A: sp.Matrix, P: sp.Matrix) -> Evidence:
    conds = quadratic_decrease_conditions(A, P)
    if all(c is sp.true for c in conds):
        verdict = Verdict.HOLDS
    elif any(c is sp.false for c in conds):
        verdict = Verdict.FAILS
    else:
        verdict = Verdict.UNKNOWN
    return Evidence(verdict, "sylvester", math.nan, tuple(str(c) for c in conds), {},
                    {"symbols": sorted(map(str, A.free_symbols | P.free_symbols))})


def verify_dlyap(A: np.ndarray, Q: np.ndarray | None = None, tol: float = 1e-9) -> Evidence:
    """Solve ``A^T P A - P = -Q`` (``Q = I`` by default) and decide Schur stability.

    ``control.dlyap(A, Q)`` solves ``A X A^T - X + Q = 0``, so it is called with ``A.T``.
    HOLDS iff ``P`` is positive definite (Cholesky) and ``rho(A) < 1``; FAILS iff not PD and
    ``rho >= 1``; anything else (disagreement, ``|1 - rho| <= tol``, a singular equation, a
    residual ``||A^T P A - P + Q||_F / ||Q||_F`` above 1e-6) is UNKNOWN.
    ``margin = 1 - rho(A)``. Cost: two O(n^3) dense solves.
    """
    import control  # declared dependency (python-control), used for its Lyapunov solver

    A = as_square_matrix(A, "A")
    Q = np.eye(A.shape[0]) if Q is None else as_square_matrix(Q, "Q")
    if Q.shape != A.shape:
        raise ShapeError(bad_arg("Q", f"a matrix of shape {A.shape}", Q.shape))
    rho = spectral_radius(A)
    margin = 1.0 - rho
    try:
        P = np.asarray(control.dlyap(A.T, Q), dtype=np.float64)
    # eigenvalues with l_i l_j = 1; with slycot installed python-control raises SlycotError, a
    # RuntimeError, where its scipy path raises LinAlgError: both mean "no unique solution"
    except (ValueError, np.linalg.LinAlgError, ArithmeticError, RuntimeError) as exc:
        return Evidence(Verdict.UNKNOWN, "dlyap", margin, ("A^T P A - P = -Q",), {},
                        {"error": str(exc)[:200], "spectral_radius": rho})
    P = (P + P.T) / 2
    residual = float(np.linalg.norm(A.T @ P @ A - P + Q) / np.linalg.norm(Q))
    pd = _is_pd(P)
    spectral = verdict_from_margin(margin, tol)
    lyap = Verdict.HOLDS if pd else Verdict.FAILS
    ok = residual <= 1e-6 and math.isfinite(residual)
    verdict = spectral if (ok and spectral is lyap) else Verdict.UNKNOWN
    return Evidence(verdict, "dlyap", margin, ("A^T P A - P = -Q", "P > 0", "rho(A) < 1"),
                    {"lyapunov": residual},
                    {"spectral_radius": rho, "P_positive_definite": pd, "n": int(A.shape[0])})


def _is_pd(P: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(P)
    except np.linalg.LinAlgError:
        return False
    return bool(np.linalg.eigvalsh(P)[0] > 0)


def verify_decrease(system: LinearSystem | SymbolicSystem | NumericSystem, candidate: object, *,
                    values: Mapping[sp.Symbol, float] | None = None, samples: int = 256,
                    radius: float = 1.0, seed: int = 0, tol: float = 1e-9) -> Evidence:
    """Decide whether ``candidate`` is a strict Lyapunov function of ``system`` (see module doc)."""
    if isinstance(system, SymbolicSystem):
        cand = as_candidate(candidate, system.state)
        if hasattr(cand, "expr"):
            exact = _symbolic_quadratic(system, cand, values, tol)
            if exact is not None:
                return exact
        system = system.numeric(values)
    else:
        cand = as_candidate(candidate)
    if isinstance(system, LinearSystem):
        if isinstance(cand, QuadraticCandidate):
            return quadratic_decrease(system.A, cand.P, values=values, tol=tol)
        system = system.as_numeric()
    if not isinstance(system, NumericSystem):
        raise InvalidArgumentError(bad_arg("system", "a LinearSystem, SymbolicSystem or NumericSystem",
                                           type(system).__name__))
    return _sampled_decrease(system, cand, samples, radius, seed)


def _symbolic_quadratic(system: SymbolicSystem, cand: object, values, tol: float) -> Evidence | None:
    """Exact answer when ``V`` and ``Delta V`` are quadratic forms in the state, else None."""
    x = sp.Matrix(system.state)
    V = cand.expr(system.state).subs(values or {})
    dV = delta_v(system, cand).subs(values or {})
    forms = []
    for e in (V, dV):
        poly = sp.Poly(e, *system.state) if e.is_polynomial(*system.state) else None
        if poly is None or not all(sum(m) == 2 for m in poly.monoms()):
            return None
        forms.append(sp.hessian(e, x) / 2)
    P, D = forms
    if P.free_symbols or D.free_symbols:
        conds = sylvester_conditions(P) + sylvester_conditions(-D)
        verdict = (Verdict.HOLDS if all(c is sp.true for c in conds) else
                   Verdict.FAILS if any(c is sp.false for c in conds) else Verdict.UNKNOWN)
        return Evidence(verdict, "sylvester", math.nan, tuple(str(c) for c in conds), {}, {})
    P, D = np.array(P.evalf(), dtype=np.float64), np.array(D.evalf(), dtype=np.float64)
    lam_P = np.linalg.eigvalsh(P)
    scale = float(max(abs(lam_P[0]), abs(lam_P[-1]))) or 1.0
    margin = float(min(-np.linalg.eigvalsh(D)[-1], lam_P[0])) / scale
    return Evidence(verdict_from_margin(margin, tol), "quadratic-form", margin,
                    ("V > 0", "Delta V < 0"), {}, {"delta_v": str(dV)[:500]})


def _sampled_decrease(system: NumericSystem, cand: LyapunovCandidate, samples: int,
                      radius: float, seed: int) -> Evidence:
    """Search ``samples`` seeded points on spheres of radius ``radius * 10^[-3, 0]`` for a
    counterexample ``V(x) <= 0`` or ``Delta V(x) >= 0``; none found is UNKNOWN (no proof)."""
    if not (isinstance(samples, int) and samples >= 1):
        raise InvalidArgumentError(bad_arg("samples", "an int >= 1", samples))
    rng = np.random.default_rng(seed)
    worst, nonfinite = -math.inf, 0
    for _ in range(samples):
        u = rng.standard_normal(system.n)
        x = radius * 10 ** rng.uniform(-3, 0) * u / np.linalg.norm(u)
        V, V_next = _call(cand, x), _call(cand, system.step(x))
        if not (math.isfinite(V) and math.isfinite(V_next)):
            nonfinite += 1
            continue
        slack = max(-V, V_next - V) / max(abs(V), 1e-300)
        if slack >= 0:
            return Evidence(Verdict.FAILS, "sampling", -slack, ("V(x) > 0", "V(f(x)) - V(x) < 0"), {},
                            {"witness": x.tolist(), "V": V, "V_next": V_next})
        worst = max(worst, slack)
    return Evidence(Verdict.UNKNOWN, "sampling", math.nan, ("V(x) > 0", "V(f(x)) - V(x) < 0"), {},
                    {"samples": samples, "nonfinite": nonfinite, "worst_relative_slack": worst})


def _call(cand: LyapunovCandidate, x: np.ndarray) -> float:
    try:
        return float(cand.value(x))
    except LyactlError as exc:
        if isinstance(exc, (UnresolvedSymbolError, ShapeError, InvalidArgumentError)):
            raise
        return math.nan
    except (ArithmeticError, ValueError):
        return math.nan
    except Exception as exc:  # user code: report as a named argument error, never a crash
        raise InvalidArgumentError(bad_arg("candidate", "a callable that evaluates V(x)",
                                           f"{type(exc).__name__}: {exc}")) from exc
