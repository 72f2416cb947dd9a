"""Expression strings become sympy through a whitelist walk of their syntax tree, never eval.

Valid expressions give exactly what ``sympy.sympify`` gives (property over random
expression trees); anything outside the whitelist is an InvalidArgumentError that names the
argument and the offending text, and runs nothing.
"""

import builtins
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lyactl.analysis.candidates import ExprCandidate
from lyactl.errors import InvalidArgumentError
from lyactl.analysis.jury import jury_conditions, jury_expressions
from lyactl.control.monitors import Role, StatsWindow
from lyactl.expr import parse_expr, to_sympy
from lyactl.control.user_monitors import Below, SympyCandidate, user_monitor
from sim_training import simulate

NAMES = ("w_sq", "dw_sq", "lr", "gw", "x")
_leaf = st.one_of(st.sampled_from(NAMES), st.integers(0, 50).map(str),
                  st.floats(1e-3, 1e3, allow_nan=False).map(repr), st.sampled_from(["pi", "E"]))


def _grow(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})" if t[1] != "**" else f"({t[0]})**2")
    unary = children.map(lambda c: f"-({c})")
    calls = st.tuples(st.sampled_from(["Abs", "sqrt", "log", "exp"]), children).map(lambda t: f"{t[0]}({t[1]})")
    minmax = st.tuples(st.sampled_from(["Max", "Min"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
    return st.one_of(binary, unary, calls, minmax)


expressions = st.recursive(_leaf, _grow, max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(text=expressions)
def test_valid_expressions_match_sympify(text):
    try:
        want = sp.sympify(text)
    except (ValueError, TypeError, ZeroDivisionError):  # e.g. Max(w_sq, log(0)): zoo is not comparable
        with pytest.raises(InvalidArgumentError, match="expr: expected"):
            parse_expr(text, "expr")
        return
    assert sp.srepr(parse_expr(text, "expr")) == sp.srepr(want)


def test_an_expression_sympy_cannot_build_is_an_invalid_argument():
    with pytest.raises(InvalidArgumentError, match=r"V: expected .*not comparable"):
        parse_expr("-(Max(w_sq, log(0)))", "V")


ATTACKS = [
    "__import__('builtins').__setattr__('_LYACTL_SAFE_EXPR', 1) or w_sq",
    "w_sq.__class__",
    "(lambda: 1)()",
    "[w_sq for _ in (1,)]",
    "w_sq if 1 else dw_sq",
    "open('x')",
    "Abs(w_sq, evaluate=False)",
    "Max(*w_sq)",
    "w_sq[0]",
    "'w_sq'",
    "w_sq < dw_sq",
    "w_sq; dw_sq",
    "9**9**9**9",
    "1j * w_sq",
    "_hidden",
]


@pytest.mark.parametrize("text", ATTACKS)
def test_non_whitelisted_strings_are_refused_and_run_nothing(text):
    with pytest.raises(InvalidArgumentError, match="my_arg: expected") as info:
        parse_expr(text, "my_arg")
    assert "found" in str(info.value)
    assert not hasattr(builtins, "_LYACTL_SAFE_EXPR")


def test_the_error_quotes_the_offending_part():
    with pytest.raises(InvalidArgumentError, match=r"found 'open\(w_sq\)'"):
        parse_expr("w_sq + open(w_sq)", "V")


def test_allowed_names_are_enforced():
    assert parse_expr("w_sq * pi", "V", names=("w_sq",)) == sp.Symbol("w_sq") * sp.pi
    with pytest.raises(InvalidArgumentError, match=r"V: expected a name among \['w_sq'\].*found 'banana'"):
        parse_expr("w_sq + banana", "V", names=("w_sq",))


def test_non_strings_never_go_through_str():
    class Evil:
        def __str__(self):
            raise AssertionError("str() was called")

    with pytest.raises(InvalidArgumentError, match="arg"):
        to_sympy(Evil(), "arg")
    assert to_sympy(np.float64(0.5), "arg") == sp.Float(0.5)


def test_string_candidates_work_like_sympy_ones():
    sim = simulate(["collapsing", "noise"], "gd", n_reports=6, seed=0)
    win = StatsWindow(2, 4)
    for s in sim.stats:
        win.push(s)
    a = user_monitor("a", Role.COLLAPSED, "w_sq + dw_sq/lr", Below(1.0)).evaluate(win)
    b = user_monitor("b", Role.COLLAPSED, sp.sympify("w_sq + dw_sq/lr"), Below(1.0)).evaluate(win)
    assert np.array_equal(a.V, b.V) and np.array_equal(a.margin, b.margin, equal_nan=True)
    with pytest.raises(InvalidArgumentError, match="user_monitor.candidate"):
        user_monitor("c", Role.COLLAPSED, "w_sq + banana", Below(1.0))
    with pytest.raises(InvalidArgumentError, match="SympyCandidate.expr"):
        SympyCandidate("w_sq.real")


def test_other_string_entry_points_are_safe():
    x = sp.Symbol("x")
    assert ExprCandidate("x**2 + 1", (x,)).value(np.array([2.0])) == 5.0
    with pytest.raises(InvalidArgumentError, match="V"):
        ExprCandidate("__import__('os').getcwd() + x", (x,))
    z = sp.Symbol("z")
    assert jury_conditions("z**2 - 1/4", z) == jury_conditions(z**2 - sp.Rational(1, 4), z)
    assert jury_expressions(["1", 0, "-1/4"]) == jury_expressions([1, 0, sp.Rational(-1, 4)])
    with pytest.raises(InvalidArgumentError, match=r"coeffs\[1\]"):
        jury_expressions([1, "().__class__"])


# ---------------------------------------------------------------- one evaluator, two readings
_LEAVES = st.sampled_from(["x", "y", "2", "0.5", "pi", "E"])


def _exprs():
    return st.recursive(_LEAVES, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["Abs", "sqrt", "exp", "log"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"Max({t[0]}, {t[1]})")), max_leaves=6)


@settings(max_examples=60, deadline=None)
@given(_exprs(), st.floats(0.1, 3.0), st.floats(0.1, 3.0))
def test_float_and_sympy_readings_agree(text, x, y):
    """evaluate (floats, for re-verification) and parse_expr (sympy, for candidates) read one
    whitelist the same way: equal values wherever the float reading is defined."""
    from lyactl.expr import evaluate

    try:
        value = evaluate(text, {"x": x, "y": y})
    except (ValueError, ZeroDivisionError, OverflowError):
        return  # log of a negative, exp overflow: undefined as a float
    expected = complex(parse_expr(text, "t").subs({"x": x, "y": y}).evalf())
    if not math.isfinite(value):
        return
    assert abs(expected.imag) < 1e-9 * max(1.0, abs(value))
    assert math.isclose(value, expected.real, rel_tol=1e-9, abs_tol=1e-12)


def test_float_reading_refuses_what_the_sympy_reading_refuses():
    from lyactl.errors import InvalidArgumentError
    from lyactl.expr import evaluate

    for text in ("__import__('os')", "x.real", "x[0]", "lambda: 1", "z + 1"):
        with pytest.raises(InvalidArgumentError):
            evaluate(text, {"x": 1.0})
