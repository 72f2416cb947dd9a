"""Which of the groups ready for a decision go in one event: the constraints between groups.

The controller hands over the ready groups in priority order (largest FLOP saving first);
:func:`select` walks them and keeps those the constraints allow:

* ``together`` constraints: a group goes only with every active member of its constraint,
  and only if all of them are ready for the same action;
* ``min_keep``: at least that many members of a constraint stay alive after pruning;
* ``uniform`` constraints: a prune takes the same number of members from every block still
  present (the first ready members of each block, in priority order), or nothing;
* at most ``limit`` groups in one event (a uniform prune counts one group per block);
* a group inside a block whose LAYER group is pruned (now or before) goes with the block
  and gets no decision of its own (the backend removes the block; its statistics turn NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from lyactl.control.groups import PRUNED, Constraint, Status

__all__ = ["Structure", "select"]


@dataclass(frozen=True, eq=False)
class Structure:
    """The groups' fixed structure: ``is_layer`` and ``layer_of`` (``[n]``; -1 outside
    blocks) and the constraints."""

    is_layer: np.ndarray
    layer_of: np.ndarray
    constraints: tuple[Constraint, ...]

    def inside_pruned_layer(self, status: np.ndarray, extra: Sequence[int] = ()) -> np.ndarray:
        """``[n]``: non-layer groups of a block whose LAYER group is pruned (or in ``extra``)."""
        gone = set(self.layer_of[(status == PRUNED) & self.is_layer].tolist()) | set(extra)
        return ~self.is_layer & (self.layer_of >= 0) & np.isin(self.layer_of, list(gone))


def select(ready: Mapping[int, int], status: np.ndarray, structure: Structure, limit: int,
           enough: Callable[[list[tuple[int, int]]], bool] | None = None) -> list[tuple[int, int]]:
    """``[(group, new status)]`` to decide now, from ``ready`` (group -> ``PRUNED`` or
    ``FROZEN``, in priority order). ``enough(picked)``, optional: stop adding units once it
    is True (a unit of together/uniform groups is never split). Cost: O(ready x
    constraints) Python steps, plus one ``enough`` call per unit considered."""
    s = structure
    alive = status != PRUNED
    picked: list[tuple[int, int]] = []
    taken: set[int] = set()
    gone = set(s.layer_of[(status == PRUNED) & s.is_layer].tolist())  # pruned blocks
    for i in ready:
        if enough is not None and picked and enough(picked):
            break
        if i in taken or (not s.is_layer[i] and s.layer_of[i] in gone):
            continue
        unit = _unit(i, ready, status, s.constraints)
        if unit is not None and ready[i] == PRUNED:
            unit = _uniform(unit, ready, status, s, taken, gone)
        if unit is None or len(picked) + len(unit) > limit:
            continue
        if ready[i] == PRUNED and not _keeps_enough(unit, alive, s.constraints):
            continue
        for j in unit:
            picked.append((j, ready[i]))
            taken.add(j)
            if ready[i] == PRUNED:
                alive[j] = False
                if s.is_layer[j]:
                    gone.add(int(s.layer_of[j]))
    layers = [int(s.layer_of[j]) for j, a in picked if a == PRUNED and s.is_layer[j]]
    inside = s.inside_pruned_layer(status, layers)
    return [(j, a) for j, a in picked if not inside[j]]


def _unit(i: int, ready: Mapping[int, int], status: np.ndarray, constraints: Sequence[Constraint]) -> list[int] | None:
    """The groups that must go with ``i`` (together constraints), None if not all ready."""
    unit = {i}
    for c in constraints:
        if c.together and i in c.members:
            unit.update(m for m in c.members if status[m] == Status.ACTIVE)
    if any(ready.get(j) != ready[i] for j in unit):
        return None
    return sorted(unit)


def _uniform(unit: list[int], ready: Mapping[int, int], status: np.ndarray, s: Structure, taken: set[int],
             gone: set[int]) -> list[int] | None:
    """``unit`` grown so that every ``uniform`` constraint it touches loses the same number
    of members in each block still present (not in ``gone``): the highest-priority ready,
    active, untaken members make up the difference; None if some block has too few."""
    out = set(unit)
    for c in s.constraints:
        if not c.uniform:
            continue
        members = {m for m in c.members if int(s.layer_of[m]) not in gone}
        if not out & members:
            continue
        count = {int(s.layer_of[m]): 0 for m in members}
        for j in out & members:
            count[int(s.layer_of[j])] += 1
        k = max(count.values())
        for layer, have in count.items():
            extra = [j for j in ready if j in members and int(s.layer_of[j]) == layer and ready[j] == PRUNED
                     and status[j] == Status.ACTIVE and j not in taken and j not in out
                     and _unit(j, ready, status, s.constraints) == [j]][:k - have]  # not tied to others
            if len(extra) < k - have:
                return None
            out.update(extra)
    return sorted(out)


def within_min_keep(order: np.ndarray, mask: np.ndarray, status: np.ndarray,
                    constraints: Sequence[Constraint]) -> np.ndarray:
    """``order`` (group indices, best first) without the groups that, chosen in turn on top of
    ``mask``, would leave a constraint fewer than ``min_keep`` members not PRUNED.

    The budget actuator's cover must count only groups that can be pruned: pushing the
    last head of a block that must keep one would look like covering the gap and never
    become a saving. Greedy in ``order``; O(sum of constraint sizes) per call.
    """
    left = [int((status[list(c.members)] != PRUNED).sum()) - c.min_keep - int(mask[list(c.members)].sum())
            for c in constraints]
    of: dict[int, list[int]] = {}
    for ci, c in enumerate(constraints):
        if c.min_keep > 0:
            for m in c.members:
                of.setdefault(int(m), []).append(ci)
    keep = []
    for g in order.tolist():
        cs = of.get(g, ())
        if all(left[c] > 0 for c in cs):
            keep.append(g)
            for c in cs:
                left[c] -= 1
    return np.asarray(keep, dtype=order.dtype)


def _keeps_enough(unit: list[int], alive: np.ndarray, constraints: Sequence[Constraint]) -> bool:
    for c in constraints:
        gone = sum(1 for j in unit if j in c.members)
        if gone and int(alive[list(c.members)].sum()) - gone < c.min_keep:
            return False
    return True
