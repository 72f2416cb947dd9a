"""Parse a user's expression string into sympy without running any code.

``sympy.sympify`` and ``parse_expr`` evaluate their input as Python, so a string such as
``"__import__('os').system(...)"`` would run. :func:`parse_expr` instead parses the text
with :func:`ast.parse` (``mode="eval"``) and builds the sympy expression by walking a
whitelist of nodes:

* numbers (``int``, finite ``float``; a float keeps its decimal text, as in sympify);
* names -> ``sympy.Symbol`` (optionally only those in ``names``); ``pi`` and ``E`` are the
  constants;
* ``+ - * / **`` (``^`` is read as ``**``, like sympify) and unary ``+ -``;
* calls of ``Abs, sqrt, log, exp, Max, Min`` with positional arguments.

Anything else (attributes, subscripts, keywords, lambdas, strings, comparisons, ...)
raises :class:`~lyactl.errors.InvalidArgumentError` naming the argument, the expected form
and the offending text. Numeric powers with an exponent above ``MAX_EXPONENT`` are refused
(sympy evaluates them exactly, which can take unbounded time and memory).
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Callable, Collection

import sympy as sp

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["parse_expr", "to_sympy", "FUNCTIONS", "MAX_LENGTH", "MAX_EXPONENT"]

FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {"Abs": sp.Abs, "sqrt": sp.sqrt, "log": sp.log, "exp": sp.exp,
                                                "Max": sp.Max, "Min": sp.Min}
"""Functions an expression may call (the CLI-style fixed table; not for users to extend)."""

_CONSTANTS = {"pi": sp.pi, "E": sp.E}
_BINOPS: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.BitXor: operator.pow}
MAX_LENGTH = 10_000
MAX_EXPONENT = 10_000
_FORM = "an arithmetic expression of numbers, names, + - * / ** and Abs/sqrt/log/exp/Max/Min"


def parse_expr(text: str, name: str, names: Collection[str] | None = None) -> sp.Expr:
    """The sympy expression written in ``text``; ``name`` is the argument named in errors.

    ``names``, if given, are the only symbol names allowed. Cost: linear in the text.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_LENGTH:
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} (at most {MAX_LENGTH} characters)", text))
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InvalidArgumentError(bad_arg(name, _FORM, text)) from exc
    try:
        return _Builder(name, text, names).build(tree.body)
    except RecursionError as exc:
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} (less deeply nested)", text)) from exc
    except (ValueError, TypeError, ZeroDivisionError) as exc:  # sympy refusing a valid tree, e.g. Max(x, zoo)
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(bad_arg(name, f"{_FORM} that sympy can build ({exc})", text)) from exc


def to_sympy(value: object, name: str, names: Collection[str] | None = None) -> sp.Basic:
    """``value`` as sympy: strings through :func:`parse_expr`, anything else through
    ``sympy.sympify(strict=True)`` (numbers and sympy objects; never ``str(value)``)."""
    if isinstance(value, str):
        return parse_expr(value, name, names)
    try:
        return sp.sympify(value, strict=True)
    except (sp.SympifyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(bad_arg(name, f"a sympy expression, a number, or a string holding {_FORM}",
                                           type(value).__name__)) from exc


class _Builder:
    """Walks the whitelisted nodes of one parsed expression."""

    def __init__(self, name: str, text: str, names: Collection[str] | None) -> None:
        self.name, self.text, self.names = name, text, None if names is None else frozenset(names)

    def refuse(self, node: ast.AST, why: str = _FORM) -> InvalidArgumentError:
        found = ast.get_source_segment(self.text.strip(), node) or self.text
        return InvalidArgumentError(bad_arg(self.name, why, found))

    def build(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return sp.Integer(node.value)
        if isinstance(node, ast.Constant) and type(node.value) is float and math.isfinite(node.value):
            return sp.Float(repr(node.value))  # the decimal text, 15+ digits, as sympify reads it
        if isinstance(node, ast.Name):
            return self.symbol(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(node.op, (ast.Pow, ast.BitXor)) and left.is_number and right.is_number \
                    and abs(right) > MAX_EXPONENT:
                raise self.refuse(node, f"a numeric exponent of at most {MAX_EXPONENT} in absolute value")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
                and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
            return FUNCTIONS[node.func.id](*(self.build(a) for a in node.args))
        raise self.refuse(node)

    def symbol(self, node: ast.Name) -> sp.Expr:
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id.startswith("_") or node.id in FUNCTIONS or (self.names is not None and node.id not in self.names):
            allowed = "a name" if self.names is None else f"a name among {sorted(self.names)}"
            raise self.refuse(node, f"{allowed} (or pi, E) in {_FORM}")
        return sp.Symbol(node.id)
