"""Scripted test controllers: the output the backend loop reads, and a controller that decides
from the statistics (used by the multi-process worker scripts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lyactl.control.groups import Action, Decision, Event, GroupKind

__all__ = ["Out", "ArgminController"]


@dataclass
class Out:
    events: tuple = ()
    restores: tuple = ()
    releases: tuple = ()
    penalty: np.ndarray | None = None
    held: bool = False


class ArgminController:
    """Prunes the lowest-``g_sq`` head and MLP group at its first report, freezes block 0 at
    its second (decided FROM the synchronised statistics: identical on every rank)."""

    def __init__(self, groups):
        self.groups, self.n = groups, 0

    def _pick(self, stats, kind):
        cand = [i for i, g in enumerate(self.groups) if g.kind is kind and np.isfinite(stats.g_sq[i])]
        return min(cand, key=lambda i: stats.g_sq[i])

    def observe(self, stats):
        self.n += 1
        if self.n == 1:
            idx = [self._pick(stats, GroupKind.HEAD), self._pick(stats, GroupKind.MLP_BLOCK)]
            return Out(events=(Event(0, stats.step, tuple(Decision(stats.step, self.groups[i].name, i, Action.PRUNE)
                                                           for i in idx)),))
        if self.n == 2:
            i = next(i for i, g in enumerate(self.groups) if g.name == "blocks.0")
            return Out(events=(Event(1, stats.step, (Decision(stats.step, "blocks.0", i, Action.FREEZE),)),))
        return Out()
