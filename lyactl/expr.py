"""The one expression evaluator: a user's expression string, read without running any code,
as sympy (:func:`parse_expr`, for candidates and monitors) or as a float
(:func:`evaluate`, for re-verifying a logged certificate offline).

``sympy.sympify`` and ``parse_expr`` evaluate their input as Python, so a string such as
``"__import__('os').system(...)"`` would run. :func:`parse_expr` instead parses the text
with :func:`ast.parse` (``mode="eval"``) and builds the sympy expression by walking a
whitelist of nodes:

* numbers (``int``, finite ``float``; a float keeps its decimal text, as in sympify);
* names -> ``sympy.Symbol`` (optionally only those in ``names``); ``pi`` and ``E`` are the
  constants;
* ``+ - * / **`` (``^`` is read as ``**``, like sympify) and unary ``+ -``;
* calls of ``Abs, sqrt, log, exp, Max, Min`` with positional arguments.

Both readings walk the same whitelist with the same function table, so what a certificate's
condition may say is exactly what a user's candidate may say. The float reading needs no
sympy (the controller path never imports it).

Anything else (attributes, subscripts, keywords, lambdas, strings, comparisons, ...)
raises :class:`~lyactl.errors.InvalidArgumentError` naming the argument, the expected form
and the offending text. Numeric powers with an exponent above ``MAX_EXPONENT`` are refused
(sympy evaluates them exactly, which can take unbounded time and memory).
"""

from __future__ import annotations

import ast
import math
import operator
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

from lyactl.errors import InvalidArgumentError, bad_arg

if TYPE_CHECKING:
    import sympy as sp

__all__ = ["evaluate", "parse_expr", "to_sympy", "FUNCTIONS", "MAX_LENGTH", "MAX_EXPONENT"]

FUNCTIONS: dict[str, Callable[..., float]] = {"Abs": abs, "sqrt": math.sqrt, "log": math.log, "exp": math.exp,
                                              "Max": max, "Min": min}
"""Functions an expression may call, as floats (the fixed table; not for users to extend);
:func:`_sympy_functions` is the same table in sympy."""

_CONSTANTS = {"pi": math.pi, "E": math.e}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.BitXor: operator.pow}
MAX_LENGTH = 10_000
MAX_EXPONENT = 10_000
_FORM = "an arithmetic expression of numbers, names, + - * / ** and Abs/sqrt/log/exp/Max/Min"


def parse_expr(text: str, name: str, names: Collection[str] | None = None) -> sp.Expr:
    """The sympy expression written in ``text``; ``name`` is the argument named in errors.

    ``names``, if given, are the only symbol names allowed. Cost: linear in the text.
    """
    tree = _parse(text, name)
    try:
        return _Sympy(name, text, names).build(tree.body)
    except RecursionError as exc:
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} (less deeply nested)", text)) from exc
    except (ValueError, TypeError, ZeroDivisionError) as exc:  # sympy refusing a valid tree, e.g. Max(x, zoo)
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} that sympy can build ({exc})", text)) from exc


def evaluate(text: str, env: Mapping[str, float], name: str = "expression") -> float:
    """The float value of ``text`` with the names of ``env`` bound (``pi`` and ``E`` are the
    constants); the same whitelist as :func:`parse_expr`, no sympy. Raises
    :class:`InvalidArgumentError` on a form outside it or an unbound name, and Python's own
    ``ZeroDivisionError`` / ``OverflowError`` / ``ValueError`` (e.g. ``log(0)``) from the
    arithmetic. Cost: linear in the text."""
    tree = _parse(text, name)
    try:
        return float(_Floats(name, text, env).build(tree.body))
    except RecursionError as exc:
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} (less deeply nested)", text)) from exc


