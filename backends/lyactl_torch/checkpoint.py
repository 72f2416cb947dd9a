"""Save and load pruned reference GPTs (and, optionally, their optimizer state).

A checkpoint is one ``torch.save`` file of plain containers and tensors, so it loads with
``torch.load(weights_only=True)``. Per-block shapes travel with it: the config (original
shapes), the current per-block widths and residual width, the original ids of the live
blocks and units (so group names stay the same), each parameter's ``requires_grad``
(frozen blocks) and the state dict. Optimizer state is stored by parameter *name* (not by
position, which layer surgery reorders) and loaded into an optimizer built on the
loaded model's parameters with the same param-group structure.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lyactl.errors import CheckpointError, bad_arg

from .freeze import is_frozen
from .model import GPT, BlockShape, GPTConfig

__all__ = ["FORMAT", "Checkpoint", "save", "load", "load_weights", "load_optimizer_state"]

FORMAT = "lyactl_torch.gpt/1"


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model plus what a backend needs to resume."""

    model: GPT
    live: dict[str, list[int]]
    block_ids: list[int]
    block: int
    optimizer: dict[str, Any] | None
    extra: dict[str, Any]


def _optimizer_payload(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    names = {id(p): n for n, p in model.named_parameters()}
    state = {names[id(p)]: dict(st) for p, st in optimizer.state.items() if id(p) in names}
    groups = [{**{k: v for k, v in pg.items() if k != "params"}, "names": [names[id(p)] for p in pg["params"]]}
              for pg in optimizer.param_groups]
    return {"state": state, "groups": groups}


def save(path: str | os.PathLike, model: GPT, *, live: dict[str, list[int]], block_ids: list[int], block: int = 64,
         optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (any pruned shape) and optionally ``optimizer``'s state to ``path``.

    ``live``/``block_ids`` come from the backend's layout (``backend.layout.live``,
    ``backend.layout.block_ids``); ``extra`` is any plain data (step counter, ...).
    """
    payload = {
        "format": FORMAT,
        "config": dataclasses.asdict(model.config),
        "shapes": [[s.n_head, s.n_kv_head, s.mlp_hidden] for s in model.shapes()],
        "d_live": model.d_live,
        "block_ids": list(block_ids),
        "live": {k: list(v) for k, v in live.items()},
        "block": int(block),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else _optimizer_payload(model, optimizer),
        "extra": {} if extra is None else dict(extra),
    }
    torch.save(payload, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model with the saved shapes (``torch.load(weights_only=True)``)."""
    data = _read(path, map_location)
    try:
        cfg = GPTConfig(**data["config"])
        shapes = [BlockShape(*s) for s in data["shapes"]]
        model = GPT(cfg, shapes=shapes, d_live=data["d_live"]).to(map_location)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(bad_arg(f"config of {path}", "a lyactl_torch model config and shapes",
                                      f"{type(exc).__name__}: {exc}"[:200])) from exc
    load_weights(model, data, path)
    prefix = 0
    for blk in model.blocks:
        if not is_frozen(blk):
            break
        prefix += 1
    model.frozen_prefix = prefix
    return Checkpoint(model, data["live"], data["block_ids"], data["block"], data["optimizer"], data["extra"])


def load_weights(model: nn.Module, data: dict[str, Any], path: str | os.PathLike) -> None:
    """Load a checkpoint's weights and trainable flags into a model of the saved shapes
    (shared by the reference-GPT and the Hugging Face loaders)."""
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise CheckpointError(bad_arg(f"state dict of {path}", "tensors matching the saved shapes", str(exc)[:200])) from exc
    for n, p in model.named_parameters():
        p.requires_grad_(bool(data["requires_grad"].get(n, True)))


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    """The payload dict of a checkpoint file; any failure to read or unpickle it (short or
    junk files raise struct.error, zipfile and pickle errors deep inside torch.load) is a
    :class:`CheckpointError` naming the file."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, struct.error, zipfile.BadZipFile,
            KeyError, IndexError, TypeError, AttributeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(bad_arg("path", "a readable lyactl_torch checkpoint",
                                      f"{path} ({type(exc).__name__})")) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(bad_arg(f"format of {path}", FORMAT, found))
    return data


def load_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, saved: dict[str, Any]) -> None:
    """Put saved optimizer state (by parameter name) into ``optimizer`` built on ``model``.

    Hyper-parameters of param group ``i`` come from saved group ``i``; tensors move to
    each parameter's device except scalar ``step`` counters, which keep the saved device
    placement convention of the optimizer (CPU unless ``fused``/``capturable``).
    """
    params = dict(model.named_parameters())
    if len(saved["groups"]) != len(optimizer.param_groups):
        raise CheckpointError(bad_arg("optimizer param groups", f"{len(saved['groups'])} groups", len(optimizer.param_groups)))
    for pg, sg in zip(optimizer.param_groups, saved["groups"]):
        pg.update({k: v for k, v in sg.items() if k != "names"})
    step_on_device = bool(optimizer.param_groups[0].get("fused") or optimizer.param_groups[0].get("capturable"))
    for name, st in saved["state"].items():
        if name not in params:
            raise CheckpointError(bad_arg("optimizer state", "names of the model's parameters", name))
        p = params[name]
        optimizer.state[p] = {k: _place(v, p.device, step_on_device) for k, v in st.items()}


def _place(v: Any, device: torch.device, step_on_device: bool) -> Any:
    """Tensors of a parameter's shape go to its device; scalar ``step`` counters only when
    the optimizer keeps them there (``fused``/``capturable``)."""
    if not isinstance(v, torch.Tensor) or (v.dim() == 0 and not step_on_device):
        return v
    return v.to(device)
