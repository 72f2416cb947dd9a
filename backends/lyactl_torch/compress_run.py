"""``lyactl compress CHECKPOINT``: load, prepare the corpus, :func:`.compress.compress`, evaluate,
write the run folder.

Inputs: a :mod:`lyactl_torch.checkpoint` file (its run folder's ``tokenizer.json`` is used
when present) or a local Hugging Face directory (``config.json``; GPT-2, Llama, Qwen2,
Mistral; loaded with ``local_files_only=True``; its ``tokenizer.json`` when present). Without
a tokenizer a BPE of the model's vocabulary size is trained on the training split, as the
runner does. The corpus is split by document (seed 0, 10 % held out, as ``lyactl train``), so
a teacher trained by ``lyactl train`` on the same corpus never saw the validation text.

Run folder: ``tokenizer.json``, ``split.json``, ``decisions.jsonl`` (every report, through
:class:`~lyactl.control.decision_log.DecisionLog`), ``summary.json`` (one arm, the runner's
record format, so :func:`lyactl.app.runfolder.audit` checks events against the log),
``compressed.pt`` (lyactl's format, any widths) or ``hf/`` (``--uniform``: a
``from_pretrained`` directory), ``manifest.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lyactl.app import exit_codes
from lyactl.app.runfolder import claim, default_out, write_manifest
from lyactl.control.decision_log import DecisionLog
from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg
from lyactl.verdict import Verdict

from .checkpoint import load, save
from .compress import CompressConfig, CompressResult, compress, logits
from .corpus import Batches, Split, encode_documents, load_documents, split_documents, train_bpe
from .evaluate import evaluate
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["Loaded", "load_model", "prepare", "run_compress", "format_summary", "exit_code"]


@dataclass(frozen=True, eq=False)
class Loaded:
    """A model to compress: ``family`` ``"gpt"`` or ``"hf"``; ``tokenizer_path`` None when
    none was found next to it; ``live``/``block_ids`` of a pruned lyactl checkpoint."""

    model: nn.Module
    family: str
    tokenizer_path: Path | None
    live: dict[str, list[int]] | None
    block_ids: list[int] | None


def load_model(path: Path) -> Loaded:
    """Load a lyactl GPT checkpoint file or a local Hugging Face directory (offline)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataFileError(bad_arg("CHECKPOINT", "a checkpoint file or a Hugging Face directory with "
                                        "config.json", str(path)))
        from .hf import _transformers

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network (and local_files_only)
        tf = _transformers()
        tf.logging.set_verbosity_error()
        model = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
        tok = path / "tokenizer.json"
        return Loaded(model, "hf", tok if tok.is_file() else None, None, None)
    if not path.is_file():
        raise DataFileError(bad_arg("CHECKPOINT", "an existing checkpoint file or Hugging Face directory", str(path)))
    ckpt = load(path)
    tok = path.parent / "tokenizer.json"
    return Loaded(ckpt.model, "gpt", tok if tok.is_file() else None, ckpt.live, ckpt.block_ids)


def _vocab(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0]) if hasattr(model, "get_input_embeddings") \
        else int(model.config.vocab_size)


def prepare(loaded: Loaded, corpus: Path, out: Path, config: CompressConfig) -> tuple[Tokenizer, Split, Batches]:
    """Split the corpus, find or train the tokenizer (``out/tokenizer.json``), encode the
    training split into seeded batches; ``split.json`` records the held-out documents."""
    split = split_documents(load_documents(corpus), 0.1, 0)
    vocab = _vocab(loaded.model)
    if loaded.tokenizer_path is not None:
        (out / "tokenizer.json").write_bytes(loaded.tokenizer_path.read_bytes())
    else:
        train_bpe([d.text for d in split.train], min(vocab, 50257), out / "tokenizer.json")
    tok = load_tokenizer(out / "tokenizer.json")
    if tok.vocab_size > vocab:
        raise DataFileError(bad_arg("tokenizer", f"at most {vocab} ids (the model's vocabulary)", tok.vocab_size))
    (out / "split.json").write_text(json.dumps(split.record(), indent=1))
    tokens = encode_documents(tok.backend, split.train)
    return tok, split, Batches(tokens, config.seq_len, config.batch_size, config.seed)


def _bpb(model: nn.Module, tok: Tokenizer, split: Split, out: Path, config: CompressConfig,
         val_docs: int | None) -> float:
    docs = split.val[:val_docs] if val_docs else split.val
    wrapped = _Logits(model)
    ev = evaluate(wrapped, tok, ["bpb"], out, device=config.device, batch_size=16, seq_len=config.seq_len,
                  heldout=docs)
    model.train()
    return float(ev["tasks"]["bpb"]["metrics"]["bpb"]["value"])


