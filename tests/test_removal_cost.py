"""Measured removal costs (:mod:`lyactl.control.removal_cost`), tested by their properties:

* ``removal_costs``: the bound ``upper`` is the upper end of scipy's two-sided t-interval of
  each column's mean (computed independently here), a column holding NaN or inf gets
  ``upper = inf`` without touching the others, bad input raises an error naming the
  argument; ``upper`` moves by exactly ``c`` when a column moves by ``c``, grows with the
  column's spread and with the confidence;
* ``cheapest_to_target``: on groups with an additive FLOPs model, the fewest groups in score
  order that reach the target (all of them when it is out of reach), never a non-finite
  score nor a group already pruned, and ``min_keep`` honoured;
* ``removal_certificate`` / ``measured_event``: every certificate re-verifies offline
  exactly when its verdict is HOLDS, HOLDS iff ``tol > upper`` with ``tol = eps |L|``, the
  event's meta sums are those of the chosen groups, the FLOPs target is met when it can be;
  and on groups with known true costs (``dL`` = true cost + noise) the event gives up less
  true cost than random subsets of the same size and the same FLOPs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from lyactl.control.decision_log import verify_certificate
from lyactl.control.groups import ACTIVE, PRUNED, Action, Constraint, Group, GroupKind
from lyactl.control.removal_cost import (
    CONDITION,
    cheapest_to_target,
    measured_event,
    removal_certificate,
    removal_costs,
)
from lyactl.errors import InvalidArgumentError, ShapeError
from lyactl.verdict import Verdict
from strategies import seeds

FAST = settings(max_examples=25, deadline=None)


# ---- local strategies and helpers ------------------------------------------------------

@st.composite
def dl_matrices(draw, max_m: int = 10, max_n: int = 6):
    """``dL [m, n]``: each column a normal sample around its own mean with its own spread
    (some columns constant: spread 0)."""
    m, n = draw(st.integers(2, max_m)), draw(st.integers(1, max_n))
    rng = np.random.default_rng(draw(seeds))
    mu = rng.uniform(-1.0, 2.0, n)
    sd = rng.uniform(0.0, 1.0, n) * (rng.random(n) > 0.15)
    return mu + sd * rng.standard_normal((m, n))


alphas = st.floats(1e-3, 0.5)


def scipy_upper(col: np.ndarray, alpha: float) -> float:
    """Upper end of scipy's two-sided (1 - alpha) t-interval of the mean of ``col``."""
    mean, sem = float(np.mean(col)), float(sps.sem(col))
    if sem == 0.0:
        return mean
    return float(sps.t.interval(1.0 - alpha, len(col) - 1, loc=mean, scale=sem)[1])


def make_groups(flops) -> list[Group]:
    return [Group(f"g{i}", GroupKind.MLP_BLOCK, 0, 10, float(f), 0.0) for i, f in enumerate(flops)]


def additive_flops(groups: list[Group], base: float):
    """Dense FLOPs minus ``flops_remove`` of every pruned group (``base``: the unprunable rest)."""
    f = np.array([g.flops_remove for g in groups])

    def model(status: np.ndarray) -> float:
        return float(base + f[np.asarray(status) != PRUNED].sum())

    return model


def pruned_with(status: np.ndarray, chosen) -> np.ndarray:
    after = np.asarray(status, np.int8).copy()
    after[list(chosen)] = PRUNED
    return after


@st.composite
def selection_problems(draw, max_n: int = 10):
    """``(groups, scores, status, flops_model, target)``: positive FLOPs, scores that may be
    inf or NaN, some groups already pruned."""
    n = draw(st.integers(1, max_n))
    flops = draw(st.lists(st.floats(0.5, 10.0), min_size=n, max_size=n))
    scores = draw(st.lists(st.one_of(st.floats(-5.0, 5.0), st.sampled_from([-3.0, 0.0, 1.0]),
                                     st.just(math.inf), st.just(math.nan)), min_size=n, max_size=n))
    status = np.array(draw(st.lists(st.sampled_from([ACTIVE, ACTIVE, ACTIVE, PRUNED]), min_size=n, max_size=n)),
                      np.int8)
    base = draw(st.floats(1.0, 20.0))
    target = draw(st.floats(0.05, 1.0))
    groups = make_groups(flops)
    return groups, np.array(scores), status, additive_flops(groups, base), target


