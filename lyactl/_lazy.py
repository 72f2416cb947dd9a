"""Names of a package imported from their modules on first use (PEP 562), for packages
whose modules are costly to import (sympy for the analysis engine, torch for a backend)."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, tuple[str, ...]], namespace: dict[str, Any]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``table`` maps a submodule (relative to
    ``package``) to the names it provides; a looked-up name is imported once and stored in
    ``namespace`` (the package's ``globals()``), so later lookups skip this function."""
    where = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value
        return value

    return __getattr__
