"""Shared pytest setup: put the repository root on sys.path so ``import theory`` works
(``theory/`` is not an installed package). Keep this file minimal; add fixtures below."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread per test module: on 2 busy cores, two threads ran tiny models
    tens of times slower. No-op where torch is not installed (or not imported yet)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