# ---- removal_costs ---------------------------------------------------------------------

@FAST
@given(dl_matrices(), alphas, st.floats(-10.0, 10.0))
def test_upper_is_the_upper_end_of_scipys_t_interval(dL, alpha, base_loss):
    c = removal_costs(dL, base_loss, alpha)
    m, n = dL.shape
    assert c.m == m and c.base_loss == base_loss
    assert c.t == pytest.approx(sps.t.ppf(1.0 - alpha / 2.0, m - 1), rel=1e-12)
    assert c.mean.shape == c.sd.shape == c.upper.shape == (n,)
    np.testing.assert_allclose(c.mean, dL.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.sd, dL.std(axis=0, ddof=1), rtol=1e-9, atol=1e-12)
    expected = [scipy_upper(dL[:, j], alpha) for j in range(n)]
    np.testing.assert_allclose(c.upper, expected, rtol=1e-9, atol=1e-12)
    assert np.all(c.upper >= c.mean - 1e-12)  # the bound is above the mean


@FAST
@given(dl_matrices(), st.data())
def test_a_column_with_a_nan_or_inf_gets_an_infinite_bound_and_leaves_the_others_alone(dL, data):
    m, n = dL.shape
    bad = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    dirty = dL.copy()
    for j in bad:
        dirty[data.draw(st.integers(0, m - 1)), j] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    c = removal_costs(dirty, 2.0)
    assert np.all(np.isposinf(c.upper[bad])) and np.all(np.isnan(c.mean[bad])) and np.all(np.isnan(c.sd[bad]))
    good = [j for j in range(n) if j not in bad]
    if good:
        clean = removal_costs(dL[:, good], 2.0)
        # the same numbers up to rounding (numpy may reduce a narrower array in another order)
        np.testing.assert_allclose(c.upper[good], clean.upper, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(c.mean[good], clean.mean, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(c.sd[good], clean.sd, rtol=1e-13, atol=1e-15)
        assert np.all(np.isfinite(c.upper[good]))


@pytest.mark.parametrize("dL, base_loss, alpha, error, name", [
    (np.zeros(5), 1.0, 0.05, ShapeError, "dL"),                # 1-D
    (np.zeros((3, 2, 2)), 1.0, 0.05, ShapeError, "dL"),        # 3-D
    (np.zeros((1, 4)), 1.0, 0.05, InvalidArgumentError, "dL"),  # one batch: no spread
    (np.zeros((0, 4)), 1.0, 0.05, InvalidArgumentError, "dL"),
    (np.zeros((4, 3)), 1.0, 0.0, InvalidArgumentError, "alpha"),
    (np.zeros((4, 3)), 1.0, 1.0, InvalidArgumentError, "alpha"),
    (np.zeros((4, 3)), 1.0, -0.1, InvalidArgumentError, "alpha"),
    (np.zeros((4, 3)), 1.0, math.nan, InvalidArgumentError, "alpha"),
    (np.zeros((4, 3)), math.nan, 0.05, InvalidArgumentError, "base_loss"),
    (np.zeros((4, 3)), math.inf, 0.05, InvalidArgumentError, "base_loss"),
])
def test_bad_input_raises_an_error_naming_the_argument(dL, base_loss, alpha, error, name):
    with pytest.raises(error, match=rf"^{name}:") as info:
        removal_costs(dL, base_loss, alpha)
    assert isinstance(info.value, ValueError)


@FAST
@given(dl_matrices(), alphas, st.floats(-5.0, 5.0), st.data())
def test_shifting_a_column_by_c_moves_its_bound_by_c_only(dL, alpha, shift, data):
    j = data.draw(st.integers(0, dL.shape[1] - 1))
    moved = dL.copy()
    moved[:, j] += shift
    a, b = removal_costs(dL, 1.0, alpha), removal_costs(moved, 1.0, alpha)
    scale = 1.0 + abs(shift) + float(np.max(np.abs(dL)))
    assert b.upper[j] - a.upper[j] == pytest.approx(shift, abs=1e-9 * scale)
    others = [k for k in range(dL.shape[1]) if k != j]
    assert np.array_equal(a.upper[others], b.upper[others])


@FAST
@given(dl_matrices(), alphas, st.floats(1.1, 5.0), st.data())
def test_more_spread_around_the_same_mean_raises_the_bound(dL, alpha, k, data):
    j = data.draw(st.integers(0, dL.shape[1] - 1))
    wider = dL.copy()
    mean = dL[:, j].mean()
    wider[:, j] = mean + k * (dL[:, j] - mean)
    a, b = removal_costs(dL, 1.0, alpha), removal_costs(wider, 1.0, alpha)
    assert b.mean[j] == pytest.approx(a.mean[j], abs=1e-9 * (1 + k * np.max(np.abs(dL))))
    if a.sd[j] > 1e-6:
        assert b.upper[j] > a.upper[j]
        assert b.upper[j] - b.mean[j] == pytest.approx(k * (a.upper[j] - a.mean[j]), rel=1e-6)
    else:
        assert b.upper[j] == pytest.approx(a.upper[j], abs=1e-6 * k)


@FAST
@given(dl_matrices(), alphas, alphas)
def test_higher_confidence_never_lowers_the_bound(dL, a1, a2):
    lo, hi = sorted((a1, a2))
    strict, loose = removal_costs(dL, 1.0, lo), removal_costs(dL, 1.0, hi)
    assert np.all(strict.upper >= loose.upper - 1e-12)


# ---- cheapest_to_target -----------------------------------------------------------------

def eligible_order(scores: np.ndarray, status: np.ndarray) -> list[int]:
    """Group indices with a finite score, not yet pruned, by (score, index)."""
    ok = [i for i in range(len(scores)) if math.isfinite(scores[i]) and status[i] != PRUNED]
    return sorted(ok, key=lambda i: (scores[i], i))


@FAST
@given(selection_problems())
def test_cheapest_to_target_takes_the_fewest_in_score_order(problem):
    groups, scores, status, fm, target = problem
    chosen = cheapest_to_target(groups, [], scores, fm, target, status)
    idx = [i for i, _ in chosen]
    assert all(a == PRUNED for _, a in chosen)
    assert len(set(idx)) == len(idx)
    assert all(math.isfinite(scores[i]) for i in idx)  # never a non-finite score
    assert all(status[i] != PRUNED for i in idx)  # never a group already gone
    order = eligible_order(scores, status)
    assert idx == order[:len(idx)]  # score order, ties by index, nothing skipped
    now = fm(status)
    ratio = lambda sel: fm(pruned_with(status, sel)) / now  # noqa: E731
    if ratio(order) <= target:  # reachable
        assert ratio(idx) <= target
        if idx:  # minimal: without the last one it misses the target
            assert ratio(idx[:-1]) > target
    else:  # out of reach: all it may take
        assert idx == order


@FAST
@given(selection_problems(), st.data())
def test_cheapest_to_target_honours_min_keep(problem, data):
    groups, scores, status, fm, target = problem
    n = len(groups)
    members = tuple(sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))))
    alive_members = int(sum(status[list(members)] != PRUNED))
    min_keep = data.draw(st.integers(0, len(members)))
    chosen = cheapest_to_target(groups, [Constraint(members, min_keep)], scores, fm, target, status)
    idx = [i for i, _ in chosen]
    after = pruned_with(status, idx)
    left = int(sum(after[list(members)] != PRUNED))
    assert left >= min(min_keep, alive_members)  # never below min_keep (or below what was left)
    assert all(math.isfinite(scores[i]) and status[i] != PRUNED for i in idx)
    keys = [(scores[i], i) for i in idx]
    assert keys == sorted(keys)  # taken in score order
    order = eligible_order(scores, status)
    # an eligible group passed over (cheaper than the last taken) is one the constraint blocks
    if idx:
        for i in order[:order.index(idx[-1])]:
            if i not in idx:
                assert i in members and left <= min_keep  # taking it would go below min_keep
    now = fm(status)
    allowed = max(alive_members - min_keep, 0)
    reachable_set = [i for i in order if i not in members] + [i for i in order if i in members][:allowed]
    if fm(pruned_with(status, reachable_set)) / now <= target:
        assert fm(after) / now <= target
        if idx:
            assert fm(pruned_with(status, idx[:-1])) / now > target
    else:  # out of reach: everything the constraint lets go
        assert set(idx) == set(reachable_set)


