"""Sharded run checkpoints of an FSDP2 lyactl loop (``torch.distributed.checkpoint``).

A checkpoint of step ``s`` in folder ``F`` is the directory ``F/step-<s:08d>/``:

* the DCP files (``.metadata``, one ``__<rank>_0.distcp`` per rank): the model's sharded
  state dict, every DTensor optimizer moment by parameter name, and the statistics
  snapshot ``p_prev`` (DTensors laid out like the parameters): each rank writes its shard;
* ``lyactl.pt`` (rank 0, ``torch.save`` of plain containers and tensors, loads with
  ``weights_only=True``): the loop state of :func:`.backend_state.loop_state` (structural
  history, held records as full host tensors, controller, counters), the optimizer's
  scalar state (``step``) and param-group hyper-parameters by name;
* ``rng-<rank>.pt``: each rank's random-generator states.

Crash safety: everything is written into ``F/.tmp-step-<s:08d>/``; after a barrier rank 0
renames it to ``F/step-<s:08d>`` (one atomic ``rename``) and fsyncs ``F``. A directory
named ``step-*`` is complete; a kill at any instant leaves the previous ones intact and
at most a ``.tmp-*`` directory, removed by the next save. The newest ``keep`` are kept.

Resume after a change of shapes: the fresh loop (original model, ``fully_shard`` applied,
fresh optimizer and controller) first REPLAYS the recorded structural history
(:func:`.backend_state.replay_structure`: the same events, unit by unit, on every rank),
so the model and optimizer have the checkpoint's shapes; then DCP loads the shards in place
into templates of those shapes, and the remaining values are put back
(:func:`.backend_state.load_loop_values`). Needs a file system all ranks see.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import DTensor

from lyactl.errors import CheckpointError, bad_arg

from .backend_state import load_loop_values, loop_state, replay_structure
from .loop import Lyactl
from .run_state import capture_rng, restore_rng

__all__ = ["FORMAT", "list_fsdp_checkpoints", "save_fsdp_run", "load_fsdp_run"]

FORMAT = "lyactl_torch.fsdp_run/1"
_DIR = re.compile(r"^step-(\d{8})$")


def list_fsdp_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every complete checkpoint in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := _DIR.match(p.name))), reverse=True)


def _split_optimizer(loop: Lyactl) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(DTensor moments, other state, param groups) of the optimizer, by parameter name."""
    model, opt = loop.backend.model, loop.backend.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    sharded = {names[id(p)]: {k: v for k, v in st.items() if isinstance(v, DTensor)} for p, st in opt.state.items()}
    other = {names[id(p)]: {k: v for k, v in st.items() if not isinstance(v, DTensor)} for p, st in opt.state.items()}
    groups = [{**{k: v for k, v in pg.items() if k != "params"}, "names": [names[id(p)] for p in pg["params"]]}
              for pg in opt.param_groups]
    return sharded, other, groups


def save_fsdp_run(folder: str | Path, loop: Lyactl, step: int, *, keep: int = 2) -> Path:
    """Write the checkpoint of ``loop`` after ``step`` steps (collective); return its directory."""
    folder, rank = Path(folder), dist.get_rank()
    tmp, final = folder / f".tmp-step-{step:08d}", folder / f"step-{step:08d}"
    state = loop_state(loop)
    prev = state.pop("prev")
    sharded, other, groups = _split_optimizer(loop)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(".tmp-step-*"):
            shutil.rmtree(old)
    dist.barrier()
    dcp.save({"model": loop.backend.model.state_dict(), "optim": sharded, "prev": prev}, checkpoint_id=str(tmp))
    if rank == 0:
        torch.save({"format": FORMAT, "step": int(step), "loop": state, "optim_other": other, "optim_groups": groups,
                    "sharded_keys": {n: sorted(st) for n, st in sharded.items()}},
                   tmp / "lyactl.pt")
    torch.save(capture_rng(), tmp / f"rng-{rank}.pt")
    dist.barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for _, old in list_fsdp_checkpoints(folder)[keep:]:
            shutil.rmtree(old)
    dist.barrier()
    return final


def load_fsdp_run(folder: str | Path, loop: Lyactl) -> int:
    """Resume ``loop`` (built as at the start of the run) from the newest checkpoint in
    ``folder``; return its step. Raises :class:`CheckpointError` when there is none or it
    does not fit the loop."""
    found = list_fsdp_checkpoints(folder)
    if not found:
        raise CheckpointError(bad_arg(str(folder), "a folder with a step-* FSDP checkpoint", "none"))
    step, path = found[0]
    meta = torch.load(path / "lyactl.pt", map_location="cpu", weights_only=True)
    if meta.get("format") != FORMAT or meta.get("step") != step:
        raise CheckpointError(bad_arg(str(path / "lyactl.pt"), f"format {FORMAT} at step {step}", meta.get("format")))
    b = loop.backend
    replay_structure(loop, meta["loop"])
    params = dict(b.model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    if [[names[id(p)] for p in pg["params"]] for pg in b.optimizer.param_groups] != \
            [g["names"] for g in meta["optim_groups"]]:
        raise CheckpointError(bad_arg(f"{path}: optimizer", "param groups of the saved parameters", "others"))
    optim = {n: {k: torch.zeros_like(params[n]) for k in ks} for n, ks in meta["sharded_keys"].items()}
    prev = {names[id(e.param)]: torch.zeros_like(e.param) for e in b.plan.entries}
    model_sd = b.model.state_dict()
    dcp.load({"model": model_sd, "optim": optim, "prev": prev}, checkpoint_id=str(path))
    b.model.load_state_dict(model_sd)
    b.optimizer.state.clear()
    for pg, saved in zip(b.optimizer.param_groups, meta["optim_groups"]):
        pg.update({k: v for k, v in saved.items() if k != "names"})
    for n in [n for n in params if n in optim or n in meta["optim_other"]]:  # model order: the same on all ranks
        b.optimizer.state[params[n]] = {**meta["optim_other"].get(n, {}), **optim.get(n, {})}
    load_loop_values(loop, {**meta["loop"], "prev": prev})
    restore_rng(torch.load(path / f"rng-{dist.get_rank()}.pt", map_location="cpu", weights_only=True))
    return step

