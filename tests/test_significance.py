"""Standard errors, paired bootstrap and exact McNemar: residuals against scipy and coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lyactl.errors import NonFiniteError, ShapeError
from lyactl.app.significance import mcnemar_exact, paired_bootstrap, stderr_mean, stderr_weighted_mean, weighted_mean

finite = st.floats(-1e3, 1e3, allow_nan=False)
samples = st.lists(finite, min_size=2, max_size=30)


@settings(max_examples=40, deadline=None)
@given(samples)
def test_stderr_matches_scipy_sem_and_unit_weights(x: list[float]) -> None:
    assert stderr_mean(x) == pytest.approx(stats.sem(x), rel=1e-9, abs=1e-9)
    assert stderr_weighted_mean(x, np.ones(len(x))) == pytest.approx(stderr_mean(x), rel=1e-9, abs=1e-9)


def test_weighted_stderr_matches_bootstrap_of_ratio() -> None:
    rng = np.random.default_rng(0)
    w = rng.uniform(1, 10, 400)
    x = rng.normal(1.0, 0.3, 400)
    boot = [weighted_mean(x[i], w[i]) for i in rng.integers(0, 400, (2000, 400))]
    assert stderr_weighted_mean(x, w) == pytest.approx(np.std(boot), rel=0.1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=30), st.integers(0, 2**31))
def test_bootstrap_diff_is_mean_and_ci_within_range(pairs: list[tuple[float, float]], seed: int) -> None:
    a, b = np.array(pairs).T
    r = paired_bootstrap(a, b, n_resamples=200, seed=seed)
    d = a - b
    assert r.diff == pytest.approx(d.mean(), abs=1e-9 * (1 + np.abs(d).max()))
    assert d.min() - 1e-9 <= r.ci_low <= r.ci_high <= d.max() + 1e-9
    assert r == paired_bootstrap(a, b, n_resamples=200, seed=seed)  # fixed seed: deterministic


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=40))
def test_identical_models_give_zero_and_p_one(a: list[float]) -> None:
    r = paired_bootstrap(a, a)
    assert (r.diff, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)
    assert mcnemar_exact(a, a).p_value == 1.0


def test_bootstrap_coverage_near_nominal() -> None:
    """Correlated Bernoulli pairs with a known mean difference: 95% CI covers it ~95% of the time."""
    rng = np.random.default_rng(12345)
    n, trials, p_a, p_b = 150, 200, 0.6, 0.5
    true, hits = _true_diff(p_a, p_b), 0
    for t in range(trials):
        u = rng.uniform(size=n)
        a = (u < p_a).astype(float)  # shared u: strongly paired outcomes
        b = ((u + rng.normal(0, 0.2, n)) < p_b).astype(float)
        r = paired_bootstrap(a, b, n_resamples=300, seed=t)
        hits += r.ci_low <= true <= r.ci_high
    assert 0.89 <= hits / trials <= 0.99


def _true_diff(p_a: float, p_b: float) -> float:
    # P(u + e < p_b) with u ~ U(0, 1), e ~ N(0, 0.2^2): integrate the normal cdf over u
    u = np.linspace(0, 1, 200001)
    return p_a - float(np.mean(stats.norm.cdf((p_b - u) / 0.2)))


def test_mcnemar_counts_and_p_value() -> None:
    a = [1] * 10 + [0] * 2 + [1] * 5
    b = [0] * 10 + [1] * 2 + [1] * 5
    r = mcnemar_exact(a, b)
    assert (r.n10, r.n01) == (10, 2)
    assert r.p_value == pytest.approx(stats.binomtest(10, 12, 0.5).pvalue)
    assert mcnemar_exact(b, a).p_value == pytest.approx(r.p_value)  # symmetric
    assert mcnemar_exact([1] * 10, [0] * 10).p_value == pytest.approx(2 * 0.5**10)


def test_bad_inputs() -> None:
    with pytest.raises(NonFiniteError):
        paired_bootstrap([1.0, float("nan")], [1.0, 1.0])
    with pytest.raises(ShapeError):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ShapeError):
        stderr_mean([])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5], [1.0])
    assert np.isnan(stderr_mean([1.0]))
