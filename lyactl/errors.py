"""Errors raised by lyactl.

Every error subclasses a built-in exception (so ``except ValueError`` keeps working) and
its message names the argument, what was expected and what was found. Use :func:`bad_arg`
to build that message the same way everywhere.
"""

from __future__ import annotations

__all__ = [
    "LyactlError",
    "InvalidArgumentError",
    "ShapeError",
    "NonFiniteError",
    "UnresolvedSymbolError",
    "UnsupportedModelError",
    "CheckpointError",
    "DataFileError",
    "bad_arg",
]


class LyactlError(Exception):
    """Base class of every error lyactl raises on purpose (a user error, not a bug)."""


class InvalidArgumentError(LyactlError, ValueError):
    """An argument has the wrong value (negative step size, unknown option, ...)."""


class ShapeError(LyactlError, ValueError):
    """An array has the wrong shape (non-square matrix, mismatched lengths, ...)."""


class NonFiniteError(LyactlError, ValueError):
    """An input holds NaN or infinity where finite numbers are required."""


class UnresolvedSymbolError(LyactlError, ValueError):
    """A symbolic expression still holds symbols that were given no value."""


class UnsupportedModelError(LyactlError, TypeError):
    """A model (or one of its modules) is of a type a backend cannot handle."""


class CheckpointError(LyactlError, OSError):
    """A checkpoint is missing, truncated, corrupt or of an unknown format."""


class DataFileError(LyactlError, ValueError):
    """A data file is missing or malformed; the message names the file and the line."""


def bad_arg(name: str, expected: str, found: object) -> str:
    """Return the standard message ``"<name>: expected <expected>, found <found!r>"``."""
    text = repr(found)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{name}: expected {expected}, found {text}"
