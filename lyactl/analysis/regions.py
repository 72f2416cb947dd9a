"""Closed-form stability regions of the optimizer models, derived by code (never typed in).

Derivation (:func:`derive_region`), for a model ``A(lam) = C0 + lam C1``
(:mod:`lyactl.analysis.optimizers`):

1. the characteristic polynomial ``det(z I - A)`` is rewritten in the dimensionless
   products ``h = eta*lam`` (symbol ``eta_lam``) and ``d = eta*wd`` (symbol ``eta_wd``);
   ``eta`` must cancel (it does for every built-in model, by similarity);
2. Jury's conditions (:mod:`lyactl.analysis.jury`) give ``g_i(h, d, beta) > 0``, valid everywhere;
3. on the hyperparameter domain ``0 <= beta < 1``, ``0 <= d < 1`` each condition is
   simplified: conditions that are provably true on the domain are dropped, conditions
   affine in ``h`` whose slope has a provable sign are solved for ``h``, and bounds on
   ``h`` implied by tighter ones are dropped. Proofs of sign: exact for one variable
   (``solve_univariate_inequality``), interval arithmetic (``AccumBounds``) for several.

A point is classified by the closed form when it lies in the domain and by the raw Jury
conditions otherwise; :meth:`Region.check` compares with ``1 - rho(A)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.analysis.jury import jury_expressions
from lyactl.analysis.optimizers import BETA, ETA, LAM, WD, OptimizerModel, OptimizerParams
from lyactl.analysis.systems import spectral_radius
from lyactl.verdict import Evidence, Verdict, verdict_from_margin

__all__ = ["H", "D", "Z", "DOMAIN", "Region", "derive_region"]

H = sp.Symbol("eta_lam", real=True)
D = sp.Symbol("eta_wd", real=True)
Z = sp.Symbol("z")
DOMAIN: Mapping[sp.Symbol, sp.Interval] = {BETA: sp.Interval.Ropen(0, 1), D: sp.Interval.Ropen(0, 1)}
"""Hyperparameter domain on which the closed form is simplified (read-only by convention)."""


@dataclass(frozen=True)
class Region:
    """The Schur-stability region of one optimizer model in ``(eta*lam, eta*wd, beta)``.

    Attributes
    ----------
    model : str
    char_poly : sympy.Expr        -- ``det(z I - A)`` in ``z, eta_lam, eta_wd, beta``
    jury : tuple of sympy relations -- the raw Jury conditions (valid for all parameters)
    closed_form : sympy Boolean   -- equivalent to ``jury`` on the domain
    domain : sympy Boolean        -- ``0 <= beta < 1 & 0 <= eta_wd < 1``
    """

    model: str
    char_poly: sp.Expr
    jury: tuple[sp.Basic, ...]
    closed_form: sp.Basic
    domain: sp.Basic
    closed_fn: Callable[..., bool] = field(repr=False, compare=False, default=None)
    jury_fn: Callable[..., bool] = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # lambdified twins of closed_form and jury, (eta_lam, eta_wd, beta) -> bool, for speed
        args = (H, D, BETA)
        if self.closed_fn is None:
            object.__setattr__(self, "closed_fn", sp.lambdify(args, self.closed_form, "numpy"))
        if self.jury_fn is None:
            object.__setattr__(self, "jury_fn", sp.lambdify(args, sp.And(*self.jury), "numpy"))

    @property
    def text(self) -> str:
        """The closed form as a string with ``(eta*lam)``, ``(eta*wd)`` written out, and the
        domain it holds on (``beta`` named only for a model whose polynomial has it)."""
        parts = self.closed_form.args if isinstance(self.closed_form, sp.And) else (self.closed_form,)
        domain = "0 <= beta < 1, 0 <= eta*wd < 1" if BETA in self.char_poly.free_symbols else "0 <= eta*wd < 1"
        return " & ".join(_pretty(p) for p in sorted(parts, key=sp.default_sort_key)) + f"   [for {domain}]"

    def at(self, beta: float, eta_wd: float = 0.0) -> sp.Basic:
        """The closed form with ``beta`` and ``eta*wd`` substituted: conditions on ``eta_lam``."""
        return self.closed_form.subs({BETA: sp.nsimplify(beta), D: sp.nsimplify(eta_wd)})

    def contains(self, eta: float, lam: float, p: OptimizerParams) -> bool:
        """Does ``(eta*lam, eta*wd, beta)`` satisfy the region (strict inequalities)?"""
        point = {H: eta * lam, D: p.eta * p.wd, BETA: p.beta}
        if not all(math.isfinite(v) for v in point.values()):
            raise InvalidArgumentError(bad_arg("point", "finite eta*lam, eta*wd, beta", point))
        in_domain = 0 <= point[BETA] < 1 and 0 <= point[D] < 1
        fn = self.closed_fn if in_domain else self.jury_fn
        return bool(fn(point[H], point[D], point[BETA]))

    def check(self, model: OptimizerModel, lam: float, p: OptimizerParams, tol: float = 1e-9) -> Evidence:
        """Verdict at a point: ``margin = 1 - rho(A)``; the closed form must agree with it.

        ``|margin| <= tol`` or a disagreement gives UNKNOWN (the latter noted in details).
        """
        rho = spectral_radius(model.matrix(lam, p))
        margin = 1.0 - rho
        inside = self.contains(p.eta, lam, p)
        verdict = verdict_from_margin(margin, tol)
        agree = verdict is Verdict.UNKNOWN or (verdict is Verdict.HOLDS) == inside
        if not agree:
            verdict = Verdict.UNKNOWN
        return Evidence(verdict, "region+spectral-radius", margin, (self.text,), {},
                        {"spectral_radius": rho, "in_region": inside, "agree": agree,
                         "eta_lam": p.eta * lam, "beta": p.beta, "eta_wd": p.eta * p.wd})


def derive_region(model: OptimizerModel) -> Region:
    """Derive the stability region of ``model`` (see module docstring)."""
    poly = sp.expand(model.symbolic_matrix().charpoly(Z).as_expr())
    poly = sp.expand(sp.simplify(poly.subs({LAM: H / ETA, WD: D / ETA})))
    if ETA in poly.free_symbols:
        raise InvalidArgumentError(bad_arg("model", "a characteristic polynomial in eta*lam, eta*wd", poly))
    g = jury_expressions(sp.Poly(poly, Z).all_coeffs())
    jury = tuple(sp.StrictGreaterThan(e, 0) for e in g if not (e.is_number and e > 0))
    domain = sp.And(*(sp.Contains(v, I).as_set().as_relational(v) for v, I in DOMAIN.items()))
    closed = sp.And(*_simplify_on_domain(g))
    return Region(model.name, poly, jury, closed, domain)


def _simplify_on_domain(g: tuple[sp.Expr, ...]) -> list[sp.Basic]:
    lower, upper, kept = [], [], []
    for e in g:
        e = sp.factor(sp.simplify(e))
        if _sign(e) > 0:
            continue  # true on the whole domain
        poly = sp.Poly(sp.expand(e), H) if H in e.free_symbols else None
        if poly is not None and poly.degree() == 1:
            c1, c0 = poly.all_coeffs()
            s = _sign(c1)
            if s != 0:
                bound = sp.factor(sp.simplify(-c0 / c1))
                (lower if s > 0 else upper).append(bound)
                continue
        kept.append(e)
    lower = _tightest(lower, +1)
    upper = _tightest(upper, -1)
    kept = [e for e in kept if not _implied(e, lower, upper)]
    return ([sp.StrictGreaterThan(H, b) for b in lower] + [sp.StrictLessThan(H, b) for b in upper]
            + [sp.StrictGreaterThan(e, 0) for e in kept])


def _tightest(bounds: list[sp.Expr], direction: int) -> list[sp.Expr]:
    """Drop bounds provably looser than another (``direction`` +1: keep the largest lower)."""
    out = []
    for i, b in enumerate(bounds):
        looser = any(_sign(direction * (c - b)) > 0 or (j < i and sp.simplify(c - b) == 0)
                     for j, c in enumerate(bounds) if j != i)
        if not looser:
            out.append(b)
    return out


def _implied(e: sp.Expr, lower: list[sp.Expr], upper: list[sp.Expr]) -> bool:
    """``e > 0`` is implied when ``e`` is affine in ``h`` and positive at a bound it is
    monotone away from (slope >= 0 and ``e(L) > 0``, or slope <= 0 and ``e(U) > 0``)."""
    if H not in e.free_symbols:
        return False
    poly = sp.Poly(sp.expand(e), H)
    if poly.degree() != 1:
        return False
    c1 = poly.all_coeffs()[0]
    if _sign(c1, strict=False) > 0 and any(_sign(e.subs(H, L)) > 0 for L in lower):
        return True
    return _sign(-c1, strict=False) > 0 and any(_sign(e.subs(H, U)) > 0 for U in upper)


def _sign(e: sp.Expr, strict: bool = True) -> int:
    """+1 if ``e > 0`` (``>= 0`` when not strict) on all of DOMAIN, -1 if ``e < 0``, else 0."""
    e = sp.simplify(e)
    free = e.free_symbols
    if not free:
        v = float(e)
        return 1 if (v > 0 or (not strict and v >= 0)) else -1 if v < 0 else 0
    if not free <= set(DOMAIN):
        return 0
    for sgn in (1, -1):
        rel = (sgn * e > 0) if strict else (sgn * e >= 0)
        if len(free) == 1:
            v = next(iter(free))
            try:
                sol = sp.solve_univariate_inequality(rel, v, relational=False)
            except (NotImplementedError, ValueError, TypeError):
                continue
            if DOMAIN[v].is_subset(sol):
                return sgn
        else:
            box = {v: sp.AccumBounds(DOMAIN[v].inf, DOMAIN[v].sup) for v in free}
            for form in [sgn * e] + [sp.horner(sgn * e, wrt=v) for v in sorted(free, key=str)]:
                low = form.subs(box)  # interval arithmetic: a sound (conservative) lower bound
                low = low.min if isinstance(low, sp.AccumBounds) else low
                if low.is_number and (low > 0 or (not strict and low >= 0)):
                    return sgn
    return 0


def _pretty(rel: sp.Basic) -> str:
    text = sp.sstr(rel)
    return text.replace("eta_lam", "(eta*lam)").replace("eta_wd", "(eta*wd)")
