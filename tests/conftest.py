"""Shared pytest setup: put the repository root on sys.path so ``import theory`` works
(``theory/`` is not an installed package). Keep this file minimal; add fixtures below."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
