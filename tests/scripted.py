"""A controller output for scripted test controllers (the fields the backend loop reads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Out"]


@dataclass
class Out:
    events: tuple = ()
    restores: tuple = ()
    releases: tuple = ()
    penalty: np.ndarray | None = None
    held: bool = False
