"""Discrete-time systems ``x_{k+1} = f(x_k[, u_k; params])``, numeric and symbolic.

Three forms of one concept:

* :class:`NumericSystem`  -- ``f`` is a Python callable on numpy arrays;
* :class:`LinearSystem`   -- ``x_{k+1} = A x_k + B u_k`` (numpy), convertible to and from a
  discrete-time :class:`control.StateSpace` (``dt=True`` or ``dt > 0``);
* :class:`SymbolicSystem` -- ``f`` is a sympy column in state, input and parameter symbols;
  :meth:`SymbolicSystem.numeric` lambdifies it to its numeric twin and
  :meth:`SymbolicSystem.linearize` returns the Jacobian at an equilibrium.

Convention everywhere: states are column vectors of shape ``(n,)`` (numeric) or ``(n, 1)``
(sympy); ``A`` acts from the left, ``x_{k+1} = A x_k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, UnresolvedSymbolError, bad_arg

__all__ = [
    "as_square_matrix",
    "spectral_radius",
    "NumericSystem",
    "LinearSystem",
    "SymbolicSystem",
]


def as_square_matrix(A: object, name: str = "A") -> np.ndarray:
    """Return ``A`` as a finite float64 ``(n, n)`` array or raise a named lyactl error.

    Only real numeric arrays are accepted (no silent coercion of strings, objects or complex);
    a ragged nested list is a :class:`ShapeError`.
    """
    arr = _as_array(A, name)
    if not _is_real(arr):
        raise InvalidArgumentError(bad_arg(name, "a real numeric matrix", arr.dtype.name))
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ShapeError(bad_arg(name, "a non-empty square matrix (n, n)", arr.shape))
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(bad_arg(name, "finite entries", "NaN or inf"))
    return arr


def spectral_radius(A: np.ndarray) -> float:
    """``max |eig(A)|`` (one dense eigenvalue solve, O(n^3))."""
    return float(np.max(np.abs(np.linalg.eigvals(A))))


@dataclass(frozen=True)
class NumericSystem:
    """``x_{k+1} = f(x_k)`` with ``f: R^n -> R^n`` a plain callable on ``(n,)`` arrays."""

    f: Callable[[np.ndarray], np.ndarray]
    n: int
    name: str = "system"

    def __post_init__(self) -> None:
        if not callable(self.f):
            raise InvalidArgumentError(bad_arg("f", "a callable x -> x_next", type(self.f).__name__))
        if not isinstance(self.n, int) or self.n < 1:
            raise InvalidArgumentError(bad_arg("n", "an int >= 1", self.n))

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step ``f(x)``; raises :class:`ShapeError` if ``f`` returns the wrong shape."""
        x = _as_state(x, self.n)
        out = np.asarray(self.f(x), dtype=np.float64).reshape(-1)
        if out.shape != (self.n,):
            raise ShapeError(bad_arg("f(x)", f"an array of shape ({self.n},)", out.shape))
        return out

    def simulate(self, x0: np.ndarray, steps: int) -> np.ndarray:
        """Trajectory ``[x_0, ..., x_steps]`` of shape ``(steps + 1, n)``."""
        traj = [_as_state(x0, self.n, "x0")]
        for _ in range(steps):
            traj.append(self.step(traj[-1]))
        return np.stack(traj)


