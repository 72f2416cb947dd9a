"""Run checkpoints: save a training run at a step boundary, resume it bit for bit.

A run checkpoint in folder ``F`` at step ``s`` (``s`` steps done, data position ``s``,
since :meth:`Batches.batch` is a pure function of the step) is two files:

* ``F/run-<s:08d>-<sha8>.pt``: one ``torch.save`` of plain containers and tensors
  (loads with ``torch.load(weights_only=True)``: no pickle of objects): the model's state
  dict and ``requires_grad`` flags, the optimizer state by parameter name (as in
  :mod:`.checkpoint`), the loop's state (:mod:`.backend_state`: controller, held slices,
  statistics snapshot, ...), the RNG states (torch, CUDA, numpy, python), the run's
  measurements so far and any extra plain data;
* ``F/run-<s:08d>.json``: the manifest ``{"format", "step", "payload", "sha256", "bytes"}``.

Both are written atomically (:func:`lyactl.app.atomic.atomic_write`), payload first: a
checkpoint exists once its manifest does, so a kill at any instant leaves the previous
checkpoints intact. Loading checks size and SHA-256 *before* parsing; a missing,
truncated or corrupt checkpoint raises :class:`CheckpointError` naming the file, and
:func:`load_run` falls back to the next older one (the newest ``keep`` are kept, default
2). Checkpoints that fail verification are renamed ``*.corrupt`` once a resume passed them.

Resume (:func:`restore_run`) needs the model, optimizer and loop built exactly as at the
start of the run (original shapes, fresh optimizer and controller); it puts them into the
checkpoint's state in place. Cost: one host copy of the checkpoint in memory on save and
load; one host sync per saved device tensor.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lyactl.app.atomic import atomic_write, atomic_write_json, read_json, remove_stale_temps, sha256_hex
from lyactl.errors import CheckpointError, InvalidArgumentError, bad_arg

from .backend_state import load_loop_values, loop_state, replay_structure
from .checkpoint import _optimizer_payload, load_optimizer_state
from .loop import Lyactl

__all__ = ["FORMAT", "RunState", "capture_rng", "restore_rng", "list_checkpoints", "save_run", "load_run",
           "quarantine_newer", "restore_run"]

FORMAT = "lyactl_torch.run/1"
_MANIFEST = re.compile(r"^run-(\d{8})\.json$")
_PAYLOAD = re.compile(r"^run-\d{8}-[0-9a-f]{8}\.pt$")


@dataclass(frozen=True, eq=False)
class RunState:
    """A verified checkpoint: its ``step``, loaded ``payload``, the manifest ``path`` and
    the errors of newer checkpoints that were skipped (``skipped``)."""

    step: int
    payload: dict[str, Any]
    path: Path
    skipped: tuple[str, ...] = ()


# ---------------------------------------------------------------- random number generators
def capture_rng() -> dict[str, Any]:
    """The states of torch's CPU (and initialised CUDA) generators, numpy's global
    generator and python's ``random``, as tensors and plain containers."""
    key, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    version, mt, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "cuda": list(cuda),
            "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": [version, list(mt), gauss]}


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))


# ---------------------------------------------------------------- files
def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, manifest path)`` of every checkpoint manifest in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _MANIFEST.match(p.name))]
    return sorted(found, reverse=True)