@pytest.mark.parametrize("target", [0.0, -0.5, 1.5, math.nan])
def test_cheapest_to_target_rejects_a_bad_target(target):
    groups = make_groups([1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match=r"^target:"):
        cheapest_to_target(groups, [], np.zeros(2), additive_flops(groups, 1.0), target)


def test_cheapest_to_target_rejects_scores_of_the_wrong_shape():
    groups = make_groups([1.0, 2.0])
    with pytest.raises(ShapeError, match=r"^scores:"):
        cheapest_to_target(groups, [], np.zeros(3), additive_flops(groups, 1.0), 0.5)


# ---- removal_certificate and measured_event ------------------------------------------------

@st.composite
def measured_problems(draw, max_n: int = 8):
    """``(groups, costs, status, flops_model, target, eps)``; some columns NaN (not measured),
    some groups already pruned, ``base_loss`` of either sign (or 0)."""
    dL = draw(dl_matrices(max_n=max_n))
    m, n = dL.shape
    rng = np.random.default_rng(draw(seeds))
    dL = dL * 0.5 - 0.2 * rng.random(n)  # some columns below zero: removal helps
    dL[:, rng.random(n) < 0.15] = math.nan
    base_loss = draw(st.one_of(st.floats(-5.0, 5.0), st.just(0.0)))
    costs = removal_costs(dL, base_loss, draw(alphas))
    groups = make_groups(draw(st.lists(st.floats(0.5, 10.0), min_size=n, max_size=n)))
    status = np.where(rng.random(n) < 0.2, PRUNED, ACTIVE).astype(np.int8)
    fm = additive_flops(groups, draw(st.floats(1.0, 20.0)))
    return groups, costs, status, fm, draw(st.floats(0.05, 1.0)), draw(st.floats(1e-4, 1.0))


@FAST
@given(measured_problems(), st.integers(0, 10**6))
def test_measured_event_certificates_reverify_exactly_when_they_hold(problem, step):
    groups, costs, status, fm, target, eps = problem
    ev = measured_event(groups, [], costs, fm, target, step=step, eps=eps, event_id=7, status=status)
    tol = eps * abs(costs.base_loss)
    assert ev.event_id == 7 and ev.step == step and ev.meta["tol"] == tol
    idx = [d.index for d in ev.decisions]
    for d in ev.decisions:
        assert d.action is Action.PRUNE and d.group == groups[d.index].name and d.step == step
        assert status[d.index] != PRUNED and math.isfinite(costs.upper[d.index])  # measured, live
        (cert,) = d.certificates
        assert cert.monitor == "removal-cost" and cert.condition == CONDITION and cert.window == (step, step)
        assert cert.numbers["tol"] == tol and cert.numbers["upper"] == costs.upper[d.index]
        holds = tol > costs.upper[d.index]
        assert (cert.verdict is Verdict.HOLDS) == holds
        assert cert.verdict in (Verdict.HOLDS, Verdict.UNKNOWN)
        problems = verify_certificate(cert.to_json())
        if holds:
            assert problems == [], problems
        else:
            assert problems, "an UNKNOWN certificate must not re-verify"
    # meta: the sums over the chosen groups
    assert ev.meta["taken"] == len(idx) == len(set(idx))
    assert ev.meta["certified"] == sum(tol > costs.upper[i] for i in idx)
    assert ev.meta["sum_mean"] == pytest.approx(math.fsum(costs.mean[idx]), rel=1e-12, abs=1e-12)
    assert ev.meta["sum_upper"] == pytest.approx(math.fsum(costs.upper[idx]), rel=1e-12, abs=1e-12)
    # FLOPs: before at ``status``, after with the chosen groups gone; the target met if it can be
    assert ev.flops_before == fm(status) and ev.flops_after == fm(pruned_with(status, idx))
    saves = np.array([g.flops_remove for g in groups])
    rate = costs.upper / saves
    order = eligible_order(rate, status)
    assert idx == order[:len(idx)]  # lowest upper bound per FLOP first
    if fm(pruned_with(status, order)) / fm(status) <= target:
        assert ev.flops_after / ev.flops_before <= target
        if idx:
            assert fm(pruned_with(status, idx[:-1])) / fm(status) > target


def test_both_verdicts_occur_and_only_holds_reverifies():
    """Half the groups harmless (cost ~0, little noise), half costly: both verdicts appear."""
    rng = np.random.default_rng(0)
    true = np.r_[np.zeros(5), np.full(5, 0.5)]
    dL = true + 0.01 * rng.standard_normal((8, 10))
    costs = removal_costs(dL, 2.0)
    groups = make_groups(np.ones(10))
    ev = measured_event(groups, [], costs, additive_flops(groups, 0.0), 0.15, step=3, eps=0.05)
    verdicts = [d.certificates[0].verdict for d in ev.decisions]
    assert Verdict.HOLDS in verdicts and Verdict.UNKNOWN in verdicts
    assert ev.meta["certified"] == verdicts.count(Verdict.HOLDS) == 5
    for d in ev.decisions:
        ok = verify_certificate(d.certificates[0].to_json()) == []
        assert ok == (d.certificates[0].verdict is Verdict.HOLDS)


@FAST
@given(dl_matrices(), st.floats(0.1, 5.0), st.floats(1e-4, 0.5))
def test_removal_certificate_margin_and_verdict(dL, base_loss, eps):
    dL = dL.copy()
    dL[0, 0] = math.nan  # one column not measured
    costs = removal_costs(dL, base_loss)
    tol = eps * base_loss
    for i in range(dL.shape[1]):
        cert = removal_certificate(costs, i, tol, step=5)
        problems = verify_certificate(cert.to_json())
        if not math.isfinite(costs.upper[i]):
            assert cert.verdict is Verdict.UNKNOWN and math.isnan(cert.margin) and problems
            continue
        assert cert.margin == pytest.approx(tol - costs.upper[i], rel=1e-12, abs=1e-15)
        assert (cert.verdict is Verdict.HOLDS) == (tol > costs.upper[i]) == (problems == [])


@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan, math.inf])
def test_measured_event_rejects_a_bad_eps(eps):
    groups = make_groups([1.0, 1.0])
    costs = removal_costs(np.zeros((3, 2)), 1.0)
    with pytest.raises(InvalidArgumentError, match=r"^eps:"):
        measured_event(groups, [], costs, additive_flops(groups, 1.0), 0.5, step=0, eps=eps)


@FAST
@given(seeds)
def test_measured_event_gives_up_less_true_cost_than_random_subsets_of_equal_flops(seed):
    """Known true costs, noisy measurements (``dL`` = true cost + noise, a noise level per
    group): the measured choice of 8 of 20 equal-FLOPs groups costs less, in true cost, than
    the average random choice of 8 (which removes the same FLOPs)."""
    rng = np.random.default_rng(seed)
    n, k, m = 20, 8, 6
    true = rng.uniform(0.0, 1.0, n)
    noise = rng.uniform(0.05, 0.5, n)
    dL = true + noise * rng.standard_normal((m, n))
    groups = make_groups(np.ones(n))  # equal FLOPs: any k groups save the same
    fm = additive_flops(groups, 0.0)
    ev = measured_event(groups, [], removal_costs(dL, 3.0), fm, (n - k + 0.5) / n, step=0, eps=1e-3)
    idx = [d.index for d in ev.decisions]
    assert len(idx) == k and ev.flops_after == n - k
    chosen = true[idx].sum()
    random_costs = [true[rng.choice(n, k, replace=False)].sum() for _ in range(400)]
    assert chosen < np.mean(random_costs)
