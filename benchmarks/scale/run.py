"""Train a Llama-style model with the plain loop + lyactl, FSDP2 under torchrun or plain.

::

    # tiny, CPU, 2 ranks (gloo), seconds (what CI runs)
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m benchmarks.scale.run --preset tiny --out /tmp/s.json
    # >= 1 B parameters, bf16, one or more H200s (FSDP2 when WORLD_SIZE > 1, or with --fsdp on one)
    python -m torch.distributed.run --standalone --nproc_per_node=4 -m benchmarks.scale.run --preset h200-1b \
        --out benchmarks/results/scale_h200.json

The model is lyactl's reference GPT in a Llama-style configuration (pre-norm RMSNorm,
grouped-query attention, no biases, untied embeddings, 64-wide heads); it keeps GELU and
learned positions (not SwiGLU and RoPE). Data: uniform random tokens (step time, not
loss, is measured). The controller is scripted and decides from the synchronised
statistics: at report ``--event-report`` it prunes, in every block, the fraction
``--cut`` of MLP groups with the smallest ``w_sq`` (one event), so the FLOP cut is known.

Recorded (rank 0 writes ``--out``): step time before/after the event (medians over the
windows, the first steps after start and after the event excluded), dense MFU
(``6 N``-rule training FLOPs/token x tokens/s / (peak x GPUs); ``None`` off CUDA), the
statistics + controller overhead per step (time in ``ctl.step`` / time in steps), the
realised share of the FLOP cut as step time ``(1 - t_after / t_before) / (1 - F_after /
F_before)``, the compile stall of the event (first step after it minus the median after it, with
``--compile whole|per-block|dynamic``), peak memory before/after, ``n_gpus``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "backends")]

import lyactl_torch as L  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from lyactl_torch.flops import model_flops_per_token  # noqa: E402
from lyactl_torch.model import RMSNorm  # noqa: E402

__all__ = ["PRESETS", "CutController", "main"]

PRESETS = {
    "tiny": dict(model=dict(vocab_size=256, seq_len=32, d_model=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=16,
                            mlp_hidden=256, tie_embeddings=False), batch=4, steps=24, interval=4, block=32,
                 event_report=2, device="cpu", dtype="float32"),
    "h200-1b": dict(model=dict(vocab_size=32000, seq_len=2048, d_model=2048, n_layer=22, n_head=32, n_kv_head=8,
                               head_dim=64, mlp_hidden=8192, tie_embeddings=False), batch=8, steps=3000,
                    interval=50, block=256, event_report=20, device="cuda", dtype="bfloat16"),
}
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s per GPU


class _Out:
    def __init__(self, events=()):
        self.events, self.restores, self.releases, self.penalty, self.held = tuple(events), (), (), None, False


class CutController:
    """At report ``at``: PRUNE, per block, the fraction ``cut`` of its MLP groups with the
    smallest ``w_sq`` (decided from the synchronised statistics, identical on all ranks)."""

    def __init__(self, groups, at: int, cut: float) -> None:
        self.groups, self.at, self.cut, self.n = groups, at, cut, 0

    def observe(self, stats):
        self.n += 1
        if self.n != self.at:
            return _Out()
        picks = []
        for layer in sorted({g.layer for g in self.groups if g.kind is GroupKind.MLP_BLOCK}):
            cand = [i for i, g in enumerate(self.groups) if g.kind is GroupKind.MLP_BLOCK and g.layer == layer]
            k = min(int(self.cut * len(cand)), len(cand) - 1)
            picks += sorted(cand, key=lambda i: stats.w_sq[i])[:k]
        return _Out([Event(0, stats.step, tuple(Decision(stats.step, self.groups[i].name, i, Action.PRUNE)
                                                for i in sorted(picks)))])


def _setup(preset: dict, fsdp: bool):
    """Device, rank, world and the model (FSDP2-wrapped when ``fsdp``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = preset["device"] == "cuda" and torch.cuda.is_available()
    if world > 1 or fsdp:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    with torch.device("meta" if fsdp else "cpu"):  # sharded before it is materialised
        model = L.GPT(L.GPTConfig(**preset["model"]))
    dtype = getattr(torch, preset["dtype"])
    kw = {}
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if dtype != torch.float32:
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for blk in model.blocks:
            fully_shard(blk, mesh=mesh, **kw)
        fully_shard(model, mesh=mesh, **kw)
        if next(model.parameters()).is_meta:
            model.to_empty(device=device)
            torch.manual_seed(0)
            model._init_weights()
            for m in model.modules():
                if isinstance(m, RMSNorm):
                    torch.nn.init.ones_(m.weight)
    else:
        model = model.to(device)
    return model, device, rank, dist.get_world_size() if dist.is_initialized() else 1, kw, dtype


def _measure(preset: dict, model, opt, ctl, device, dtype, rank: int, fsdp: bool, strategy: str):
    """Per step: wall time, time in ``ctl.step``, whether the structure changed.

    ``strategy``: ``"eager"`` or a :class:`lyactl_torch.compile.CompileStrategy` value; after
    an event the compiled callable is renewed by ``recompile_after_event`` (its own cost is
    inside the event's ``ctl_s``; the compile itself lands in the next step's ``train_s``).
    """
    from lyactl_torch.compile import compile_model, recompile_after_event

    cfg = preset["model"]
    fwd = model if strategy == "eager" else compile_model(model, strategy)
    gen = torch.Generator(device="cpu").manual_seed(1 + rank)
    rows = []
    for step in range(preset["steps"]):
        x = torch.randint(0, cfg["vocab_size"], (preset["batch"], cfg["seq_len"] + 1), generator=gen).to(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and not fsdp):
            loss = fwd(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        changed = ctl.step(loss)
        if changed and strategy != "eager":
            fwd = recompile_after_event(model, fwd)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        if changed and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rows.append({"train_s": t1 - t0, "ctl_s": t2 - t1, "changed": bool(changed), "peak_mem": mem})
    return rows


def summarise(rows: list[dict], name: str, preset: dict, flops: tuple[float, float], world: int, gpu: str | None,
              n_params: int) -> dict:
    """The JSON record (see the module doc) from the per-step rows."""
    ev = next((i for i, r in enumerate(rows) if r["changed"]), None)
    skip = max(2, len(rows) // 20)
    before = [r["train_s"] for r in rows[skip:ev]] if ev is not None else [r["train_s"] for r in rows[skip:]]
    after = [r["train_s"] for r in rows[ev + 1 + skip:]] if ev is not None else []
    t_b = statistics.median(before) if before else math.nan
    t_a = statistics.median(after) if after else math.nan
    tokens = preset["batch"] * preset["model"]["seq_len"] * world
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if gpu and k in gpu), ""), None)
    F_b, F_a = flops
    cut = 1.0 - F_a / F_b
    stall = rows[ev + 1]["train_s"] - t_a if ev is not None and ev + 1 < len(rows) and after else None
    stall3 = sum(r["train_s"] - t_a for r in rows[ev + 1:ev + 4]) if stall is not None else None
    total_train = sum(r["train_s"] for r in rows)
    return {"preset": name, "gpu": gpu, "n_gpus": world if gpu else 0,
            "world": world, "n_params": n_params, "steps": len(rows), "tokens_per_step": tokens,
            "step_time_s_before": t_b, "step_time_s_after": t_a, "tokens_per_s_before": tokens / t_b,
            "mfu_dense": (F_b * tokens / t_b / (peak * world)) if peak else None,
            "overhead_frac": sum(r["ctl_s"] for r in rows if not r["changed"]) / total_train,
            "flops_per_token_before": F_b, "flops_per_token_after": F_a, "flop_cut": cut,
            "realised_share": (1.0 - t_a / t_b) / cut if cut > 0 and after else None,
            "compile_stall_s_per_event": stall, "stall_s_first_3_steps": stall3,
            "first_step_s": rows[0]["train_s"] if rows else None, "event_step": None if ev is None else ev + 1,
            "event_seconds": None if ev is None else rows[ev]["ctl_s"],
            "peak_mem_before": rows[ev]["peak_mem"] if ev is not None else rows[-1]["peak_mem"],
            "peak_mem_after": rows[-1]["peak_mem"] if ev is not None else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cut", type=float, default=0.25)
    ap.add_argument("--event-report", type=int, default=None, help="the report (count) at which the cut happens")
    ap.add_argument("--interval", type=int, default=None, help="steps between statistics reports")
    ap.add_argument("--fsdp", action="store_true", help="FSDP2 even with one rank (always with WORLD_SIZE > 1)")
    ap.add_argument("--compile", default="eager", choices=("eager", "whole", "per-block", "dynamic"),
                    help="compile strategy (lyactl_torch.compile); eager = not compiled")
    a = ap.parse_args(argv)
    preset = PRESETS[a.preset]
    preset = {**preset, **{k: v for k, v in (("steps", a.steps), ("event_report", a.event_report),
                                              ("interval", a.interval)) if v}}
    fsdp = a.fsdp or int(os.environ.get("WORLD_SIZE", "1")) > 1
    model, device, rank, world, kw, dtype = _setup(preset, fsdp)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    if fsdp:
        from lyactl_torch.fsdp import FSDPBackend

        backend = FSDPBackend(model, opt, block=preset["block"], fsdp_kwargs=kw)
    else:
        backend = L.TorchBackend(model, opt, block=preset["block"])
    ctl = L.Lyactl(model, opt, None, interval=preset["interval"], backend=backend)
    ctl.controller = CutController(backend.groups(), preset["event_report"], a.cut)
    n_params = sum(p.numel() for p in model.parameters())
    F_b = model_flops_per_token(model, backend.adapter)
    rows = _measure(preset, model, opt, ctl, device, dtype, rank, fsdp, a.compile)
    F_a = model_flops_per_token(model, backend.adapter)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out = summarise(rows, a.preset, preset, (F_b, F_a), world, gpu, n_params)
    out["events"], out["compile"] = len(ctl.events), a.compile
    if rank == 0:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2, default=lambda v: None if isinstance(v, float) and np.isnan(v) else v))
        print(json.dumps({k: out[k] for k in ("n_params", "step_time_s_before", "overhead_frac", "realised_share")}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
