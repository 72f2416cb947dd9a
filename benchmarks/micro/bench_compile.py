"""Compile stall per structural event and steady step time, per compile strategy.

For each strategy of :mod:`lyactl_torch.compile` (``whole``, ``per-block``, ``dynamic``) and
eager as the reference, a fresh process (fresh dynamo state, an empty inductor cache folder, so
no strategy profits from another's or an earlier run's cache) builds the reference GPT, trains
it a few steps, then applies four events through ``TorchBackend.apply``:

1. one head removed in block 0 (one block gets a new shape);
2. one head removed in every other block (all blocks equal again: a per-block cache hit);
3. one MLP group removed in block 0 (a new shape again);
4. ``b + 1`` MLP groups removed in every block ``b >= 1`` (as many new, distinct shapes as there
   are changed blocks: per-block's worst case, one graph per changed block).

Measured: the first step (compile included), the median steady step before and after the events,
the stall per event (first step after the event minus the median steady step after it), and the
number of graphs dynamo compiled at each event (``counters["stats"]["unique_graphs"]``). Each
time is taken as wall-clock and as CPU seconds of the process and its waited-for children (the
C++ compiler): on a shared, loaded CPU the wall-clock measures the neighbours, the CPU seconds
much less so.

CPU (default): ``python benchmarks/micro/bench_compile.py`` -> ``benchmarks/results/compile_cpu.json``.
GPU (not run yet): ``python benchmarks/micro/bench_compile.py --device cuda --preset gpt2-small
--out benchmarks/results/compile_h200.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {
    "cpu-small": dict(vocab_size=512, seq_len=64, d_model=128, n_layer=4, n_head=4, head_dim=32),
    "gpt2-small": dict(vocab_size=50304, seq_len=1024, d_model=768, n_layer=12, n_head=12, head_dim=64),
}
STRATEGIES = ("eager", "whole", "per-block", "dynamic")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _cpu_s() -> float:
    """CPU seconds of this process (``process_time``, fine-grained) and of its waited-for
    children (inductor's C++ compiler; ``os.times``, 10 ms ticks)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def _step_s(fwd, opt, x, y, dev: torch.device) -> tuple[float, float]:
    """One training step: ``(wall seconds, CPU seconds)``."""
    t, c = time.perf_counter(), _cpu_s()
    _, loss = fwd(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(dev)
    return time.perf_counter() - t, _cpu_s() - c


def _steady(fwd, opt, x, y, dev: torch.device, steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``steps`` steps."""
    runs = [_step_s(fwd, opt, x, y, dev) for _ in range(steps)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _event(backend, eid: int, picks: list[tuple[str, int]], used: set[int]):
    """An Event pruning the first group not in ``used`` of each (kind, layer) in ``picks``."""
    from lyactl.control.groups import Action, Decision, Event

    groups, chosen = backend.groups(), []
    for kind, layer in picks:
        i = next(i for i, g in enumerate(groups) if g.kind.value == kind and g.layer == layer and i not in used)
        chosen.append(i)
        used.add(i)
    return Event(eid, 0, tuple(Decision(0, groups[i].name, i, Action.PRUNE) for i in chosen))


def run_one(strategy: str, preset: str, device: str, batch: int, steps: int, backend_name: str,
            threads: int) -> dict:
    """Measure one strategy in this process (see the module docstring)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from lyactl_torch.backend import TorchBackend
    from lyactl_torch.compile import compile_model, recompile_after_event
    from lyactl_torch.model import GPT, GPTConfig

    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = GPTConfig(**PRESETS[preset])
    model = GPT(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    backend = TorchBackend(model, opt)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=dev)
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=dev)
    eager = strategy == "eager"
    fwd = model if eager else compile_model(model, strategy, backend=backend_name)
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    first_s, first_cpu = _step_s(fwd, opt, x, y, dev)
    steady0, steady0_cpu = _steady(fwd, opt, x, y, dev, steps)
    L = cfg.n_layer
    plans = [[("head", 0)], [("head", b) for b in range(1, L)], [("mlp_block", 0)],
             [("mlp_block", b) for b in range(1, L) for _ in range(b + 1)]]
    events, used = [], set()
    for eid, picks in enumerate(plans, start=1):
        backend.apply(_event(backend, eid, picks, used))
        g0 = graphs()
        if not eager:
            fwd = recompile_after_event(model, fwd)
        t_first, c_first = _step_s(fwd, opt, x, y, dev)
        n_graphs = graphs() - g0
        steady, steady_cpu = _steady(fwd, opt, x, y, dev, steps)
        events.append({"event": eid, "picks": picks, "first_step_s": t_first, "steady_step_s": steady,
                       "stall_s": max(0.0, t_first - steady), "stall_cpu_s": max(0.0, c_first - steady_cpu),
                       "steady_step_cpu_s": steady_cpu, "graphs_compiled": n_graphs,
                       "shapes": [list(s.__dict__.values()) for s in model.shapes()]})
    return {"strategy": strategy, "first_step_s": first_s, "first_step_cpu_s": first_cpu,
            "steady_step_s_before": steady0, "steady_step_cpu_s_before": steady0_cpu,
            "steady_step_s_after": events[-1]["steady_step_s"],
            "steady_step_cpu_s_after": events[-1]["steady_step_cpu_s"], "events": events,
            "stall_s_per_event": statistics.mean(e["stall_s"] for e in events),
            "stall_cpu_s_per_event": statistics.mean(e["stall_cpu_s"] for e in events)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="steady steps timed per phase (median)")
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_cpu.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        row = run_one(args.one, args.preset, args.device, args.batch, args.steps, args.backend, args.threads)
        print(json.dumps(row))
        return 0
    rows = []
    for strategy in args.strategies.split(","):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            cmd = [sys.executable, __file__, "--one", strategy, "--device", args.device, "--preset", args.preset,
                   "--batch", str(args.batch), "--steps", str(args.steps), "--backend", args.backend, "--threads", str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{strategy:10s} first {r['first_step_s']:7.2f} s (cpu {r['first_step_cpu_s']:6.2f})  stall/event "
              f"{r['stall_s_per_event']:6.2f} s (cpu {r['stall_cpu_s_per_event']:6.2f})  "
              f"step {1e3 * r['steady_step_s_before']:7.1f} -> {1e3 * r['steady_step_s_after']:7.1f} ms  graphs/event "
              f"{[e['graphs_compiled'] for e in r['events']]}", flush=True)
    result = {"device": args.device, "preset": args.preset, "config": PRESETS[args.preset], "batch": args.batch,
              "backend": args.backend, "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
              "load_avg_1m_at_end": os.getloadavg()[0],
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
