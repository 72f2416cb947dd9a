"""Run by ``tests/test_torch_fsdp.py``: a tiny GPT trained with lyactl, either sharded with
FSDP2 over 2 CPU ranks (gloo, under ``torch.distributed.run``) or in one process on the
same global batches replaying the sharded run's decisions (``--single EVENTS``).

The controller decides FROM the synchronised statistics (argmin ``g_sq``): report 1 prunes
a head and an MLP group, report 2 a residual-channel group (every unit, the tied
embedding included), report 3 freezes block 0 and removes block 2. Each rank writes what
it saw to ``OUT/rank{r}.pt`` (gathered parameters and optimizer state, statistics,
events, shapes, whether every parameter is sharded).

Flags: ``--ckpt DIR --save-at S`` saves a sharded checkpoint after step S, ``--resume`` resumes
from the newest checkpoint in DIR; ``--mutant skip-reshard`` leaves changed units
unsharded, ``--mutant one-rank`` slices on rank 0 only (both must be detected).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends"), str(HERE.parent)]

import torch.distributed as dist  # noqa: E402
from scripted import Out  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl.control.decision_log import event_from_json, event_to_json  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402

STEPS, INTERVAL, B, V, T = 8, 2, 2, 29, 16
CFG = dict(vocab_size=V, seq_len=T, d_model=64, n_layer=3, n_head=4, head_dim=16, mlp_hidden=192)


class ArgminController:
    """Decides from the statistics (rank-local statistics would give different argmins)."""

    def __init__(self, groups):
        self.groups, self.n = groups, 0

    def _pick(self, stats, kind):
        cand = [i for i, g in enumerate(self.groups) if g.kind is kind and np.isfinite(stats.g_sq[i])]
        return min(cand, key=lambda i: stats.g_sq[i])

    def _event(self, stats, picks):
        return Out(events=(Event(self.n - 1, stats.step, tuple(Decision(stats.step, self.groups[i].name, i, a)
                                                                for i, a in picks)),))

    def observe(self, stats):
        self.n += 1
        name = {g.name: i for i, g in enumerate(self.groups)}
        if self.n == 1:
            return self._event(stats, [(self._pick(stats, GroupKind.HEAD), Action.PRUNE),
                                       (self._pick(stats, GroupKind.MLP_BLOCK), Action.PRUNE)])
        if self.n == 2:
            return self._event(stats, [(self._pick(stats, GroupKind.CHANNEL_BLOCK), Action.PRUNE)])
        if self.n == 3:
            return self._event(stats, [(name["blocks.0"], Action.FREEZE), (name["blocks.2"], Action.PRUNE)])
        return Out()

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = int(state["n"])


class Replay:
    """The sharded run's events, report by report (for the single-process run)."""

    def __init__(self, events):
        self.events, self.n = events, 0

    def observe(self, stats):
        self.n += 1
        return Out(events=tuple(e for e in self.events if e.step == stats.step))


def batch(step: int, rank: int) -> torch.Tensor:
    return torch.randint(0, V, (B, T + 1), generator=torch.Generator().manual_seed(1000 * step + rank))


def mutate(kind: str, rank: int) -> None:
    """Install a mutant of the FSDP surgery (the test must detect each)."""
    from lyactl_torch import fsdp

    if kind == "skip-reshard":
        fsdp.close_unit = lambda opened, optimizer: None
    elif kind == "one-rank":
        real = fsdp.prune_units
        fsdp.prune_units = lambda layout, opt, axis, units: (real(layout, opt, axis, units) if rank == 0 else
                                                             fsdp.AxisRemoval(axis, tuple(units), ()))


def full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor().detach() if isinstance(t, DTensor) else t.detach().clone()


def build(world: int):
    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(**CFG))
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for blk in model.blocks:
            fully_shard(blk, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    return model, opt


def start_ranks(single: bool, timeout: float = 20.0) -> tuple[int, int]:
    """``(world, rank)``: one process (``single``) or torchrun's ranks, gloo initialised."""
    if single:
        return 1, 0
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    return dist.get_world_size(), dist.get_rank()


def backend_for(model, opt, world: int):
    """FSDPBackend on a sharded model, TorchBackend in one process (groups of 16 units)."""
    if world > 1:
        from lyactl_torch.fsdp import FSDPBackend

        return FSDPBackend(model, opt, block=16)
    return L.TorchBackend(model, opt, block=16)


def global_step(model, opt, step: int, world: int, rank: int) -> torch.Tensor:
    """One optimizer step on the step's global batch (this rank's half of it when sharded);
    returns this rank's loss."""
    x = torch.cat([batch(step, r) for r in range(2)]) if world == 1 else batch(step, rank)
    opt.zero_grad(set_to_none=True)
    loss = model(x[:, :-1], x[:, 1:])[1]
    loss.backward()
    opt.step()
    return loss


def global_loss(loss: torch.Tensor, world: int) -> float:
    """The mean of the ranks' losses (collective when sharded)."""
    g = loss.detach().clone()
    if world > 1:
        dist.all_reduce(g)
    return float(g) / world


def finish(out: dict, folder: Path, rank: int, world: int) -> None:
    """Save this rank's ``out`` to ``folder/rank{rank}.pt``; tear gloo down once all are done."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(out, folder / f"rank{rank}.pt")
    if world > 1:
        dist.barrier()  # all ranks done before gloo is torn down (a racing teardown aborts)
        dist.destroy_process_group()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--single", type=Path, default=None)
    ap.add_argument("--ckpt", type=Path, default=None)
    ap.add_argument("--save-at", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--mutant", default="none")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    world, rank = start_ranks(a.single is not None)
    if world > 1:
        mutate(a.mutant, rank)
    model, opt = build(world)
    backend = backend_for(model, opt, world)
    ctl = L.Lyactl(model, opt, None, interval=INTERVAL, backend=backend)
    if a.single:
        ctl.controller = Replay([event_from_json(e) for e in json.loads(a.single.read_text())])
    else:
        ctl.controller = ArgminController(backend.groups())
    start = 0
    if a.resume:
        from lyactl_torch.fsdp_checkpoint import load_fsdp_run

        start = load_fsdp_run(a.ckpt, ctl)
    for step in range(start + 1, STEPS + 1):
        ctl.step(global_step(model, opt, step, world, rank))
        if a.ckpt is not None and step == a.save_at:
            from lyactl_torch.fsdp_checkpoint import save_fsdp_run

            save_fsdp_run(a.ckpt, ctl, step)
    from torch.distributed.tensor import DTensor

    out = {"events": [event_to_json(e) for e in ctl.events], "stats": [s for s in ctl.stats], "start": start,
           "params": {n: full(p) for n, p in model.named_parameters()},
           "optim": {n: {k: full(v) for k, v in opt.state[p].items()} for n, p in model.named_parameters()
                     if p in opt.state},  # model order: the gathers match on every rank
           "sharded": all(isinstance(p, DTensor) for p in model.parameters()),
           "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()}, "step": ctl.n_steps}
    finish(out, a.out, rank, world)


if __name__ == "__main__":
    main()
