"""Run by ``tests/test_torch_fsdp_memory.py``: what an FSDP2 event leaves allocated.

A tiny GPT sharded with ``fully_shard`` per block and at the root (bf16 ``MixedPrecisionPolicy``)
over 2 CPU ranks (gloo, under ``torch.distributed.run``) trains with Python's cyclic garbage
collector OFF, so that only reference counting frees memory (as between two of the rare
full collections of a long GPU run). Two events each prune a quarter of every block's live
MLP groups, then the second is restored; one training step follows each. Each rank writes
``OUT/rank{r}.json`` with, per phase:

* ``stale_alive``: the FSDP2 objects of the units the event replaced (states, parameter
  groups, ``FSDPParam``\\ s, sharded parameters) still alive (0: freed by reference counts);
* ``other_bytes``: bytes of live tensor storages that are none of the model's parameter
  shards, their gradients, the optimizer state or the held records' removed values;
* ``record_params_live``: whether every held record's slice points at a current parameter;
* ``numel``, ``held_bytes``: the model's (global) parameter count and the bytes of the held
  records' removed values (parameters and AdamW moments, full, on the host, every rank);
* ``forward``: per block after the first, in the step after the phase, whether the
  previous block's parameters were sharded again (``reshard_after_forward``) and the
  dtype the block computed in (the mixed-precision policy).
"""

from __future__ import annotations

import datetime
import gc
import importlib
import json
import sys
import weakref
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "backends"), str(HERE.parent)]

import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from lyactl_torch.fsdp import FSDPBackend  # noqa: E402

CFG = dict(vocab_size=64, seq_len=16, d_model=64, n_layer=3, n_head=4, head_dim=16, mlp_hidden=256,
           tie_embeddings=False)
B = 2


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def owned(model, opt, backend) -> set[int]:
    """Storages of the parameter shards, their gradients, the optimizer state and the held
    records' removed values (host copies)."""
    ts = [local(p) for p in model.parameters()] + [local(p.grad) for p in model.parameters() if p.grad is not None]
    ts += [local(v) for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    for done in backend.held.values():
        for _, rec in done:
            for r in getattr(rec, "slices", ()):
                ts += [r.data, *r.state.values()]
    return {t.untyped_storage().data_ptr() for t in ts}


def other_bytes(model, opt, backend) -> int:
    mine, seen, total = owned(model, opt, backend), set(), 0
    for o in gc.get_objects():
        if isinstance(o, torch.Tensor) and not isinstance(o, DTensor) and o.device.type == "cpu":
            s = o.untyped_storage()
            if s.data_ptr() and s.data_ptr() not in mine and s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
    return total


def fsdp_objects(model) -> list[weakref.ref]:
    """Weak references to the blocks' FSDP objects (an MLP cut replaces every block unit,
    not the root)."""
    refs = []
    for m in model.modules():
        if isinstance(m, FSDPModule) and m is not model:
            st = fully_shard.state(m)
            refs.append(weakref.ref(st))
            for g in st._fsdp_param_groups:
                refs.append(weakref.ref(g))
                refs += [weakref.ref(o) for fp in g.fsdp_params for o in (fp, fp.sharded_param)]
    return refs


def step(model, opt, rank: int, n: int) -> tuple[list[list], torch.Tensor]:
    """One training step: per block after the first, [previous block sharded, dtype computed
    in]; and the loss (its graph holds the units it ran through, as a training loop's does)."""
    seen, hooks, blocks = [], [], list(model.blocks)
    for i in range(1, len(blocks)):
        hooks.append(blocks[i].register_forward_pre_hook(  # runs after FSDP's (prepended) pre-hook
            lambda mod, args, i=i: seen.append([all(isinstance(p, DTensor) for p in blocks[i - 1].parameters()),
                                                str(mod.mlp.fc.weight.dtype)])))
    gen = torch.Generator().manual_seed(n + 100 * rank)
    x = torch.randint(0, CFG["vocab_size"], (B, CFG["seq_len"] + 1), generator=gen)
    opt.zero_grad(set_to_none=True)
    loss = model(x[:, :-1], x[:, 1:])[1]
    loss.backward()
    opt.step()
    for h in hooks:
        h.remove()
    return seen, loss


def quarter_of_mlp(backend, groups, eid: int) -> Event:
    """PRUNE a quarter of each block's live MLP groups (the first ones: no statistics needed)."""
    picks = []
    for layer in sorted({g.layer for g in groups if g.kind is GroupKind.MLP_BLOCK}):
        live = [i for i, g in enumerate(groups) if g.kind is GroupKind.MLP_BLOCK and g.layer == layer
                and not any(i in gs for gs in backend.held_groups.values())]
        picks += live[:len(live) // 4]
    return Event(eid, eid, tuple(Decision(eid, groups[i].name, i, Action.PRUNE) for i in picks))


def phase(name, change, model, opt, backend, rank, n, last: list) -> dict:
    """``change()`` while ``last == [previous loss]`` is alive, then one step (its loss
    replaces the previous in ``last``); what is left."""
    refs = fsdp_objects(model)
    params = [r for r in refs if isinstance(r(), torch.Tensor)]
    change()
    graded = sum(r().grad is not None for r in params if r() is not None)  # ``last``'s graph holds them
    last.clear()
    fwd, loss = step(model, opt, rank, n)
    last.append(loss)
    current = {id(p) for p in model.parameters()}
    held = [r for done in backend.held.values() for _, rec in done for r in getattr(rec, "slices", ())]
    return {"phase": name, "numel": sum(p.numel() for p in model.parameters()),
            "held_bytes": sum(t.nbytes for r in held for t in (r.data, *r.state.values())),
            "stale": len(refs), "stale_alive": sum(r() is not None for r in refs), "stale_graded": graded,
            "other_bytes": other_bytes(model, opt, backend), "forward": fwd,
            "record_params_live": all(id(r.s.param) in current for r in held)}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    # The first fully_shard call of a process imports torch._dynamo, and that import leaves
    # a reference cycle through its frames holding the first unit's FSDP state (torch's,
    # one-off); importing it first keeps that out of what is measured here.
    importlib.import_module("torch._dynamo")
    gc.disable()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(**CFG))
    kw = dict(mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    mesh = init_device_mesh("cpu", (world,))
    for blk in model.blocks:
        fully_shard(blk, mesh=mesh, **kw)
    fully_shard(model, mesh=mesh, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    backend = FSDPBackend(model, opt, block=16, fsdp_kwargs=kw)
    groups = backend.groups()
    for n in range(2):
        step(model, opt, rank, n)
    fwd, loss = step(model, opt, rank, 2)
    rows = [{"phase": "before", "other_bytes": other_bytes(model, opt, backend), "forward": fwd,
             "numel": sum(p.numel() for p in model.parameters()), "held_bytes": 0}]
    last = [loss]
    del loss
    ev = [quarter_of_mlp(backend, groups, 0)]
    rows.append(phase("event 0", lambda: backend.apply(ev[0]), model, opt, backend, rank, 3, last))
    ev.append(quarter_of_mlp(backend, groups, 1))
    rows.append(phase("event 1", lambda: backend.apply(ev[1]), model, opt, backend, rank, 4, last))
    rows.append(phase("restore 1", lambda: backend.restore(ev[1]), model, opt, backend, rank, 5, last))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({"rows": rows, "pruned": [len(e.decisions) for e in ev]}))
    dist.barrier()  # all ranks done before gloo is torn down (a racing teardown aborts)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
