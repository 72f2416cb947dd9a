"""Saving, loading and exporting a pruned Hugging Face model (the adapters: :mod:`.hf`).

:func:`save_hf` / :func:`load_hf` keep any per-layer widths (original config, live unit ids,
state dict, optionally the optimizer state); :func:`export_pretrained` writes a directory
that ``from_pretrained`` loads with no lyactl installed, when the config can express the
shapes (one width for every layer), and raises :class:`UnsupportedModelError` saying why
otherwise.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lyactl.errors import CheckpointError, UnsupportedModelError, bad_arg

from .checkpoint import _optimizer_payload, load_weights
from .freeze import frozen_prefix
from .groups import Layout
from .hf import HFGPT2Adapter, _transformers, adapter_of
from .surgery import prune_units, remove_layer

__all__ = ["FORMAT", "HFCheckpoint", "export_pretrained", "load_hf", "save_hf"]

FORMAT = "lyactl_torch.hf/1"


# ---- saving and loading ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HFCheckpoint:
    """A loaded :func:`save_hf` file: the rebuilt model and what a backend needs to resume
    (``TorchBackend(model, opt, adapters=hf_adapters(), live=..., block_ids=...)``)."""

    model: nn.Module
    live: dict[str, list[int]]
    block_ids: list[int]
    block: int
    optimizer: dict[str, Any] | None
    extra: dict[str, Any]


def _hf_class(model: nn.Module) -> str:
    names = adapter_of(model).names
    return next(c.__name__ for c in type(model).__mro__ if c.__name__ in names)


def _original_config(model: nn.Module) -> str:
    """The model's config as JSON, with the original per-layer ``layer_types``."""
    d = json.loads(model.config.to_json_string(use_diff=False))
    original = getattr(getattr(model, "model", None), "lyactl_layer_types", None)
    if original is not None:
        d["layer_types"] = list(original)
    return json.dumps(d)


def save_hf(path: str | os.PathLike, model: nn.Module, *, live: dict[str, list[int]], block_ids: list[int],
            block: int = 64, optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write a pruned HF model (any per-layer widths) and optionally ``optimizer``'s state.

    One ``torch.save`` file of plain data: the class name, the ORIGINAL config (JSON), the
    live unit and block ids (``backend.layout.live`` / ``backend.layout.block_ids``), each
    parameter's ``requires_grad`` and the state dict. Optimizer state is stored by
    parameter name (as :mod:`lyactl_torch.checkpoint` does).
    """
    payload = {
        "format": FORMAT, "class": _hf_class(model), "config": _original_config(model),
        "live": {k: list(v) for k, v in live.items()}, "block_ids": list(block_ids), "block": int(block),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else _optimizer_payload(model, optimizer),
        "extra": {} if extra is None else dict(extra),
    }
    torch.save(payload, path)


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(bad_arg("path", "a readable lyactl_torch HF checkpoint", str(path))) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(bad_arg(f"format of {path}", FORMAT, found))
    return data


def load_hf(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> HFCheckpoint:
    """Rebuild a :func:`save_hf` model: build the original model from its config (random
    weights, once, on the CPU), cut it to the saved live units and blocks with the same
    surgery the backend uses, then load the state dict."""
    data = _read(path, map_location)
    tf = _transformers()
    cls = getattr(tf, data["class"])
    model = cls(cls.config_class.from_dict(json.loads(data["config"])))
    adapter = adapter_of(model)
    layout = Layout(model, adapter, data["block"])
    scratch = torch.optim.SGD(model.parameters(), lr=0.0)
    for name, axis in layout.axes.items():
        gone = tuple(sorted(set(range(axis.size)) - set(data["live"].get(name, range(axis.size)))))
        if gone:
            prune_units(layout, scratch, name, gone)
    for b in [b for b in layout.block_ids if b not in data["block_ids"]]:
        remove_layer(layout, scratch, b)
    load_weights(model, data, path)
    model.to(map_location)
    adapter.set_frozen_prefix(model, frozen_prefix(layout))
    return HFCheckpoint(model, data["live"], data["block_ids"], data["block"], data["optimizer"], data["extra"])


def _uniform(name: str, values: list[int], why: str) -> int:
    if len(set(values)) != 1:
        raise UnsupportedModelError(bad_arg(name, f"one value for every layer ({why})", values))
    return values[0]


def _export_config(model: nn.Module) -> Any:
    """A copy of the config describing the current shapes, or UnsupportedModelError."""
    cfg, adapter = copy.deepcopy(model.config), adapter_of(model)
    blocks = adapter.blocks(model)
    why = f"{type(cfg).__name__} holds one width for all layers; use save_hf for per-layer widths"
    if isinstance(adapter, HFGPT2Adapter):
        heads = _uniform("GPT-2 heads per layer", [b.attn.num_heads for b in blocks], why)
        if heads != cfg.n_head:
            raise UnsupportedModelError(bad_arg("GPT-2 heads per layer", f"{cfg.n_head} (GPT2Config derives head_dim = "
                                                "n_embd // n_head, so a reduced head count is not representable)", heads))
        if len(blocks) != cfg.n_layer and cfg.scale_attn_by_inverse_layer_idx:
            raise UnsupportedModelError(bad_arg("removed blocks", "none when scale_attn_by_inverse_layer_idx "
                                                "(renumbered layers would change the scaling)", cfg.n_layer - len(blocks)))
        cfg.n_inner = _uniform("GPT-2 MLP width per layer", [b.mlp.c_fc.weight.shape[1] for b in blocks], why)
        cfg.n_layer = len(blocks)
        return cfg
    attn = [b.self_attn for b in blocks]
    cfg.head_dim = attn[0].head_dim
    cfg.num_attention_heads = _uniform("query heads per layer", [a.q_proj.weight.shape[0] // a.head_dim for a in attn], why)
    cfg.num_key_value_heads = _uniform("KV heads per layer", [a.k_proj.weight.shape[0] // a.head_dim for a in attn], why)
    cfg.intermediate_size = _uniform("MLP width per layer", [b.mlp.gate_proj.weight.shape[0] for b in blocks], why)
    cfg.num_hidden_layers = len(blocks)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [getattr(a, "layer_type", None) or cfg.layer_types[0] for a in attn]
    return cfg


def export_pretrained(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write ``model`` so that ``type(model).from_pretrained(directory)`` (local, offline)
    loads it with its current shapes. Frozen flags are not part of that format.

    Raises :class:`UnsupportedModelError` when the config cannot express the shapes
    (per-layer widths, or GPT-2 with fewer heads): use :func:`save_hf` then.
    """
    cfg = _export_config(model)
    with torch.device("meta"):
        fresh = type(model)(cfg)
    fresh.load_state_dict(model.state_dict(), assign=True)
    fresh.save_pretrained(directory)
