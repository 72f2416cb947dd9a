"""Uncertainty of evaluation scores: standard errors, paired bootstrap, exact McNemar.

Conventions
-----------
* Standard error of a mean of n per-item scores x_i: ``s / sqrt(n)`` with the sample standard
  deviation ``s`` (ddof = 1), as lm-evaluation-harness reports it (``mean_stderr``).
* Weighted mean ``m = sum(w x) / sum(w)`` (bits per byte: x_i = per-document bpb, w_i = bytes):
  linearised (delta-method) standard error
  ``sqrt(n / (n - 1) * sum(w_i^2 (x_i - m)^2)) / sum(w)``.
* Paired bootstrap of two models A, B scored on the same n items: resample items with
  replacement (B resamples, fixed seed), recompute the (weighted) mean of ``d_i = a_i - b_i``;
  percentile interval at ``level`` (via :func:`scipy.stats.bootstrap`, one-sample on d, which is
  the paired bootstrap).
* Exact McNemar for paired binary outcomes: with n10 = #(A right, B wrong) and
  n01 = #(A wrong, B right), ``p = binomtest(n10, n10 + n01, 0.5)`` two-sided; p = 1 when there
  are no discordant pairs.

Non-finite inputs raise :class:`lyactl.errors.NonFiniteError` (never a silent decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from lyactl.errors import InvalidArgumentError, NonFiniteError, ShapeError, bad_arg

__all__ = [
    "PairedDiff",
    "McNemar",
    "stderr_mean",
    "weighted_mean",
    "stderr_weighted_mean",
    "paired_bootstrap",
    "mcnemar_exact",
]


@dataclass(frozen=True)
class PairedDiff:
    """Mean difference ``mean(a - b)`` with a percentile bootstrap interval."""

    diff: float
    ci_low: float
    ci_high: float
    level: float
    n: int
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: discordant counts and the two-sided p-value."""

    n10: int  # A right, B wrong
    n01: int  # A wrong, B right
    p_value: float


def _vector(name: str, x: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ShapeError(bad_arg(name, "a non-empty 1-D sequence", arr.shape))
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(bad_arg(name, "finite values", "NaN or inf"))
    return arr


def _weights(w: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    if w is None:
        return np.ones(n)
    arr = _vector("weights", w)
    if arr.shape != (n,) or np.any(arr <= 0):
        raise ShapeError(bad_arg("weights", f"{n} positive values", arr.shape))
    return arr


def stderr_mean(x: Sequence[float] | np.ndarray) -> float:
    """Standard error ``s / sqrt(n)`` (ddof = 1) of the mean of ``x``; NaN when n = 1."""
    arr = _vector("x", x)
    if arr.size < 2:
        return float("nan")
    return float(np.std(arr, ddof=1) / np.sqrt(arr.size))


def weighted_mean(x: Sequence[float] | np.ndarray, w: Sequence[float] | np.ndarray | None = None) -> float:
    """``sum(w x) / sum(w)`` (the plain mean when ``w`` is None)."""
    arr = _vector("x", x)
    return float(np.sum(_weights(w, arr.size) * arr) / np.sum(_weights(w, arr.size)))


def stderr_weighted_mean(x: Sequence[float] | np.ndarray, w: Sequence[float] | np.ndarray | None = None) -> float:
    """Delta-method standard error of the weighted mean (equals :func:`stderr_mean` for w = 1)."""
    arr = _vector("x", x)
    wt = _weights(w, arr.size)
    n = arr.size
    if n < 2:
        return float("nan")
    m = np.sum(wt * arr) / np.sum(wt)
    return float(np.sqrt(n / (n - 1) * np.sum(wt**2 * (arr - m) ** 2)) / np.sum(wt))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Paired percentile bootstrap of ``mean_w(a - b)`` over items (cost O(n_resamples * n)).

    Parameters
    ----------
    a, b : per-item scores of two models on the same items, shape ``[n]``.
    weights : optional positive item weights, shape ``[n]`` (weighted mean of the difference).
    n_resamples : number of bootstrap resamples B.
    level : two-sided confidence level, in (0, 1).
    seed : seed of the resampling generator (results are deterministic given it).
    """
    x, y = _vector("a", a), _vector("b", b)
    if x.shape != y.shape:
        raise ShapeError(bad_arg("b", f"shape {x.shape} like a", y.shape))
    if not 0.0 < level < 1.0:
        raise InvalidArgumentError(bad_arg("level", "a number in (0, 1)", level))
    if n_resamples < 1:
        raise InvalidArgumentError(bad_arg("n_resamples", "an integer >= 1", n_resamples))
    d = x - y
    w = _weights(weights, d.size)
    diff = float(np.sum(w * d) / np.sum(w))
    if np.all(d == d[0]):  # constant differences: every resample gives the same mean
        return PairedDiff(diff, diff, diff, level, int(d.size), n_resamples, seed)

    def statistic(dd: np.ndarray, ww: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(dd * ww, axis=axis) / np.sum(ww, axis=axis)

    res = stats.bootstrap(
        (d, w), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
        batch=max(1, min(n_resamples, 2_000_000 // max(d.size, 1))),
        confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return PairedDiff(diff, float(lo), float(hi), level, int(d.size), n_resamples, seed)


def mcnemar_exact(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test on paired 0/1 outcomes of two models on the same items."""
    x, y = _vector("a_correct", a_correct), _vector("b_correct", b_correct)
    if x.shape != y.shape:
        raise ShapeError(bad_arg("b_correct", f"shape {x.shape} like a_correct", y.shape))
    if not (np.all(np.isin(x, (0.0, 1.0))) and np.all(np.isin(y, (0.0, 1.0)))):
        raise InvalidArgumentError(bad_arg("a_correct/b_correct", "0/1 outcomes", "other values"))
    n10 = int(np.sum((x == 1) & (y == 0)))
    n01 = int(np.sum((x == 0) & (y == 1)))
    if n10 + n01 == 0:
        return McNemar(0, 0, 1.0)
    p = stats.binomtest(n10, n10 + n01, 0.5, alternative="two-sided").pvalue
    return McNemar(n10, n01, float(min(1.0, p)))
