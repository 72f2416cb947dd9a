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


# Hypothesis profiles. "ci" (the default) derandomizes: the examples are fixed by the test,
# so a landing cannot fail on a draw that an earlier run never made (stop 9 did, on a
# sympy corner case). "explore" draws fresh, many more examples: run it to hunt for bugs,
#   LYACTL_HYPOTHESIS=explore python -m pytest tests
# and turn what it finds into fixed regression tests.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=500, print_blob=True)
settings.load_profile(os.environ.get("LYACTL_HYPOTHESIS", "ci"))


@pytest.fixture
def host_syncs(monkeypatch):
    """Counts of ``Tensor.cpu``, ``.item`` and ``.tolist`` calls from now on (host syncs)."""
    import torch

    calls = {"cpu": 0, "item": 0, "tolist": 0}
    for meth in calls:
        orig = getattr(torch.Tensor, meth)

        def wrapped(self, *a, _orig=orig, _m=meth, **k):
            calls[_m] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, meth, wrapped)
    return calls
