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
loss, is measured). The events are scripted so that the FLOP cut is known: at each report
of ``--event-report R1 [R2 ...]`` it prunes, in every block, the fraction ``--cut`` of the
block's live MLP groups with the smallest ``w_sq`` (decided from the synchronised statistics,
identical on all ranks). lyactl's own controller (certificates + PI budget,
:func:`lyactl.app.runconfig.build_controller`) runs in the shadow at every report: it sees
the same statistics and its cost is inside the measured overhead, but its decisions are only
counted, not applied (``--no-shadow`` turns it off).

Recorded (rank 0 writes ``--out``): step time before the first event and after each event
(medians over the segments, the first steps after start and after each event excluded),
dense MFU (``6 N``-rule training FLOPs/token x tokens/s / (peak x GPUs); ``None`` off CUDA),
the statistics + controller overhead per step (time in ``ctl.step`` outside events / time in
steps), the realised share of each event's cumulative FLOP cut as step time ``(1 - t_k /
t_0) / (1 - F_k / F_0)``, the compile stall of each event (first step after it minus the
median after it, with ``--compile whole|per-block|dynamic``) and its share of the run's
wall-clock, peak memory per segment, ``n_gpus``. ``--budget-s`` ends the loop early when its
wall-clock is spent (the record says how many steps ran), so a run never loses its record
to a time limit.
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
from typing import Any, Sequence

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
                 event_report=(2,), device="cpu", dtype="float32"),
    "h200-1b": dict(model=dict(vocab_size=32000, seq_len=2048, d_model=2048, n_layer=22, n_head=32, n_kv_head=8,
                               head_dim=64, mlp_hidden=8192, tie_embeddings=False), batch=8, steps=3000,
                    interval=50, block=256, event_report=(20,), device="cuda", dtype="bfloat16"),
}
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s per GPU


class _Out:
    def __init__(self, events=()):
        self.events, self.restores, self.releases, self.penalty, self.held = tuple(events), (), (), None, False


