"""First-order optimizers as Lur'e systems: a linear iteration in feedback with a gradient.

An iteration that evaluates one gradient per step is, per coordinate,

    xi_{k+1} = A xi_k + B u_k,     y_k = C xi_k,     u_k = grad f(y_k),

with ``A`` (n, n), ``B`` (n, 1), ``C`` (1, n). On ``f`` in ``R^d`` the matrices act as
``A (x) I_d`` etc. (Kronecker lift; Lessard, Recht & Packard 2016, Sec. 4.2), so a
certificate for ``d = 1`` matrices lifts to every ``d`` as ``P (x) I_d``. On a quadratic
``f(y) = lam y^2 / 2`` the loop closes to ``xi+ = (A + lam B C) xi``: this is the update
matrix ``C0 + lam C1`` of :mod:`lyactl.analysis.optimizers`, whose curvature term factors as
``C1 = B C`` with ``C`` picking the slot ``x`` (the gradient is taken at the parameter).

The PyTorch parametrisations used there coincide with the textbook ones: heavy-ball is
``x+ = x - eta g(x) + beta (x - x_prev)`` and PyTorch's Nesterov obeys the same two-step
recurrence as ``x+ = y - eta g(y), y = x + beta (x - x_prev)`` in the variable ``y`` (same
transfer function ``u -> y``), so rates over a function class agree with Lessard et al.'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams, gd, heavy_ball, nesterov
from lyactl.analysis.systems import as_square_matrix, spectral_radius
from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, UnsupportedModelError, bad_arg

__all__ = [
    "LureSystem",
    "from_model",
    "gd_system",
    "heavy_ball_system",
    "nesterov_system",
    "check_class",
    "quadratic_rate",
    "tuned_gd",
    "tuned_heavy_ball",
    "tuned_nesterov",
]


@dataclass(frozen=True, eq=False)
class LureSystem:
    """``xi+ = A xi + B u, y = C xi, u = grad f(y)``; ``B`` stored (n, 1), ``C`` stored (1, n)."""

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    name: str = "lure"

    def __post_init__(self) -> None:
        A = as_square_matrix(self.A, "A")
        n = A.shape[0]
        object.__setattr__(self, "A", A)
        for label, shape in (("B", (n, 1)), ("C", (1, n))):
            M = np.asarray(getattr(self, label))
            if not (np.issubdtype(M.dtype, np.integer) or np.issubdtype(M.dtype, np.floating)):
                raise InvalidArgumentError(bad_arg(label, "a real numeric array", M.dtype.name))
            if M.size != n or M.ndim > 2 or (M.ndim == 2 and 1 not in M.shape):
                raise ShapeError(bad_arg(label, f"an array of shape {shape} (or ({n},))", M.shape))
            M = M.astype(np.float64).reshape(shape)
            if not np.all(np.isfinite(M)):
                raise NonFiniteError(bad_arg(label, "finite entries", "NaN or inf"))
            object.__setattr__(self, label, M)

    @property
    def n(self) -> int:
        """State dimension per coordinate."""
        return int(self.A.shape[0])

    def closed_loop(self, lam: float) -> np.ndarray:
        """``A + lam B C``: the update on the quadratic ``f(y) = lam y^2 / 2`` (n, n)."""
        return self.A + float(lam) * (self.B @ self.C)

    def fixed_points_are_stationary(self, tol: float = 1e-9) -> bool:
        """Whether some ``xi`` has ``A xi = xi`` and ``C xi = 1`` (least squares, residual
        ``<= tol``): then every minimiser ``y*`` of ``f`` is a fixed point ``(xi* = y* xi, u* = 0)``,
        so a contraction certificate means convergence to the minimiser, not merely to a point."""
        M = np.vstack([self.A - np.eye(self.n), self.C])
        rhs = np.zeros(self.n + 1)
        rhs[-1] = 1.0
        xi = np.linalg.lstsq(M, rhs, rcond=None)[0]
        return bool(np.linalg.norm(M @ xi - rhs) <= tol)


def from_model(model: OptimizerModel, p: OptimizerParams) -> LureSystem:
    """The Lur'e form of an optimizer model: ``A = C0``, ``C1 = B C`` with ``C = e_x``.

    Raises :class:`UnsupportedModelError` if the curvature term does not factor that way
    (the gradient is not taken at the slot ``x`` alone).
    """
    if "x" not in model.slots:
        raise UnsupportedModelError(bad_arg("model.slots", "a slot named 'x'", model.slots))
    C0, C1 = model.coefficients(p)
    i = model.slots.index("x")
    C = np.zeros((1, len(model.slots)))
    C[0, i] = 1.0
    B = C1[:, [i]]
    if not np.allclose(B @ C, C1, rtol=0.0, atol=1e-14):
        raise UnsupportedModelError(bad_arg("model", "a curvature term C1 = B e_x^T", C1.tolist()))
    return LureSystem(C0, B, C, model.name)


def gd_system(eta: float) -> LureSystem:
    """Gradient descent ``x+ = x - eta grad f(x)``: ``A = 1, B = -eta, C = 1``."""
    return from_model(gd(), OptimizerParams(eta))


def heavy_ball_system(eta: float, beta: float) -> LureSystem:
    """Heavy-ball (PyTorch SGD momentum), state ``(x, v)``."""
    return from_model(heavy_ball(), OptimizerParams(eta, beta))


def nesterov_system(eta: float, beta: float) -> LureSystem:
    """Nesterov (PyTorch ``nesterov=True``), state ``(x, v)``."""
    return from_model(nesterov(), OptimizerParams(eta, beta))


def check_class(m: float, L: float) -> None:
    """Validate the class ``S(m, L)``: finite, ``0 <= m <= L``, ``L > 0`` (names the argument)."""
    for name, value in (("m", m), ("L", L)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(bad_arg(name, "a real number", value))
        if not math.isfinite(value):
            raise NonFiniteError(bad_arg(name, "a finite number", value))
    if m < 0:
        raise InvalidArgumentError(bad_arg("m", "a strong-convexity constant >= 0", m))
    if not L > 0:
        raise InvalidArgumentError(bad_arg("L", "a smoothness constant > 0", L))
    if m > L:
        raise InvalidArgumentError(bad_arg("m", f"m <= L = {L}", m))


def quadratic_rate(system: LureSystem, m: float, L: float, samples: int = 257) -> tuple[float, float]:
    """``max rho(A + lam B C)`` over ``samples`` curvatures evenly in ``[m, L]`` (ends included).

    Returns ``(rho, lam)`` at the worst sampled curvature. Every sample is a quadratic of the
    class, so ``rho`` is a lower bound on any rate valid over ``S(m, L)``, and ``rho >= 1`` is
    a counterexample. Cost: ``samples`` eigenvalue solves of size n.
    """
    check_class(m, L)
    lams = np.linspace(m, L, samples)
    rhos = [spectral_radius(system.closed_loop(lam)) for lam in lams]
    i = int(np.argmax(rhos))
    return float(rhos[i]), float(lams[i])


def tuned_gd(m: float, L: float) -> float:
    """Step ``2 / (m + L)`` (rate ``(kappa - 1) / (kappa + 1)``)."""
    check_class(m, L)
    return 2.0 / (m + L)


def tuned_heavy_ball(m: float, L: float) -> tuple[float, float]:
    """Polyak's quadratic-optimal ``eta = 4 / (sqrt L + sqrt m)^2``,
    ``beta = ((sqrt kappa - 1) / (sqrt kappa + 1))^2``."""
    check_class(m, L)
    r = (math.sqrt(L) - math.sqrt(m)) / (math.sqrt(L) + math.sqrt(m))
    return 4.0 / (math.sqrt(L) + math.sqrt(m)) ** 2, r * r


def tuned_nesterov(m: float, L: float) -> tuple[float, float]:
    """Nesterov's ``eta = 1 / L``, ``beta = (sqrt kappa - 1) / (sqrt kappa + 1)``."""
    check_class(m, L)
    return 1.0 / L, (math.sqrt(L) - math.sqrt(m)) / (math.sqrt(L) + math.sqrt(m))