def _parse(text: str, name: str) -> ast.Expression:
    """``ast.parse(text, mode="eval")``, refusing non-strings, empty or over-long text and
    syntax errors as :class:`InvalidArgumentError` naming ``name``."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_LENGTH:
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} (at most {MAX_LENGTH} characters)", text))
    try:
        return ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InvalidArgumentError(bad_arg(name, _FORM, text)) from exc


def to_sympy(value: object, name: str, names: Collection[str] | None = None) -> sp.Basic:
    """``value`` as sympy: strings through :func:`parse_expr`, anything else through
    ``sympy.sympify(strict=True)`` (numbers and sympy objects; never ``str(value)``)."""
    if isinstance(value, str):
        return parse_expr(value, name, names)
    import sympy as sp

    try:
        return sp.sympify(value, strict=True)
    except (sp.SympifyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(bad_arg(name, f"a sympy expression, a number, or a string holding {_FORM}",
                                           type(value).__name__)) from exc


class _Walker:
    """Walks the whitelisted nodes of one parsed expression; subclasses say what a number, a
    name and a function are (sympy objects or floats)."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def refuse(self, node: ast.AST, why: str = _FORM) -> InvalidArgumentError:
        found = ast.get_source_segment(self.text.strip(), node) or self.text
        return InvalidArgumentError(bad_arg(self.name, why, found))

    def build(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and (type(node.value) is int
                                               or type(node.value) is float and math.isfinite(node.value)):
            return self.number(node.value)
        if isinstance(node, ast.Name):
            return self.symbol(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(node.op, (ast.Pow, ast.BitXor)):
                self.check_power(node, left, right)
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
                and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
            return self.function(node.func.id)(*(self.build(a) for a in node.args))
        raise self.refuse(node)

    def number(self, value: int | float) -> Any:
        return value

    def symbol(self, node: ast.Name) -> Any:
        raise NotImplementedError

    def function(self, fname: str) -> Callable[..., Any]:
        return FUNCTIONS[fname]

    def check_power(self, node: ast.AST, base: Any, exponent: Any) -> None:
        """Refuse a power that costs too much to evaluate (nothing to refuse for floats)."""


class _Floats(_Walker):
    """Floats, names bound by ``env``."""

    def __init__(self, name: str, text: str, env: Mapping[str, float]) -> None:
        super().__init__(name, text)
        self.env = env

    def number(self, value: int | float) -> float:
        return float(value)

    def symbol(self, node: ast.Name) -> float:
        if node.id in self.env:
            return float(self.env[node.id])
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise self.refuse(node, f"a name bound in the expression's numbers {sorted(self.env)} (or pi, E)")


class _Sympy(_Walker):
    """sympy expressions, names as symbols (only ``names`` when given)."""

    def __init__(self, name: str, text: str, names: Collection[str] | None) -> None:
        super().__init__(name, text)
        self.names = None if names is None else frozenset(names)

    def number(self, value: int | float) -> "sp.Expr":
        import sympy as sp

        # an int exactly; a float by its decimal text, 15+ digits, as sympify reads it
        return sp.Integer(value) if type(value) is int else sp.Float(repr(value))

    def function(self, fname: str) -> Callable[..., "sp.Expr"]:
        return _sympy_functions()[fname]

    def check_power(self, node: ast.AST, base: Any, exponent: Any) -> None:
        # sympy evaluates numeric powers exactly, in unbounded time and memory
        if base.is_number and exponent.is_number and abs(exponent) > MAX_EXPONENT:
            raise self.refuse(node, f"a numeric exponent of at most {MAX_EXPONENT} in absolute value")

    def symbol(self, node: ast.Name) -> "sp.Expr":
        import sympy as sp

        if node.id in _CONSTANTS:
            return {"pi": sp.pi, "E": sp.E}[node.id]
        if node.id.startswith("_") or node.id in FUNCTIONS or (self.names is not None and node.id not in self.names):
            allowed = "a name" if self.names is None else f"a name among {sorted(self.names)}"
            raise self.refuse(node, f"{allowed} (or pi, E) in {_FORM}")
        return sp.Symbol(node.id)


def _sympy_functions() -> dict[str, Callable[..., "sp.Expr"]]:
    """:data:`FUNCTIONS` in sympy (imported here: the float reading needs no sympy)."""
    import sympy as sp

    return {"Abs": sp.Abs, "sqrt": sp.sqrt, "log": sp.log, "exp": sp.exp, "Max": sp.Max, "Min": sp.Min}
