"""The proximal group-lasso step on FSDP2-sharded parameters: shard-local norms, one all-reduce.

For every group with strength ``lam_g > 0``::

    w_g <- w_g * max(0, 1 - lr * lam_g / ||w_g||),    ||w_g||^2 = sum_r ||w_g^(r)||^2

with ``w_g^(r)`` the elements of group ``g`` in rank ``r``'s rows (FSDP2's ``Shard(0)``):
the norm is over ALL elements of the group, on every rank. The semantics are those of
:class:`.penalty.ProximalGroupLasso` (this class is one): an entry in groups of several
kinds is scaled by the product of their factors, all computed from the norms taken before
the step; a NaN strength is 0; nothing runs (no collective either) while every ``lam_g``
is 0.

Norms: each rank reduces the squares of its local shards (``DTensor.to_local()``) with the
position -> group maps of :class:`.fsdp_stats.ShardedReductionPlan` (cut to its rows; the
statistics' maps and :meth:`.stats._Class.reduce`), and ONE all-reduce SUM of the
``G + 1`` vector completes every penalised group's squared norm. Each rank then scales its
own rows in place. Every element lives on exactly one rank, so beyond the strengths there
is no replicated state to keep in step (the reduced vector, and so the factors, came out
bitwise equal on both gloo ranks in the tests; a last-bit difference between ranks would
only scale different rows of one group by factors one rounding apart).

Strengths: the controller runs on every rank on bitwise identical statistics, so ``lam``
is the same everywhere; :meth:`ShardedProximalGroupLasso.set_strength` checks it (one
all-reduce MAX of a CRC-32 of ``lam``'s bytes and of its negative) and raises on every rank
otherwise, keeping the previous strengths: different strengths would give different
factors, and a rank whose ``lam`` is all 0 would skip the step's all-reduce that the others
wait in.

Cost per step while active: O(P / R) device work per rank (about 6 kernels per parameter
holding a penalised group: no stacking across parameters, as in :mod:`.fsdp_stats`), one
all-reduce of ``G + 1`` numbers, no host sync. Per :meth:`~ShardedProximalGroupLasso.set_strength`
(once per report, and at a rebuild): one all-reduce of two int64 and one host sync.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lyactl.errors import InvalidArgumentError, bad_arg

from .fsdp_stats import ShardedReductionPlan, local
from .penalty import ProximalGroupLasso

__all__ = ["ShardedProximalGroupLasso", "same_on_every_rank"]


def same_on_every_rank(digest: int, group: Any, device: torch.device) -> bool:
    """Whether every rank of ``group`` passed the same ``digest`` (an int64); collective:
    one all-reduce MAX of ``[digest, -digest]`` (max = -max(-d) = min: all equal)."""
    t = torch.tensor([digest, -digest], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t[0]) == digest and int(-t[1]) == digest


class ShardedProximalGroupLasso(ProximalGroupLasso):
    """:class:`.penalty.ProximalGroupLasso` over a :class:`.fsdp_stats.ShardedReductionPlan`.

    Collective: construction, :meth:`rebuild`, :meth:`set_strength` and :meth:`apply` while
    active must be called on every rank alike (the backend does).
    """

    plan: ShardedReductionPlan

    def values(self, p: torch.Tensor) -> torch.Tensor:
        """The rank's shard of ``p`` (its rows; a view: scaled in place)."""
        return local(p)

    def squared_norms(self) -> torch.Tensor:
        """``[n_groups + 1]`` squared norms: the rank's shard sums, all-reduced (SUM)."""
        w_sq = super().squared_norms()
        dist.all_reduce(w_sq, op=dist.ReduceOp.SUM, group=self.plan.group)
        return w_sq

    def set_strength(self, lam: np.ndarray) -> None:
        """As :meth:`.penalty.ProximalGroupLasso.set_strength`, then check that every rank
        holds bitwise the same strengths; collective."""
        before = self.lam_host
        super().set_strength(lam)
        if not same_on_every_rank(zlib.crc32(self.lam_host.tobytes()), self.plan.group, self.plan.device):
            super().set_strength(before)
            raise InvalidArgumentError(bad_arg("penalty strength across ranks", "the same values on every rank "
                                               "(a deterministic controller)", "different values"))