def _prune(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` manifests and the payloads they name; delete the rest."""
    manifests = list_checkpoints(folder)
    for _, path in manifests[keep:]:
        path.unlink(missing_ok=True)
    wanted = set()
    for _, path in manifests[:keep]:
        try:
            wanted.add(str(read_json(path).get("payload")))
        except (CheckpointError, AttributeError):
            continue
    for p in folder.iterdir():
        if _PAYLOAD.match(p.name) and p.name not in wanted:
            p.unlink(missing_ok=True)


def save_run(folder: str | Path, *, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             loop: Lyactl | None = None, result: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None, keep: int = 2) -> Path:
    """Write a checkpoint of the run after ``step`` steps; return its manifest path.

    Raises :class:`CheckpointError` (an ``OSError``, with the original ``errno``) naming
    the file when it cannot be written (e.g. ``ENOSPC``); the older checkpoints stay intact.
    """
    if not (isinstance(keep, int) and keep >= 1):
        raise InvalidArgumentError(bad_arg("keep", "an int >= 1", keep))
    folder = Path(folder)
    payload = {"format": FORMAT, "step": int(step), "model": model.state_dict(),
               "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
               "optimizer": _optimizer_payload(model, optimizer), "rng": capture_rng(),
               "loop": None if loop is None else loop_state(loop),
               "result": dict(result or {}), "extra": dict(extra or {})}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = sha256_hex(data)
    name = f"run-{step:08d}"
    target = folder / f"{name}-{digest[:8]}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        atomic_write(target, data)
        target = folder / f"{name}.json"
        atomic_write_json(target, {"format": FORMAT, "step": int(step), "payload": f"{name}-{digest[:8]}.pt",
                                   "sha256": digest, "bytes": len(data)})
    except OSError as exc:
        err = CheckpointError(f"{target}: could not write the checkpoint of step {step} ({exc.strerror or exc}); "
                              "the previous checkpoints are intact")
        err.errno = exc.errno
        raise err from exc
    _prune(folder, keep)
    return target


def _read_payload(manifest: Path) -> RunState:
    """Verify (size, SHA-256, format) and load one checkpoint."""
    meta = read_json(manifest)
    keys = ("format", "step", "payload", "sha256", "bytes")
    if not isinstance(meta, dict) or any(k not in meta for k in keys) or meta["format"] != FORMAT:
        raise CheckpointError(bad_arg(str(manifest), f"a {FORMAT} manifest with {keys}", meta))
    if not (isinstance(meta["payload"], str) and _PAYLOAD.match(meta["payload"])):
        raise CheckpointError(bad_arg(f"{manifest}: payload", "a payload file name in the same folder", meta["payload"]))
    path = manifest.parent / meta["payload"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(bad_arg(str(path), "a readable checkpoint file", f"{type(exc).__name__}: {exc}")) from exc
    if len(data) != meta["bytes"]:
        raise CheckpointError(bad_arg(str(path), f"{meta['bytes']} bytes (truncated?)", len(data)))
    if sha256_hex(data) != meta["sha256"]:
        raise CheckpointError(bad_arg(str(path), f"SHA-256 {meta['sha256']} (corrupt file)", sha256_hex(data)))
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(bad_arg(str(path), "a weights-only torch checkpoint", str(exc)[:200])) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("step") != meta["step"]:
        raise CheckpointError(bad_arg(str(path), f"format {FORMAT} at step {meta['step']}", "another payload"))
    return RunState(int(meta["step"]), payload, manifest)


def load_run(folder: str | Path) -> RunState | None:
    """The newest checkpoint in ``folder`` that verifies; None when there is none at all.

    Each failing newer checkpoint is reported with a warning and listed in
    ``RunState.skipped``; if every checkpoint fails, :class:`CheckpointError` lists them.
    """
    errors: list[str] = []
    for _, manifest in list_checkpoints(folder):
        try:
            state = _read_payload(manifest)
        except CheckpointError as exc:
            warnings.warn(f"skipping checkpoint: {exc}", RuntimeWarning, stacklevel=2)
            errors.append(str(exc))
            continue
        return RunState(state.step, state.payload, state.path, tuple(errors))
    if errors:
        raise CheckpointError(f"{folder}: no checkpoint could be recovered: " + " | ".join(errors))
    return None


def quarantine_newer(folder: str | Path, step: int) -> list[Path]:
    """Rename manifests newer than ``step`` (they failed verification) to ``*.corrupt``."""
    moved = []
    for s, manifest in list_checkpoints(folder):
        if s > step:
            manifest.rename(manifest.with_name(manifest.name + ".corrupt"))
            moved.append(manifest)
    return moved


# ---------------------------------------------------------------- restore
def restore_run(state: RunState, model: nn.Module, optimizer: torch.optim.Optimizer,
                loop: Lyactl | None = None) -> None:
    """Put ``model``, ``optimizer`` (and ``loop``), built as at the start of the run, into
    the state of the checkpoint ``state``; also restores the RNG states.

    Raises :class:`CheckpointError` when the objects do not fit the checkpoint.
    """
    p = state.payload
    if (p["loop"] is None) != (loop is None):
        raise CheckpointError(bad_arg(f"{state.path}: loop", "the same as when saving (None or a Lyactl)",
                                      type(loop).__name__))
    if loop is not None:
        replay_structure(loop, p["loop"])
    try:
        model.load_state_dict(p["model"])
    except RuntimeError as exc:
        raise CheckpointError(bad_arg(f"{state.path}: model", "tensors of the model's shapes", str(exc)[:200])) from exc
    for n, prm in model.named_parameters():
        prm.requires_grad_(bool(p["requires_grad"].get(n, prm.requires_grad)))
    names = {id(q): n for n, q in model.named_parameters()}
    found = [[names.get(id(q)) for q in pg["params"]] for pg in optimizer.param_groups]
    if found != [g["names"] for g in p["optimizer"]["groups"]]:
        raise CheckpointError(bad_arg(f"{state.path}: optimizer", "param groups of the saved parameters", found))
    optimizer.state.clear()
    load_optimizer_state(optimizer, model, p["optimizer"])
    if loop is not None:
        load_loop_values(loop, p["loop"])
    restore_rng(p["rng"])
