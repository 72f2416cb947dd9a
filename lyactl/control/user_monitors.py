"""Monitors from a user's own Lyapunov candidate over a group's statistics.

A user gives a candidate ``V`` over named statistics, either a sympy expression or a
string holding one (parsed by :func:`lyactl.expr.parse_expr`, which runs no code)::

    V = "w_sq + dw_sq / lr"                          # symbols: statistics or scalars

or a plain callable taking the window arrays (a dict ``name -> [W, n_groups]``) and
returning ``[W, n_groups]``; plus the condition that makes it a certificate, e.g.
:class:`Decreases` (``V_{k+1} <= (1 - alpha) V_k`` over the whole window, i.e.
``Delta V <= -alpha V``) or :class:`Below` (``V_last < bound``). :func:`user_monitor`
returns a :class:`~lyactl.control.monitors.LyapunovMonitor`, exactly the type of the built-in
monitors, so it drives decisions the same way (pass it in the controller's monitors).

Symbols a sympy candidate may use: the per-group statistics ``w_sq, dw_sq, g_sq, gw,
m_sq, curv, curv_used`` and the per-report scalars ``lr, loss, weight_decay, interval,
step, val_loss``. A sympy candidate is re-verifiable offline from the raw statistics; a
callable candidate is opaque, so re-verification takes its logged ``V_k`` as given.

A candidate must depend on the group's statistics it certifies: one that does not (a
constant, or only the per-report scalars such as ``lr``) would certify every group alike,
so it is refused at definition, naming it. A sympy candidate must hold one of the per-group
symbols; a callable one is evaluated on two synthetic windows that differ only in the
per-group statistics (:func:`_probe`) and must answer differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import sympy

from lyactl.errors import InvalidArgumentError, bad_arg
from lyactl.expr import to_sympy
from lyactl.control.monitor_library import _max_ratio, _ratio_text
from lyactl.control.monitors import LyapunovMonitor, Role
from lyactl.control.stats_window import _SCALARS, TINY, WINDOW_FIELDS, Window

__all__ = ["SympyCandidate", "CallableWindowCandidate", "Decreases", "Below", "user_monitor", "window_arrays"]

_KNOWN = WINDOW_FIELDS + _SCALARS


def window_arrays(window: Window, names: tuple[str, ...] = _KNOWN) -> dict[str, np.ndarray]:
    """``name -> [W, n]`` (scalars broadcast over groups, read-only views)."""
    shape = (window.length, window.n_groups)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in WINDOW_FIELDS:
            out[name] = window.field(name)
        else:
            out[name] = np.broadcast_to(window.scalar(name)[:, None], shape)
    return out


@dataclass(frozen=True)
class SympyCandidate:
    """``V_k = expr(statistics of report k)``; compiled once with ``sympy.lambdify``.

    ``expr`` is a sympy expression or a string (parsed safely, see :mod:`lyactl.expr`)."""

    expr: sympy.Expr
    name: str = "user"
    _fn: Callable[..., Any] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expr = to_sympy(self.expr, "SympyCandidate.expr", _KNOWN)
        names = tuple(sorted(str(s) for s in expr.free_symbols))
        unknown = [n for n in names if n not in _KNOWN]
        if unknown:
            raise InvalidArgumentError(bad_arg("SympyCandidate.expr", f"symbols among {_KNOWN}", unknown))
        if not set(names) & set(WINDOW_FIELDS):
            raise InvalidArgumentError(bad_arg(f"candidate {self.name!r}", "an expression of the group's "
                                               f"statistics (one of {WINDOW_FIELDS})", str(expr)))
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_fn", sympy.lambdify([sympy.Symbol(n) for n in names], expr, "numpy"))

    def values(self, window: Window) -> np.ndarray:
        arrays = window_arrays(window, self._names)
        V = self._fn(*(arrays[n] for n in self._names))
        return np.broadcast_to(np.asarray(V, dtype=float), (window.length, window.n_groups))

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        return window_arrays(window, self._names)

    def definitions(self, W: int) -> tuple[str, ...]:
        out = []
        for k in range(W):
            sub = {sympy.Symbol(n): sympy.Symbol(f"{n}_{k}") for n in self._names}
            out.append(f"V_{k} := {sympy.sstr(self.expr.xreplace(sub))}")
        return tuple(out)


@dataclass(frozen=True)
class CallableWindowCandidate:
    """``V = fn(arrays)`` with ``arrays`` a dict ``name -> [W, n]``; opaque to re-verification."""

    fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    name: str = "user"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidArgumentError(bad_arg(f"candidate {self.name!r}", "a callable arrays -> V", self.fn))
        a, b = _probe(self.fn, self.name)
        if a.shape == b.shape and np.array_equal(a, b, equal_nan=True):
            raise InvalidArgumentError(bad_arg(f"candidate {self.name!r}", "a function of the group's statistics "
                                               f"(one of {WINDOW_FIELDS})", "the same V for different statistics"))

    def values(self, window: Window) -> np.ndarray:
        return np.asarray(self.fn(window_arrays(window)), dtype=float)

    def inputs(self, window: Window) -> Mapping[str, np.ndarray]:
        return {}

    def definitions(self, W: int) -> tuple[str, ...]:
        return ()


def _probe(fn: Callable[[Mapping[str, np.ndarray]], np.ndarray], name: str,
           W: int = 4, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``fn`` on two synthetic windows ``[W, n]`` with equal scalars and different per-group
    statistics (positive, seeded); errors name the candidate."""
    rng = np.random.default_rng(0)
    base = {k: rng.uniform(0.5, 2.0, (W, n)) if k in WINDOW_FIELDS else np.full((W, n), rng.uniform(0.5, 2.0))
            for k in _KNOWN}
    other = {k: v * rng.uniform(1.5, 3.0, (W, n)) if k in WINDOW_FIELDS else v for k, v in base.items()}
    try:
        with np.errstate(all="ignore"):
            return tuple(np.asarray(fn({k: v.copy() for k, v in d.items()}), dtype=float) for d in (base, other))
    except Exception as exc:  # any error of user code on plain statistics: the candidate is unusable
        raise InvalidArgumentError(bad_arg(f"candidate {name!r}", "a callable that evaluates on a window of "
                                           "positive statistics", f"{type(exc).__name__}: {exc}")) from exc


