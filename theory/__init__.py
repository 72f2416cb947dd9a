"""Executable derivations: each returns ``(derived, independent numeric check)``."""

__all__: list[str] = []
