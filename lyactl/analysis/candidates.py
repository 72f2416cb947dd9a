"""Lyapunov candidates ``V(x)``: quadratic, sympy expression, or any Python callable.

A candidate is anything with ``value(x: ndarray) -> float`` (the :class:`LyapunovCandidate`
Protocol); no subclassing needed. :func:`as_candidate` wraps what a user hands in:

* an ``(n, n)`` numpy array or sympy Matrix ``P``   -> :class:`QuadraticCandidate` ``x^T P x``
* a sympy expression in the state symbols           -> :class:`ExprCandidate`
* a plain callable ``x -> float``                   -> :class:`CallableCandidate` (numeric only)
* an object that already has ``value``              -> itself

A candidate must depend on the state it certifies: ``P = 0`` and an expression free of the
state symbols are refused at definition (a constant ``V`` certifies nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import sympy as sp

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, UnresolvedSymbolError, bad_arg
from lyactl.expr import to_sympy

__all__ = [
    "LyapunovCandidate",
    "SymbolicCandidate",
    "QuadraticCandidate",
    "ExprCandidate",
    "CallableCandidate",
    "as_candidate",
]


@runtime_checkable
class LyapunovCandidate(Protocol):
    """A function ``V: R^n -> R`` evaluated on ``(n,)`` float arrays."""

    def value(self, x: np.ndarray) -> float:
        ...


@runtime_checkable
class SymbolicCandidate(Protocol):
    """A candidate that can also give ``V`` as a sympy expression in given state symbols."""

    def value(self, x: np.ndarray) -> float:
        ...

    def expr(self, state: Sequence[sp.Symbol]) -> sp.Expr:
        ...


@dataclass(frozen=True)
class QuadraticCandidate:
    """``V(x) = x^T P x`` with ``P`` symmetric ``(n, n)``: numpy (numeric) or sympy (symbolic).

    A non-symmetric ``P`` is an error (``x^T P x`` only sees its symmetric part; we do not
    silently symmetrise).
    """

    P: np.ndarray | sp.ImmutableMatrix

    def __post_init__(self) -> None:
        if isinstance(self.P, sp.MatrixBase):
            P = sp.ImmutableMatrix(self.P)
            if not P.is_square:
                raise ShapeError(bad_arg("P", "a square matrix", P.shape))
            if sp.simplify(P - P.T) != sp.zeros(*P.shape):
                raise InvalidArgumentError(bad_arg("P", "a symmetric matrix", "P != P^T"))
            if P.is_zero_matrix:
                raise InvalidArgumentError(bad_arg("P", "a nonzero matrix (V = x^T P x must depend on the state)", "P = 0"))
        else:
            from lyactl.analysis.systems import as_square_matrix

            P = as_square_matrix(self.P, "P")
            if not np.allclose(P, P.T, rtol=1e-12, atol=1e-12 * max(1.0, float(np.max(np.abs(P))))):
                raise InvalidArgumentError(bad_arg("P", "a symmetric matrix", "P != P^T"))
            if not np.any(P):
                raise InvalidArgumentError(bad_arg("P", "a nonzero matrix (V = x^T P x must depend on the state)", "P = 0"))
        object.__setattr__(self, "P", P)

    @property
    def n(self) -> int:
        return int(self.P.shape[0])

    @property
    def is_symbolic(self) -> bool:
        return isinstance(self.P, sp.MatrixBase)

    def numeric_P(self) -> np.ndarray:
        """``P`` as float64; :class:`UnresolvedSymbolError` if it still holds symbols."""
        if not self.is_symbolic:
            return self.P
        if self.P.free_symbols:
            raise UnresolvedSymbolError(bad_arg("P", "numeric entries", sorted(map(str, self.P.free_symbols))))
        return np.array(self.P.evalf(), dtype=np.float64)

    def value(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (self.n,):
            raise ShapeError(bad_arg("x", f"a vector of length {self.n}", x.shape))
        return float(x @ self.numeric_P() @ x)

    def expr(self, state: Sequence[sp.Symbol]) -> sp.Expr:
        if len(state) != self.n:
            raise ShapeError(bad_arg("state", f"{self.n} symbols", len(state)))
        x = sp.Matrix(list(state))
        return sp.expand((x.T * sp.Matrix(self.P) * x)[0, 0])


@dataclass(frozen=True)
class ExprCandidate:
    """``V`` given as a sympy expression in ``state`` (other symbols need ``values``); a
    string is parsed by :func:`lyactl.expr.parse_expr` (no code runs)."""

    V: sp.Expr
    state: tuple[sp.Symbol, ...]

    def __post_init__(self) -> None:
        V = to_sympy(self.V, "V")
        if not isinstance(V, sp.Expr):
            raise InvalidArgumentError(bad_arg("V", "a sympy expression", type(V).__name__))
        state = tuple(self.state)
        if not state or not all(isinstance(s, sp.Symbol) for s in state):
            raise InvalidArgumentError(bad_arg("state", "a non-empty tuple of sympy Symbols", state))
        if not (V.free_symbols & set(state)):
            raise InvalidArgumentError(bad_arg("V", f"a function of the state {list(map(str, state))}", V))
        object.__setattr__(self, "V", V)
        object.__setattr__(self, "state", state)

    def value(self, x: np.ndarray) -> float:
        left = self.V.free_symbols - set(self.state)
        if left:
            raise UnresolvedSymbolError(bad_arg("V", "only state symbols (give values first)", sorted(map(str, left))))
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (len(self.state),):
            raise ShapeError(bad_arg("x", f"a vector of length {len(self.state)}", x.shape))
        return _finite_float(self.V.subs(dict(zip(self.state, map(float, x)))), "V(x)")

    def expr(self, state: Sequence[sp.Symbol]) -> sp.Expr:
        if len(state) != len(self.state):
            raise ShapeError(bad_arg("state", f"{len(self.state)} symbols", len(state)))
        return self.V.subs(dict(zip(self.state, state)), simultaneous=True)


@dataclass(frozen=True)
class CallableCandidate:
    """``V`` given as a Python callable ``x -> float`` (numeric verification only)."""

    fn: Callable[[np.ndarray], float]

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidArgumentError(bad_arg("fn", "a callable x -> float", type(self.fn).__name__))

    def value(self, x: np.ndarray) -> float:
        out = self.fn(np.asarray(x, dtype=np.float64))
        arr = np.asarray(out)
        if arr.size != 1 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InvalidArgumentError(bad_arg("V(x)", "a real scalar", out))
        return float(arr.reshape(()))


def as_candidate(obj: object, state: Sequence[sp.Symbol] | None = None) -> LyapunovCandidate:
    """Wrap ``obj`` as a candidate (see module docstring); ``state`` is needed for an Expr."""
    if isinstance(obj, (QuadraticCandidate, ExprCandidate, CallableCandidate)):
        return obj
    if isinstance(obj, (np.ndarray, sp.MatrixBase)):
        return QuadraticCandidate(obj)
    if isinstance(obj, sp.Basic):
        if state is None:
            raise InvalidArgumentError(bad_arg("state", "the state symbols of the sympy candidate", None))
        return ExprCandidate(obj, tuple(state))
    if isinstance(obj, LyapunovCandidate) and not isinstance(obj, type):
        return obj
    if callable(obj):
        return CallableCandidate(obj)
    raise InvalidArgumentError(bad_arg("candidate", "a matrix P, a sympy expression, a callable or an "
                                       "object with value(x)", type(obj).__name__))


def _finite_float(value: object, name: str) -> float:
    try:
        out = float(value)
    except TypeError as exc:
        raise UnresolvedSymbolError(bad_arg(name, "a number", value)) from exc
    if not math.isfinite(out):
        raise NonFiniteError(bad_arg(name, "a finite value", out))
    return out
