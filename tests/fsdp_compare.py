"""Comparing a sharded run's rank with a single-process run of the same steps (the FSDP2
tests): float32 re-association is the only expected difference, so values agree to
``RTOL`` of each tensor's largest magnitude."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["ADDITIVE", "RTOL", "close", "load", "trace_problems"]

ADDITIVE = ("w_sq", "dw_sq", "g_sq", "gw", "m_sq")
RTOL = 1e-4  # of a tensor's largest magnitude: float32 re-association only


def load(folder: Path, rank: int) -> dict:
    """What a worker saved for ``rank`` (``folder/rank{rank}.pt``)."""
    return torch.load(folder / f"rank{rank}.pt", weights_only=False)


def close(a, b) -> bool:
    """``max |a - b| <= RTOL max |b|``, NaN where the other is NaN (a pruned group's statistics)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    ok = ~np.isnan(b)
    return bool(np.all(np.abs(a[ok] - b[ok]) <= RTOL * np.max(np.abs(b[ok]), initial=0.0)))


def trace_problems(run: dict, ref: dict) -> list[str]:
    """The steps' losses and the reports' additive statistics that differ beyond ``RTOL``."""
    found = [f"loss of step {i + 1}" for i, (a, b) in enumerate(zip(run["losses"], ref["losses"], strict=True))
             if abs(a - b) > RTOL * abs(b)]
    for a, b in zip(run["stats"], ref["stats"], strict=True):
        found += [f"{f} of the report at step {b.step}" for f in ADDITIVE if not close(getattr(a, f), getattr(b, f))]
    return found
