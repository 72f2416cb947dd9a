"""The engine's sympy-backed names load on first use: a training loop that imports only the
controller (or the torch backend) does not pay for sympy, and every public name resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lyactl

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> set[str]:
    probe = code + "; import sys; print(' '.join(m for m in ('sympy', 'control') if m in sys.modules))"
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'backends'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return set(out.stdout.split())


def test_the_controller_path_does_not_import_sympy():
    assert _loaded_after("import lyactl, lyactl.control.controller, lyactl.control.decision_log") == set()
    assert "sympy" in _loaded_after("import lyactl; lyactl.SymbolicSystem")


def test_the_torch_backend_does_not_import_sympy():
    pytest.importorskip("torch")
    assert _loaded_after("import lyactl_torch") == set()


def test_every_public_name_resolves_and_is_listed():
    for name in lyactl.__all__:
        assert getattr(lyactl, name) is not None
    assert set(lyactl.__all__) <= set(dir(lyactl))
    with pytest.raises(AttributeError, match="no_such_name"):
        lyactl.no_such_name  # noqa: B018
