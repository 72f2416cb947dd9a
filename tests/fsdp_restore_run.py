"""Run by ``tests/test_torch_fsdp_restore.py``: restore (the guard's rollback) of an event
under FSDP2, 2 CPU ranks with gloo under ``torch.distributed.run``, or the same run in one
process on the same global batches (``--single``).

A tiny GPT (3 blocks, ``fully_shard`` per block and at the root) trains ``STEPS`` steps
with statistics every ``INTERVAL``. Report 1 applies one event (two heads, two MLP groups
and a residual-channel group pruned, block 0 frozen, block 2 removed); report 2 restores
it; training goes on. After the loop the same event is applied and restored once more by
direct calls, and the gathered state before and after is compared bitwise (an exact
undo). Each rank writes ``OUT/rank{r}.pt``: gathered parameters and optimizer state (model
order), the global loss of every step (the mean over ranks), the statistics of every
report, the shapes and the frozen
parameters at the start, after the apply and after the restore, whether every parameter is a DTensor, the number
of FSDP units and the names the direct round trip changed.

``--mutant`` installs a broken restore that the test must detect: ``one-rank`` (rank 1
skips the restore), ``skip-rebuild`` (no :meth:`FSDPBackend._rebuild` after the undo),
``zero-moments`` (the restored units' optimizer moments are not put back).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends"), str(HERE.parent)]

from scripted import Out  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402

from fsdp_run import (  # noqa: E402  (the same model, data, setup and steps)
    INTERVAL, STEPS, backend_for, build, finish, full, global_loss, global_step, start_ranks)

PRUNED = ("blocks.0.attn.head.1", "blocks.1.attn.head.2", "blocks.0.mlp.block.3", "blocks.1.mlp.block.5",
          "channels.2", "blocks.2")  # a LAYER group pruned: the block is removed
FROZEN = ("blocks.0",)


def the_event(groups, event_id: int, step: int) -> Event:
    index = {g.name: i for i, g in enumerate(groups)}
    return Event(event_id, step, tuple([Decision(step, n, index[n], Action.PRUNE) for n in PRUNED]
                                       + [Decision(step, n, index[n], Action.FREEZE) for n in FROZEN]))


class ApplyThenRestore:
    """Report 1 applies the event, report 2 restores it, later reports do nothing."""

    def __init__(self, groups):
        self.groups, self.n, self.event = groups, 0, None

    def observe(self, stats):
        self.n += 1
        if self.n == 1:
            self.event = the_event(self.groups, 0, stats.step)
            return Out(events=(self.event,))
        return Out(restores=(self.event,)) if self.n == 2 else Out()


def mutate(kind: str, rank: int, backend) -> None:
    """Install a broken restore (the test must detect each)."""
    from lyactl_torch import fsdp
    from lyactl_torch.backend import TorchBackend

    if kind == "one-rank" and rank == 1:
        backend.restore = lambda event: backend.held.pop(event.event_id)
    elif kind == "skip-rebuild":
        def restore(event):
            backend._rebuild = lambda: None
            TorchBackend.restore(backend, event)
            del backend._rebuild
        backend.restore = restore
    elif kind == "zero-moments":
        real = fsdp.restore_units
        fsdp.restore_units = lambda layout, opt, rec: real(layout, opt, fsdp.AxisRemoval(
            rec.axis, rec.units, tuple(fsdp.SliceRecord(r.s, r.data, {}) for r in rec.slices)))


def snapshot(model, opt) -> dict:
    """Gathered parameters and optimizer state, in model order (the same gathers on every rank)."""
    return {"params": {n: full(p) for n, p in model.named_parameters()},
            "optim": {n: {k: full(v) for k, v in opt.state[p].items()} for n, p in model.named_parameters()
                      if p in opt.state}}


def changed(a: dict, b: dict) -> list[str]:
    """Names whose tensors are not bitwise equal between two snapshots (or that differ in presence)."""
    out = [n for n in a["params"].keys() | b["params"].keys()
           if n not in a["params"] or n not in b["params"] or not torch.equal(a["params"][n], b["params"][n])]
    for n in a["optim"].keys() | b["optim"].keys():
        sa, sb = a["optim"].get(n, {}), b["optim"].get(n, {})
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            out.append(f"optim {n}")
    return sorted(out)


def train(model, opt, ctl, world: int, rank: int) -> list[float]:
    """``STEPS`` steps; returns the global loss of each (the mean of the ranks' losses)."""
    losses = []
    for step in range(1, STEPS + 1):
        loss = global_step(model, opt, step, world, rank)
        losses.append(global_loss(loss, world))
        ctl.step(loss)
    return losses


def run(model, opt, backend, world: int, rank: int) -> dict:
    """Train with apply-then-restore, then one direct round trip; what the rank saw."""
    from torch.distributed.tensor import DTensor

    from lyactl_torch.fsdp_units import units

    shapes, frozen = [], []

    def look(*_):
        shapes.append({n: tuple(p.shape) for n, p in model.named_parameters()})
        frozen.append(sorted(n for n, p in model.named_parameters() if not p.requires_grad))

    look()
    ctl = L.Lyactl(model, opt, ApplyThenRestore(backend.groups()), interval=INTERVAL, backend=backend, on_event=look)
    losses = train(model, opt, ctl, world, rank)
    final = snapshot(model, opt)
    ev = the_event(backend.groups(), 1, backend.step)
    backend.apply(ev)
    backend.restore(ev)
    return final | {"losses": losses, "stats": list(ctl.stats), "shapes": shapes, "frozen": frozen,
                    "round_trip_changed": changed(final, snapshot(model, opt)),
                    "sharded": all(isinstance(p, DTensor) for p in model.parameters()),
                    "n_units": len(units(model)) if world > 1 else None,
                    "kinds": [r["kind"] for r in backend.record], "held": sorted(backend.held)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--single", action="store_true")
    ap.add_argument("--mutant", default="none")
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    world, rank = start_ranks(a.single, a.timeout)
    model, opt = build(world)
    backend = backend_for(model, opt, world)
    if world > 1:
        mutate(a.mutant, rank, backend)
    finish(run(model, opt, backend, world, rank), a.out, rank, world)

if __name__ == "__main__":
    main()
