"""Run by ``tests/test_torch_fsdp_penalty.py``: the proximal group-lasso penalty under FSDP2,
2 CPU ranks with gloo under ``torch.distributed.run``, or the same run in one process on the
same global batches (``--single``, a :class:`TorchBackend`).

Scripted run: the tiny GPT of ``fsdp_run.py`` (3 blocks, ``fully_shard`` per block and at
the root) trains ``STEPS`` steps with statistics every ``INTERVAL``; :class:`Scripted`
sets strengths on two heads, two MLP groups, a residual-channel group and a LAYER group
(overlapping kinds; one NaN strength) at report 1, prunes the strongest-penalised head at
report 3 (the penalty's maps are rebuilt after the surgery) and keeps the others
penalised to the end. ``--budget``: afterwards a fresh model trains ``BUDGET_STEPS``
steps under the real controller in budget mode
(:func:`lyactl.app.runconfig.build_controller`, a PI penalty that prunes what it drives to
zero). Last, in the sharded scripted run, every rank sets strengths that differ by rank:
the check must refuse them on every rank and keep the previous ones.

Each rank writes ``OUT/rank{r}.pt``: per run the gathered parameters (model order), the
global loss of every step, the strengths after every report (``prox.lam_host``), the
statistics, the events, the shapes and whether every parameter is still a DTensor; and
the refusal of rank-dependent strengths (its message, the strengths kept).

``--mutant local-norms``: the sharded prox uses each rank's un-all-reduced shard norms
(the test must detect it).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends"), str(HERE.parent)]

from scripted import Out  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl.control.decision_log import event_to_json  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402

from fsdp_run import (  # noqa: E402  (the same model, data, setup and steps)
    INTERVAL, backend_for, build, finish, full, global_loss, global_step, start_ranks)

STEPS, BUDGET_STEPS = 12, 40
LAM = {"blocks.0.attn.head.1": 400.0, "blocks.1.attn.head.2": 40.0, "blocks.0.mlp.block.3": 40.0,
       "blocks.2.mlp.block.0": 40.0, "channels.2": 20.0, "blocks.1": 10.0}
NAN = "blocks.2.attn.head.0"  # a NaN strength: no action
ZEROED = "blocks.0.attn.head.1"  # driven to zero by its strength, pruned at report 3


class Scripted:
    """Report 1 sets :data:`LAM`; report 3 prunes :data:`ZEROED` and drops its strength."""

    def __init__(self, groups):
        self.index, self.n = {g.name: i for i, g in enumerate(groups)}, 0
        self.lam = np.zeros(len(groups))

    def observe(self, stats):
        self.n += 1
        if self.n == 1:
            for name, v in LAM.items():
                self.lam[self.index[name]] = v
            self.lam[self.index[NAN]] = math.nan
            return Out(penalty=self.lam.copy())
        if self.n == 3:
            self.lam[self.index[ZEROED]] = 0.0
            i = self.index[ZEROED]
            return Out(events=(Event(0, stats.step, (Decision(stats.step, ZEROED, i, Action.PRUNE),)),),
                       penalty=self.lam.copy())
        return Out()


def budget_controller(backend):
    """The real controller in budget mode: a 30 % FLOP budget, decisions from report 2 on."""
    from lyactl.app.runconfig import ControllerSection, build_controller

    sec = ControllerSection(interval=INTERVAL, block=16, budget=0.3, u_max=3.0, warmup_frac=0.1, last_frac=0.9,
                            hysteresis=2, window=4, lag=1, min_steps_between_events=0, cooldown_steps=10)
    return build_controller(sec, BUDGET_STEPS, backend.groups(), backend.constraints(), backend.flops_model)


def mutate(kind: str) -> None:
    """Install a broken sharded prox (the test must detect it)."""
    from lyactl_torch.fsdp_penalty import ShardedProximalGroupLasso
    from lyactl_torch.penalty import ProximalGroupLasso

    if kind == "local-norms":  # the rank's shard sums, no all-reduce
        ShardedProximalGroupLasso.squared_norms = ProximalGroupLasso.squared_norms


def train(make_controller, steps: int, world: int, rank: int) -> tuple[dict, object]:
    """``steps`` steps of a fresh model under ``make_controller(backend)``; what the rank
    saw, and the backend."""
    from torch.distributed.tensor import DTensor

    model, opt = build(world)
    backend = backend_for(model, opt, world)
    ctl = L.Lyactl(model, opt, make_controller(backend), interval=INTERVAL, backend=backend)
    losses, lams = [], []
    for step in range(1, steps + 1):
        loss = global_step(model, opt, step, world, rank)
        losses.append(global_loss(loss, world))
        ctl.step(loss)
        if step % INTERVAL == 0:
            lams.append(backend.prox.lam_host.copy())
    return ({"params": {n: full(p) for n, p in model.named_parameters()}, "losses": losses, "lams": lams,
             "stats": list(ctl.stats), "events": [event_to_json(e) for e in ctl.events],
             "names": [g.name for g in backend.groups()],
             "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()},
             "sharded": all(isinstance(p, DTensor) for p in model.parameters())}, backend)


def disagree(backend, rank: int) -> dict:
    """Set strengths that differ by rank; the refusal's message and the strengths kept."""
    from lyactl.errors import InvalidArgumentError

    before = backend.prox.lam_host.copy()
    try:
        backend.set_penalty(before + rank)
        message = None
    except InvalidArgumentError as exc:
        message = str(exc)
    return {"message": message, "kept": bool(np.array_equal(backend.prox.lam_host, before))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--single", action="store_true")
    ap.add_argument("--budget", action="store_true")
    ap.add_argument("--mutant", default="none")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    world, rank = start_ranks(a.single)
    if world > 1:
        mutate(a.mutant)
    out = {}
    out["scripted"], backend = train(lambda b: Scripted(b.groups()), STEPS, world, rank)
    if world > 1:
        out["disagree"] = disagree(backend, rank)
    if a.budget:
        out["budget"], _ = train(budget_controller, BUDGET_STEPS, world, rank)
    finish(out, a.out, rank, world)


if __name__ == "__main__":
    main()