class _Logits(nn.Module):
    """``x -> logits`` for either family (evaluation reads a tensor or ``.logits``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits(self.model, x)


def _certificates(result: CompressResult) -> dict[str, int]:
    """Certificates of the applied decisions, counted by monitor (kind); one whose verdict is
    not HOLDS (a baseline's, the budget's, a measured removal cost above its tolerance) is
    counted under ``"monitor:verdict"``."""
    counts: dict[str, int] = {}
    for ev in result.events:
        for d in ev.decisions:
            for c in d.certificates:
                key = c.monitor if c.verdict is Verdict.HOLDS else f"{c.monitor}:{c.verdict.value}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def _events(result: CompressResult) -> list[dict[str, Any]]:
    return [{"event_id": e.event_id, "step": e.step, "flops_before": e.flops_before, "flops_after": e.flops_after,
             "groups": [d.group for d in e.decisions], "actions": [d.action.value for d in e.decisions],
             "monitors": [[c.monitor for c in d.certificates] for d in e.decisions]} for e in result.events]


def _write_model(result: CompressResult, loaded: Loaded, out: Path, config: CompressConfig) -> str:
    if config.uniform:
        from .hf_checkpoint import export_pretrained

        export_pretrained(result.model.cpu(), out / "hf")
        return "hf/ (Hugging Face from_pretrained directory: loads without lyactl)"
    if loaded.family == "hf":
        from .hf_checkpoint import save_hf

        save_hf(out / "compressed.pt", result.model, live=result.live, block_ids=result.block_ids, block=config.block)
        return "compressed.pt (lyactl's HF format, per-layer widths: lyactl_torch.hf_checkpoint.load_hf)"
    save(out / "compressed.pt", result.model, live=result.live, block_ids=result.block_ids, block=config.block,
         extra={"seq_len": config.seq_len, "compressed_from": "lyactl compress"})
    return "compressed.pt (lyactl's GPT format: lyactl_torch.checkpoint.load)"


def run_compress(checkpoint: Path, config: CompressConfig, *, corpus: Path, out: Path | None,
                 overwrite: bool = False, new_run: bool = False, progress: bool = True,
                 val_docs: int | None = 20) -> dict[str, Any]:
    """The whole command; returns the summary record (also in ``out/summary.json``)."""
    loaded = load_model(checkpoint)
    if config.uniform and loaded.family != "hf":
        raise InvalidArgumentError(bad_arg("--uniform", "a Hugging Face model (its config must express the shapes)",
                                           "a lyactl GPT checkpoint"))
    out = claim(out if out is not None else default_out("compress"), overwrite=overwrite, new_run=new_run)
    tok, split, batches = prepare(loaded, corpus, out, config)
    model = loaded.model.to(config.device)
    bpb0 = _bpb(model, tok, split, out, config, val_docs)
    log = DecisionLog(out / "decisions.jsonl")
    result = compress(model, batches, config, live=loaded.live, block_ids=loaded.block_ids, on_report=log.write,
                      progress=progress)
    _log_unreported(log, result)
    bpb1 = _bpb(result.model, tok, split, out, config, val_docs)
    saved_as = _write_model(result, loaded, out, config)
    record = {"arm": "compress", "controlled": True, "checkpoint": str(checkpoint), "family": loaded.family,
              **result.record, "val_bpb_before": bpb0, "val_bpb_after": bpb1, "val_docs": val_docs,
              "certificates": _certificates(result), "events": _events(result), "saved_as": saved_as,
              "teacher_counted": "teacher forward 2 x params FLOPs/token in train_flops, its time in wall_s"
              if config.distill is not None else None, "out": str(out)}
    (out / "summary.json").write_text(json.dumps({"arms": [record]}, indent=1, default=_plain))
    write_manifest(out)
    return record


@dataclass(frozen=True)
class _Unreported:
    """The events no controller report carried (one-shot and measured rounds), as an output
    :meth:`DecisionLog.write` takes."""

    events: tuple[Any, ...]
    restores: tuple[Any, ...] = ()
    releases: tuple[Any, ...] = ()


def _log_unreported(log: DecisionLog, result: CompressResult) -> None:
    """Write the events made outside the controller to the decision log, so that every decision
    is there with its certificate (``lyactl report`` re-verifies it; a baseline's or a
    budget-forced removal's UNKNOWN verdict shows as not certified)."""
    reported = {id(e) for out in result.outputs for e in out.events}
    events = tuple(e for e in result.events if id(e) not in reported)
    if events:
        log.write(_Unreported(events))


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def format_summary(r: dict[str, Any]) -> str:
    """The lines printed at the end of ``lyactl compress``."""
    certs = ", ".join(f"{k}: {v}" for k, v in sorted(r["certificates"].items())) or "none"
    teacher = (f" (incl. teacher {r['teacher_flops']:.3g}: 2 x params per token; its forward time is in the wall)"
               if r["distill"] is not None else "")
    return "\n".join([
        f"FLOPs/token: {r['flops_per_token_before']:.4g} -> {r['flops_per_token_after']:.4g} "
        f"(ratio {r['flops_per_token_ratio']:.3f}, target {r['target_flops']}: "
        f"{'reached' if r['reached_target'] else 'NOT reached'})",
        f"training FLOPs/token of the result: {r['training_flops_saving']:.3f} saved, "
        f"{r['frozen_blocks']} frozen block(s) (freezes never count toward the target)",
        f"tokens: {r['tokens']}, steps: {r['steps']}, training FLOPs: {r['train_flops']:.4g}{teacher}",
        f"wall: {r['wall_s']:.1f} s",
        f"val bits/byte: {r['val_bpb_before']:.4f} -> {r['val_bpb_after']:.4f}",
        f"certificates: {certs}",
        f"saved: {r['out']}/{r['saved_as']}"])


def exit_code(record: dict[str, Any]) -> int:
    """0 when the target was reached, 1 when not (the run folder is written either way)."""
    return exit_codes.OK if record["reached_target"] else exit_codes.FAILS