class CutController:
    """At report ``at``: PRUNE, per block, the fraction ``cut`` of its MLP groups with the
    smallest ``w_sq`` (decided from the synchronised statistics, identical on all ranks)."""

    def __init__(self, groups, at: Sequence[int], cut: float, shadow: Any = None) -> None:
        self.groups, self.at, self.cut, self.n, self.shadow = groups, tuple(at), cut, 0, shadow
        self.pruned: set[int] = set()
        self.shadow_decisions = 0

    def observe(self, stats):
        self.n += 1
        if self.shadow is not None:  # lyactl's controller, for its cost: decisions counted only
            self.shadow_decisions += sum(len(e.decisions) for e in self.shadow.observe(stats).events)
        if self.n not in self.at:
            return _Out()
        picks = []
        for layer in sorted({g.layer for g in self.groups if g.kind is GroupKind.MLP_BLOCK}):
            cand = [i for i, g in enumerate(self.groups)
                    if g.kind is GroupKind.MLP_BLOCK and g.layer == layer and i not in self.pruned]
            k = min(int(self.cut * len(cand)), len(cand) - 1)
            picks += sorted(cand, key=lambda i: stats.w_sq[i])[:k]
        self.pruned.update(picks)
        return _Out([Event(self.at.index(self.n), stats.step, tuple(Decision(stats.step, self.groups[i].name, i, Action.PRUNE)
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


def _measure(preset: dict, model, opt, ctl, device, dtype, rank: int, fsdp: bool, strategy: str,
             budget_s: float = math.inf):
    """Per step: wall time, time in ``ctl.step``, whether the structure changed, FLOPs/token
    after a change; stops early once ``budget_s`` of wall-clock is spent.

    ``strategy``: ``"eager"`` or a :class:`lyactl_torch.compile.CompileStrategy` value; after
    an event the compiled callable is renewed by ``recompile_after_event`` (its own cost is
    inside the event's ``ctl_s``; the compile itself lands in the next step's ``train_s``).
    """
    from lyactl_torch.compile import compile_model, recompile_after_event

    cfg = preset["model"]
    fwd = model if strategy == "eager" else compile_model(model, strategy)
    gen = torch.Generator(device="cpu").manual_seed(1 + rank)
    rows, start = [], time.perf_counter()
    for step in range(preset["steps"]):
        if step % 10 == 0 and _spent(start, budget_s):  # a collective when sharded: not every step
            break
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
        rest = torch.cuda.memory_allocated(device) if device.type == "cuda" else None  # after the step: weights + state
        if changed and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        flops = model_flops_per_token(model, ctl.backend.adapter) if changed else None
        rows.append({"train_s": t1 - t0, "ctl_s": t2 - t1, "changed": bool(changed), "peak_mem": mem, "mem_at_rest": rest,
                     "flops": flops, "loss": float(loss.detach()) if changed or step % 100 == 0 else None})
    return rows


def _spent(start: float, budget_s: float) -> bool:
    """Whether ``budget_s`` seconds since ``start`` are spent, agreed by every rank (MAX)."""
    spent = time.perf_counter() - start > budget_s
    if dist.is_initialized() and math.isfinite(budget_s):
        t = torch.tensor([float(spent)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        spent = bool(t.item())
    return spent


def _segments(rows: list[dict]) -> list[tuple[int, int]]:
    """``[(first, end), ...]`` row ranges between events (event rows excluded), warm-up and
    the first steps after each event skipped (``max(2, n / 40)`` rows)."""
    evs = [i for i, r in enumerate(rows) if r["changed"]]
    skip = max(2, len(rows) // 40)
    bounds = [-1] + evs + [len(rows)]
    return [(a + 1 + skip, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _event_records(rows: list[dict], F0: float, t_med: list[float]) -> list[dict]:
    """Per event: step, FLOPs/token after, cumulative cut, realised share, stall, peak memory."""
    evs = [i for i, r in enumerate(rows) if r["changed"]]
    total = sum(r["train_s"] + r["ctl_s"] for r in rows)
    out = []
    for k, ev in enumerate(evs):
        t_a, F_a = t_med[k + 1], rows[ev]["flops"]
        cut = 1.0 - F_a / F0
        stall = rows[ev + 1]["train_s"] - t_a if ev + 1 < len(rows) and math.isfinite(t_a) else None
        nxt = evs[k + 1] if k + 1 < len(evs) else len(rows)
        out.append({"step": ev + 1, "flops_per_token_after": F_a, "flop_cut": cut,
                    "step_time_s_after": t_a,
                    "realised_share": (1.0 - t_a / t_med[0]) / cut if cut > 0 and math.isfinite(t_a) else None,
                    "compile_stall_s": stall, "stall_share_of_run": None if stall is None else stall / total,
                    "stall_s_first_3_steps": None if stall is None else sum(r["train_s"] - t_a for r in rows[ev + 1:ev + 4]),
                    "event_seconds": rows[ev]["ctl_s"], "peak_mem_before": rows[ev]["peak_mem"],
                    "peak_mem_after": rows[nxt - 1]["peak_mem"],
                    "mem_at_rest_before": rows[ev - 1]["mem_at_rest"] if ev else None,
                    "mem_at_rest_after": rows[nxt - 1]["mem_at_rest"], "loss_at_event": rows[ev]["loss"]})
    return out


def summarise(rows: list[dict], name: str, preset: dict, F0: float, world: int, gpu: str | None,
              n_params: int) -> dict:
    """The JSON record (see the module doc) from the per-step rows; the top-level event
    fields are the first event's (the issue's keys), ``per_event`` has every event."""
    t_med = [statistics.median([r["train_s"] for r in rows[a:b]]) if b > a else math.nan for a, b in _segments(rows)]
    tokens = preset["batch"] * preset["model"]["seq_len"] * world
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if gpu and k in gpu), ""), None)
    events = _event_records(rows, F0, t_med)
    first = events[0] if events else {}
    total_train = sum(r["train_s"] for r in rows)
    total = total_train + sum(r["ctl_s"] for r in rows)
    stalls = [e["compile_stall_s"] for e in events if e["compile_stall_s"] is not None]
    return {"preset": name, "gpu": gpu, "n_gpus": world if gpu else 0,
            "world": world, "n_params": n_params, "steps": len(rows), "tokens_per_step": tokens,
            "wall_s_loop": total, "step_time_s_before": t_med[0], "step_time_s_after": first.get("step_time_s_after"),
            "tokens_per_s_before": tokens / t_med[0],
            "mfu_dense": (F0 * tokens / t_med[0] / (peak * world)) if peak else None,
            "overhead_frac": sum(r["ctl_s"] for r in rows if not r["changed"]) / total_train,
            "flops_per_token_before": F0, "flops_per_token_after": first.get("flops_per_token_after", F0),
            "flop_cut": first.get("flop_cut", 0.0), "realised_share": first.get("realised_share"),
            "compile_stall_s_per_event": statistics.mean(stalls) if stalls else None,
            "compile_stall_share_of_run": sum(stalls) / total if stalls else None,
            "stall_s_first_3_steps": first.get("stall_s_first_3_steps"),
            "first_step_s": rows[0]["train_s"] if rows else None, "event_step": first.get("step"),
            "event_seconds": first.get("event_seconds"),
            "peak_mem_before": first.get("peak_mem_before", rows[-1]["peak_mem"] if rows else None),
            "peak_mem_after": first.get("peak_mem_after"), "per_event": events,
            "loss_trace": [(i + 1, r["loss"]) for i, r in enumerate(rows) if r["loss"] is not None]}


def _shadow(backend, interval: int, steps: int):
    """lyactl's controller over the backend's groups (certificates + a 20 % PI budget)."""
    from lyactl.app.runconfig import ControllerSection, build_controller

    section = ControllerSection(interval=interval, block=backend.layout.block, budget=0.2)
    return build_controller(section, steps, backend.groups(), backend.constraints(), backend.flops_model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cut", type=float, default=0.25, help="fraction of each block's live MLP groups cut per event")
    ap.add_argument("--event-report", type=int, nargs="+", default=None,
                    help="the reports (counts) at which a cut happens")
    ap.add_argument("--interval", type=int, default=None, help="steps between statistics reports")
    ap.add_argument("--budget-s", type=float, default=math.inf, help="end the loop after this much wall-clock")
    ap.add_argument("--no-shadow", action="store_true", help="do not run lyactl's controller in the shadow")
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
    shadow = None if a.no_shadow else _shadow(backend, preset["interval"], preset["steps"])
    cut = CutController(backend.groups(), preset["event_report"], a.cut, shadow)
    ctl.controller = cut
    n_params = sum(p.numel() for p in model.parameters())
    F0 = model_flops_per_token(model, backend.adapter)
    rows = _measure(preset, model, opt, ctl, device, dtype, rank, fsdp, a.compile, a.budget_s)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out = summarise(rows, a.preset, preset, F0, world, gpu, n_params)
    out.update(events=len(ctl.events), compile=a.compile, shadow=shadow is not None,
               shadow_decisions=cut.shadow_decisions, steps_planned=preset["steps"], argv=sys.argv[1:])
    if rank == 0:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2, default=lambda v: None if isinstance(v, float) and np.isnan(v) else v))
        print(json.dumps({k: out[k] for k in ("n_params", "steps", "step_time_s_before", "overhead_frac",
                                              "realised_share", "compile_stall_s_per_event")}))
    if dist.is_initialized():
        dist.barrier()  # every rank done (rank 0 wrote the record) before the group goes: a rank
        dist.destroy_process_group()  # tearing gloo down while another still uses it aborts (SIGABRT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
