"""Micro-benchmarks (see benchmarks/__init__.py)."""
