"""Does a structural cut turn into step time? GPT-2 small on one GPU, before and after events.

Setup as in ../shared/notes/gpu-reference.md: d=768, 12 blocks, 12 heads, MLP 3072, vocabulary
50304, sequence 1024, batch 32, bf16 autocast, torch.compile, fused AdamW, random tokens. For
each variant, events are applied through :class:`lyactl_torch.TorchBackend` (the same code path
as training), the model is recompiled, and the mean step time of ``--steps`` steps after
``--warmup`` steps is compared with the dense one. Realisation = (time saved) / (FLOPs cut).
Also measured: the cost of one statistics report (``backend.statistics()``, one fused pass and
one host sync) against the step time, GPU memory before and after, and the time of restore.

    python -m benchmarks.micro.bench_surgery_gpu --out benchmarks/results/surgery_h200.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lyactl.control.groups import Action, Decision, Event, GroupKind
from lyactl_torch.backend import TorchBackend
from lyactl_torch.flops import model_flops_per_token
from lyactl_torch.model import GPT, GPTConfig

__all__ = ["main"]


def _step_ms(model, opt, x, y, steps: int, warmup: int, compile_: bool) -> float:
    torch._dynamo.reset()
    fwd = torch.compile(model, dynamic=False) if compile_ else model
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0) / steps


def _cut_event(backend: TorchBackend, target: float, layers: int, eid: int) -> Event:
    """Remove ``layers`` top blocks, then MLP blocks and heads round-robin over layers until
    FLOPs/token <= ``target`` x dense (estimated from group costs)."""
    groups = backend.groups()
    total = model_flops_per_token(backend.model)
    budget = (1 - target) * total
    chosen: list[int] = []
    layer_ids = sorted({g.layer for g in groups if g.kind is GroupKind.LAYER})
    dropped = set(layer_ids[len(layer_ids) - layers:]) if layers else set()
    for i, g in enumerate(groups):
        if g.kind is GroupKind.LAYER and g.layer in dropped:
            chosen.append(i)
            budget -= g.flops_remove
    queues: dict[tuple[int, GroupKind], list[int]] = {}
    for i, g in enumerate(groups):
        if g.kind in (GroupKind.MLP_BLOCK, GroupKind.HEAD) and g.layer not in dropped:
            queues.setdefault((g.layer, g.kind), []).append(i)
    # round-robin over layers, two MLP blocks per head, keeping >= 1 of each kind per layer
    while budget > 0 and any(len(q) > 1 for q in queues.values()):
        for (layer, kind), q in sorted(queues.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
            for _ in range(2 if kind is GroupKind.MLP_BLOCK else 1):
                if budget > 0 and len(q) > 1:
                    i = q.pop()
                    chosen.append(i)
                    budget -= groups[i].flops_remove
    decisions = tuple(Decision(0, groups[i].name, i, Action.PRUNE) for i in chosen)
    return Event(eid, 0, decisions)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/surgery_h200.json"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    cfg = GPTConfig(vocab_size=50304, seq_len=1024, d_model=768, n_layer=12, n_head=12)
    x = torch.randint(0, cfg.vocab_size, (args.batch, cfg.seq_len), device=dev)
    y = torch.randint(0, cfg.vocab_size, (args.batch, cfg.seq_len), device=dev)
    rows = []
    for name, target, layers in (("widths", 0.60, 0), ("widths+2 layers", 0.60, 2)):
        torch.manual_seed(0)
        model = GPT(cfg).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        backend = TorchBackend(model, opt)
        ms0 = _step_ms(model, opt, x, y, args.steps, args.warmup, not args.no_compile)
        f0 = model_flops_per_token(model)
        backend.observe_step(torch.zeros((), device=dev), 1e-4)
        backend.statistics()  # the first call builds the reduction plan and its buffers: not timed
        t = time.perf_counter()
        n_rep = 5
        for _ in range(n_rep):
            backend.statistics()
        stats_ms = 1e3 * (time.perf_counter() - t) / n_rep
        mem0 = torch.cuda.memory_allocated(dev)
        ev = _cut_event(backend, target, layers, 1)
        backend.apply(ev)
        torch.cuda.synchronize()
        mem1 = torch.cuda.memory_allocated(dev)
        f1 = model_flops_per_token(model)
        ms1 = _step_ms(model, opt, x, y, args.steps, args.warmup, not args.no_compile)
        t = time.perf_counter()
        backend.restore(ev)
        torch.cuda.synchronize()
        restore_s = time.perf_counter() - t
        cut, saved = 1 - f1 / f0, 1 - ms1 / ms0
        rows.append({"variant": name, "flops_per_token_before": f0, "flops_per_token_after": f1, "flops_cut": cut,
                     "step_ms_before": ms0, "step_ms_after": ms1, "time_saved": saved,
                     "realisation": saved / cut, "target_time_saved": 0.85 * cut, "passed": saved >= 0.85 * cut,
                     "mem_allocated_gib_before": mem0 / 2**30, "mem_allocated_gib_after": mem1 / 2**30,
                     "stats_ms": stats_ms, "stats_overhead_at_K25": stats_ms / 25 / ms0,
                     "surgery_s": backend.record[0]["seconds"], "restore_s": restore_s,
                     "n_groups_removed": len(ev.decisions), "shapes_after": [list(s.__dict__.values()) for s in model.shapes()]})
        print(json.dumps(rows[-1]), flush=True)
        del model, opt, backend
        torch.cuda.empty_cache()
    result = {"name": "surgery_h200", "gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__,
              "config": {"d_model": 768, "n_layer": 12, "n_head": 12, "mlp": 3072, "vocab": 50304,
                         "seq_len": 1024, "batch": args.batch, "compile": not args.no_compile},
              "variants": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