@dataclass(frozen=True)
class Decreases:
    """``V_{k+1} <= (1 - alpha) V_k`` for every consecutive pair of the window
    (``Delta V <= -alpha V``); margin ``1 - alpha - max_k V_{k+1}/V_k``."""

    alpha: float

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InvalidArgumentError(bad_arg("Decreases.alpha", "a number in (0, 1)", self.alpha))

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        rho_hat = _max_ratio(V, 1.0)
        return 1.0 - self.alpha - rho_hat, {"tiny": TINY, "alpha": self.alpha, "rho_hat": rho_hat}

    def text(self, W: int) -> str:
        return f"rho_hat := {_ratio_text(W, '1')}; 1 - alpha - rho_hat > 0"


@dataclass(frozen=True)
class Below:
    """``V_last < bound``; margin ``(bound - V_last) / bound``."""

    bound: float

    def __post_init__(self) -> None:
        if not self.bound > 0:
            raise InvalidArgumentError(bad_arg("Below.bound", "a number > 0", self.bound))

    def evaluate(self, V: np.ndarray, window: Window) -> tuple[np.ndarray, dict[str, Any]]:
        return (self.bound - V[-1]) / self.bound, {"bound": self.bound}

    def text(self, W: int) -> str:
        return f"(bound - V_{W - 1})/bound > 0"


def user_monitor(name: str, role: Role, candidate: Any, condition: Any) -> LyapunovMonitor:
    """A monitor from a candidate (sympy expression, string, callable or Candidate) and a
    condition (:class:`Decreases`, :class:`Below` or any ``Condition``)."""
    if isinstance(candidate, (sympy.Basic, str)):
        candidate = SympyCandidate(to_sympy(candidate, "user_monitor.candidate", _KNOWN), name)
    elif callable(candidate) and not hasattr(candidate, "values"):
        candidate = CallableWindowCandidate(candidate, name)
    if not isinstance(role, Role):
        raise InvalidArgumentError(bad_arg("user_monitor.role", "a lyactl.control.monitors.Role", role))
    return LyapunovMonitor(name, role, candidate, condition)