@dataclass(frozen=True)
class LinearSystem:
    """``x_{k+1} = A x_k + B u_k`` (``B`` of shape ``(n, m)``, ``m = 0`` when absent)."""

    A: np.ndarray
    B: np.ndarray | None = None
    name: str = "linear"

    def __post_init__(self) -> None:
        A = as_square_matrix(self.A, "A")
        object.__setattr__(self, "A", A)
        if self.B is not None:
            B = np.asarray(self.B, dtype=np.float64)
            if B.ndim == 1:
                B = B.reshape(-1, 1)
            if B.ndim != 2 or B.shape[0] != A.shape[0]:
                raise ShapeError(bad_arg("B", f"a matrix with {A.shape[0]} rows", B.shape))
            if not np.all(np.isfinite(B)):
                raise NonFiniteError(bad_arg("B", "finite entries", "NaN or inf"))
            object.__setattr__(self, "B", B)

    @property
    def n(self) -> int:
        return int(self.A.shape[0])

    def step(self, x: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """``A x + B u`` (``u`` required iff ``B`` is given)."""
        x = _as_state(x, self.n)
        if self.B is None:
            if u is not None:
                raise InvalidArgumentError(bad_arg("u", "None (the system has no input B)", u))
            return self.A @ x
        if u is None:
            raise InvalidArgumentError(bad_arg("u", f"an input of shape ({self.B.shape[1]},)", None))
        return self.A @ x + self.B @ _as_state(u, self.B.shape[1], "u")

    def spectral_radius(self) -> float:
        return spectral_radius(self.A)

    def as_numeric(self) -> NumericSystem:
        """The autonomous numeric twin ``x -> A x``."""
        A = self.A
        return NumericSystem(lambda x: A @ x, self.n, self.name)

    def to_statespace(self, dt: bool | float = True):
        """A discrete-time ``control.StateSpace`` (``C = I``, ``D = 0``; ``B = 0`` column if absent)."""
        import control  # a declared dependency; imported here to keep module import light

        if not (dt is True or (isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0)):
            raise InvalidArgumentError(bad_arg("dt", "True or a sampling time > 0", dt))
        B = self.B if self.B is not None else np.zeros((self.n, 1))
        return control.ss(self.A, B, np.eye(self.n), np.zeros((self.n, B.shape[1])), dt)

    @classmethod
    def from_statespace(cls, sys: object, name: str = "linear") -> "LinearSystem":
        """Take ``A, B`` of a discrete-time ``control.StateSpace``; continuous time is an error."""
        dt = getattr(sys, "dt", None)
        if not hasattr(sys, "A") or dt is None or dt is False or dt == 0:
            raise InvalidArgumentError(bad_arg("sys", "a discrete-time control.StateSpace (dt=True or dt>0)", dt))
        return cls(np.asarray(sys.A), np.asarray(sys.B), name)


@dataclass(frozen=True)
class SymbolicSystem:
    """``x_{k+1} = f(x_k, u_k; params)`` with ``f`` a sympy column of length ``n``.

    Attributes
    ----------
    f : sympy.ImmutableMatrix, shape (n, 1)
    state : tuple of sympy.Symbol, length n (the order of ``x``)
    inputs : tuple of sympy.Symbol (the order of ``u``; may be empty)
    params : tuple of sympy.Symbol (everything else ``f`` may hold)
    """

    f: sp.ImmutableMatrix
    state: tuple[sp.Symbol, ...]
    inputs: tuple[sp.Symbol, ...] = ()
    params: tuple[sp.Symbol, ...] = ()
    name: str = "symbolic"

    def __post_init__(self) -> None:
        f = sp.ImmutableMatrix(self.f)
        if f.shape[1] != 1 and f.shape[0] == 1:
            f = f.T
        if f.shape != (len(self.state), 1):
            raise ShapeError(bad_arg("f", f"a column of length len(state)={len(self.state)}", f.shape))
        object.__setattr__(self, "f", f)
        known = set(self.state) | set(self.inputs) | set(self.params)
        extra = f.free_symbols - known
        if extra:
            raise UnresolvedSymbolError(bad_arg("f", "only state, input and parameter symbols",
                                                sorted(map(str, extra))))

    @classmethod
    def from_matrix(cls, A: sp.Matrix, state: Sequence[sp.Symbol], name: str = "linear") -> "SymbolicSystem":
        """The linear system ``x+ = A x``; parameters are A's free symbols (sorted by name)."""
        A = sp.ImmutableMatrix(A)
        x = sp.Matrix(list(state))
        params = tuple(sorted(A.free_symbols - set(state), key=str))
        return cls(sp.ImmutableMatrix(A * x), tuple(state), (), params, name)

    @property
    def n(self) -> int:
        return len(self.state)

    def jacobian(self) -> sp.Matrix:
        """``df/dx`` (sympy, shape (n, n))."""
        return self.f.jacobian(sp.Matrix(self.state))

    def numeric(self, values: Mapping[sp.Symbol, float] | None = None, u: Sequence[float] | None = None) -> NumericSystem:
        """Lambdify to the numeric twin with parameters (and a constant input ``u``) given."""
        expr = self._substituted(values, u)
        fn = sp.lambdify([self.state], list(expr), modules="numpy")
        return NumericSystem(lambda x: np.asarray(fn(x), dtype=np.float64).reshape(-1), self.n, self.name)

    def linearize(self, x_eq: Sequence[float], values: Mapping[sp.Symbol, float] | None = None,
                  u_eq: Sequence[float] | None = None, tol: float = 1e-9) -> LinearSystem:
        """``A = df/dx`` at an equilibrium ``x_eq`` (``f(x_eq) = x_eq``); error otherwise.

        Returns a :class:`LinearSystem` in deviation coordinates ``dx+ = A dx``.
        """
        x_eq = _as_state(x_eq, self.n, "x_eq")
        expr = self._substituted(values, u_eq)
        point = dict(zip(self.state, map(float, x_eq)))
        fx = np.array([float(e.subs(point)) for e in expr], dtype=np.float64)
        gap = float(np.max(np.abs(fx - x_eq)))
        if not gap <= tol * max(1.0, float(np.max(np.abs(x_eq)))):
            raise InvalidArgumentError(bad_arg("x_eq", "an equilibrium with f(x_eq) = x_eq", f"|f(x)-x|={gap:.3g}"))
        J = sp.ImmutableMatrix(expr).jacobian(sp.Matrix(self.state)).subs(point)
        return LinearSystem(np.array(J.evalf(), dtype=np.float64), None, self.name)

    def _substituted(self, values: Mapping[sp.Symbol, float] | None, u: Sequence[float] | None) -> sp.Matrix:
        values = dict(values or {})
        if self.inputs:
            if u is None:
                raise UnresolvedSymbolError(bad_arg("u", f"values for inputs {list(map(str, self.inputs))}", None))
            u = _as_state(u, len(self.inputs), "u")
            values.update(zip(self.inputs, map(float, u)))
        for key, val in values.items():
            if not (isinstance(val, (int, float)) and math.isfinite(val)):
                raise NonFiniteError(bad_arg(f"values[{key}]", "a finite real number", val))
        expr = self.f.subs(values)
        left = expr.free_symbols - set(self.state)
        if left:
            raise UnresolvedSymbolError(bad_arg("values", "a value for every parameter", f"missing {sorted(map(str, left))}"))
        return expr


def _as_state(x: object, n: int, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1) if _is_real(x, name) else None
    if arr is None:
        raise InvalidArgumentError(bad_arg(name, "a real numeric vector", type(x).__name__))
    if arr.shape != (n,):
        raise ShapeError(bad_arg(name, f"a vector of length {n}", arr.shape))
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(bad_arg(name, "finite entries", "NaN or inf"))
    return arr


def _as_array(x: object, name: str) -> np.ndarray:
    """``np.asarray(x)``; numpy's bare ValueError on ragged nesting becomes a named ShapeError."""
    try:
        return np.asarray(x)
    except ValueError as exc:
        raise ShapeError(bad_arg(name, "a rectangular (non-ragged) array", _describe(x))) from exc


def _describe(x: object) -> str:
    """Row lengths of a ragged nested list (the first few), else the type name."""
    if isinstance(x, (list, tuple)):
        return f"rows of lengths {[len(r) if hasattr(r, '__len__') else 1 for r in x[:8]]}"
    return type(x).__name__


def _is_real(x: object, name: str = "x") -> bool:
    arr = _as_array(x, name)
    return bool(np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating))
