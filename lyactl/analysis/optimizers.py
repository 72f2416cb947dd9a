"""Optimizers on a quadratic mode, as linear discrete-time systems.

On the loss ``L(x) = x^T H x / 2`` (gradient ``g = H x``) every optimizer below is linear in
its state, and its update matrix is *affine in the curvature*::

    scalar lam:        A(lam) = C0 + lam * C1                     (s x s, s = state slots)
    matrix H (n x n):  A(H)   = kron(C0, I_n) + kron(C1, H)       (s n x s n)
    diagonal lam (n,): the matrix case with H = diag(lam)

State ordering (slot-major for matrices): ``z = (x_1..x_n, v_1..v_n)``; ``x`` is the
parameter, ``v`` the optimizer buffer exactly as PyTorch stores it.

* ``gd``        : ``x+ = x - eta (lam + wd) x``.  State ``(x)``.
* ``heavy_ball``: PyTorch SGD momentum, ``v+ = beta v + g``, ``x+ = x - eta v+``, with
  ``g = (lam + wd) x`` (coupled L2 = curvature shift).  State ``(x, v)``.
* ``nesterov``  : PyTorch SGD(nesterov=True), ``v+ = beta v + g``,
  ``x+ = x - eta (g + beta v+)``, ``g = (lam + wd) x``.  State ``(x, v)``.
* ``adam``      : Adam/AdamW with the second-moment preconditioner ``D`` held fixed and bias
  correction omitted (the asymptotic regime ``k -> inf``, where ``1 - beta^k -> 1``):
  ``m+ = beta m + (1 - beta) g``, ``x+ = x - eta m+ - eta wd x`` (decoupled weight decay,
  AdamW). ``lam`` is the curvature *after* the preconditioner (``D^{-1} H``) and ``m`` the
  preconditioned first moment ``D^{-1} m``; ``beta`` plays the role of ``beta1``.
  State ``(x, m)``.

Symbols (module constants): ``eta`` step size, ``lam`` curvature, ``beta`` momentum /
``beta1``, ``wd`` weight decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg
from lyactl.analysis.systems import LinearSystem, SymbolicSystem

__all__ = [
    "ETA", "LAM", "BETA", "WD",
    "OptimizerParams",
    "OptimizerModel",
    "gd",
    "heavy_ball",
    "nesterov",
    "adam",
    "ALL_MODELS",
]

ETA, LAM, BETA, WD = sp.symbols("eta lam beta wd", real=True)


@dataclass(frozen=True)
class OptimizerParams:
    """Validated hyperparameters: ``eta >= 0``, ``0 <= beta < 1``, ``wd >= 0``, all finite."""

    eta: float
    beta: float = 0.0
    wd: float = 0.0

    def __post_init__(self) -> None:
        for name in ("eta", "beta", "wd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgumentError(bad_arg(name, "a real number", value))
            if not math.isfinite(value):
                raise NonFiniteError(bad_arg(name, "a finite number", value))
        if self.eta < 0:
            raise InvalidArgumentError(bad_arg("eta", "a step size >= 0", self.eta))
        if not 0 <= self.beta < 1:
            raise InvalidArgumentError(bad_arg("beta", "a momentum in [0, 1)", self.beta))
        if self.wd < 0:
            raise InvalidArgumentError(bad_arg("wd", "a weight decay >= 0", self.wd))


@dataclass(frozen=True)
class OptimizerModel:
    """An optimizer on a quadratic mode: ``A(lam) = C0 + lam C1`` (see module docstring).

    ``C0`` and ``C1`` are sympy matrices in ``eta, beta, wd``; ``slots`` names the state
    slots in order (e.g. ``("x", "v")``).
    """

    name: str
    slots: tuple[str, ...]
    C0: sp.ImmutableMatrix
    C1: sp.ImmutableMatrix

    @property
    def params(self) -> tuple[sp.Symbol, ...]:
        """The hyperparameter symbols this model uses (subset of eta, beta, wd)."""
        free = (self.C0.free_symbols | self.C1.free_symbols)
        return tuple(s for s in (ETA, BETA, WD) if s in free)

    def symbolic_matrix(self) -> sp.ImmutableMatrix:
        """``A(lam) = C0 + lam C1`` as a sympy matrix in ``eta, lam, beta, wd``."""
        return sp.ImmutableMatrix(self.C0 + LAM * self.C1)

    def char_poly(self, z: sp.Symbol) -> sp.Poly:
        """``det(z I - A(lam))`` as a sympy Poly in ``z``."""
        return self.symbolic_matrix().charpoly(z)

    def symbolic_system(self) -> SymbolicSystem:
        """The model as a :class:`SymbolicSystem` in state symbols ``x, v`` (scalar mode)."""
        state = sp.symbols(" ".join(self.slots), real=True)
        state = state if isinstance(state, tuple) else (state,)
        return SymbolicSystem.from_matrix(self.symbolic_matrix(), state, self.name)

    def coefficients(self, p: OptimizerParams) -> tuple[np.ndarray, np.ndarray]:
        """Numeric ``(C0, C1)`` at hyperparameters ``p`` (float64, shape (s, s))."""
        if not isinstance(p, OptimizerParams):
            raise InvalidArgumentError(bad_arg("p", "an OptimizerParams", type(p).__name__))
        sub = {ETA: p.eta, BETA: p.beta, WD: p.wd}
        return (np.array(self.C0.subs(sub), dtype=np.float64), np.array(self.C1.subs(sub), dtype=np.float64))

    def matrix(self, curvature: float | np.ndarray, p: OptimizerParams) -> np.ndarray:
        """Numeric update matrix ``A`` at ``curvature`` (scalar, ``(n,)`` diagonal or ``(n, n)``).

        Returns shape ``(s, s)`` for a scalar, else ``(s n, s n)`` in slot-major order.
        """
        C0, C1 = self.coefficients(p)
        H = _as_curvature(curvature)
        if H.ndim == 0:
            return C0 + float(H) * C1
        if H.ndim == 1:
            H = np.diag(H)
        return np.kron(C0, np.eye(H.shape[0])) + np.kron(C1, H)

    def system(self, curvature: float | np.ndarray, p: OptimizerParams) -> LinearSystem:
        """The autonomous :class:`LinearSystem` ``z+ = A z``."""
        return LinearSystem(self.matrix(curvature, p), None, self.name)


def _as_curvature(curvature: object) -> np.ndarray:
    if isinstance(curvature, bool):
        raise InvalidArgumentError(bad_arg("curvature", "a real number or array", curvature))
    H = np.asarray(curvature)
    if not (np.issubdtype(H.dtype, np.integer) or np.issubdtype(H.dtype, np.floating)):
        raise InvalidArgumentError(bad_arg("curvature", "a real number or array", H.dtype.name))
    H = H.astype(np.float64)
    if H.ndim > 2 or (H.ndim == 2 and H.shape[0] != H.shape[1]) or H.size == 0:
        raise ShapeError(bad_arg("curvature", "a scalar, an (n,) diagonal or an (n, n) matrix", H.shape))
    if not np.all(np.isfinite(H)):
        raise NonFiniteError(bad_arg("curvature", "finite entries", "NaN or inf"))
    return H


def _model(name: str, slots: tuple[str, ...], A: sp.Matrix) -> OptimizerModel:
    """Split an update matrix that is affine in ``lam`` into ``C0 + lam C1`` (checked)."""
    A = sp.expand(sp.Matrix(A))
    C1 = A.diff(LAM)
    C0 = A.subs(LAM, 0)
    if sp.simplify(C0 + LAM * C1 - A) != sp.zeros(*A.shape):
        raise AssertionError(f"{name}: update matrix is not affine in lam")
    return OptimizerModel(name, slots, sp.ImmutableMatrix(C0), sp.ImmutableMatrix(C1))


def gd() -> OptimizerModel:
    """Gradient descent with coupled L2: ``x+ = (1 - eta (lam + wd)) x``."""
    return _model("gd", ("x",), sp.Matrix([[1 - ETA * (LAM + WD)]]))


def heavy_ball() -> OptimizerModel:
    """PyTorch SGD momentum: ``v+ = beta v + (lam + wd) x``, ``x+ = x - eta v+``; state (x, v)."""
    g = LAM + WD  # gradient per unit x
    return _model("heavy-ball", ("x", "v"), sp.Matrix([[1 - ETA * g, -ETA * BETA], [g, BETA]]))


def nesterov() -> OptimizerModel:
    """PyTorch Nesterov: ``v+ = beta v + g``, ``x+ = x - eta (g + beta v+)``; state (x, v)."""
    g = LAM + WD
    return _model("nesterov", ("x", "v"),
                  sp.Matrix([[1 - ETA * g * (1 + BETA), -ETA * BETA**2], [g, BETA]]))


def adam() -> OptimizerModel:
    """Adam/AdamW, fixed preconditioner, no bias correction: state (x, m), see module doc."""
    return _model("adam", ("x", "m"),
                  sp.Matrix([[1 - ETA * WD - ETA * (1 - BETA) * LAM, -ETA * BETA],
                             [(1 - BETA) * LAM, BETA]]))


ALL_MODELS: tuple[Callable[[], OptimizerModel], ...] = (gd, heavy_ball, nesterov, adam)
"""Constructors of every built-in model (a tuple of functions, not a registry)."""
