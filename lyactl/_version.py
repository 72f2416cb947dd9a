"""The single source of lyactl's version (read by pyproject.toml and the CLI)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
