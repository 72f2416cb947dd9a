"""Does a state cut become step time? Training-step time of the SSM language model per state
size, batch, scan layout and compilation mode, with a kernel profile of one step (issue 14's wall-clock
target).

    python -m benchmarks.ssm.step_time --device cuda --out /tmp/ssm_step_time.json
    python -m benchmarks.ssm.step_time --device cpu --states 32 8 --batches 2 --d-model 16 --steps 2

For each ``(mode, layout, batch, n_state)``: an :class:`~lyactl_torch.ssm.lm.SSMLM` of the h200 preset's
shape (4 blocks, d 256, MLP 1024, vocab 8192, sequence 512) on random tokens, AdamW, bf16
autocast on CUDA; ``--warmup`` steps, then the mean of ``--steps`` timed steps (forward,
backward, clip, optimizer step; the device synchronised once around the timed block). Modes:
``eager``; ``compile`` (``torch.compile(model, dynamic=False)``; a failure is recorded with its
message, not raised). Layouts: the LRU scan time-major (``"time"``, the default) or state-major
(``"state"``, :func:`~lyactl_torch.ssm.scan.chunked_scan_state_major`). The record also has the model's counted training FLOPs per token, so
``tokens/s x FLOPs/token`` says how far from the FLOP count the step is, and, for the first
configuration, the 15 kernels with the most device time in one profiled step.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import torch

from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig, flops_per_token
from lyactl_torch.ssm.truncate import keep_top, random_scores, select_modes

__all__ = ["step_time", "cut_step_time", "main"]


def _step(fwd, model: SSMLM, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = fwd(x)
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_time(cfg: SSMLMConfig, batch: int, seq: int, mode: str, dev: torch.device, warmup: int, steps: int) -> dict:
    """Mean seconds per training step (``mode``: ``"eager"`` or ``"compile"``)."""
    model = SSMLM(cfg, seed=0).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = torch.compile(model, dynamic=False) if mode == "compile" else model
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g).to(dev)
    x, y = xy[:, :-1], xy[:, 1:]
    bf16 = dev.type == "cuda"
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            _step(fwd, model, opt, x, y, bf16)
        _sync(dev)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            _step(fwd, model, opt, x, y, bf16)
        _sync(dev)
    except Exception as e:  # a compile failure is a result here, not a crash of the sweep
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    dt = (time.perf_counter() - t0) / steps
    fpt = flops_per_token(model, seq)["train"]
    return {"step_s": dt, "warmup_s": warm_s, "tokens_per_s": batch * seq / dt, "train_flops_per_token": fpt,
            "achieved_tflops": fpt * batch * seq / dt / 1e12}


def _timed(model: SSMLM, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    bf16 = x.device.type == "cuda"
    _step(model, model, opt, x, y, bf16)  # one untimed step: allocations at the new shapes
    _sync(x.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(model, model, opt, x, y, bf16)
    _sync(x.device)
    return (time.perf_counter() - t0) / steps


def cut_step_time(cfg: SSMLMConfig, r: int, batch: int, seq: int, dev: torch.device, warmup: int,
                  steps: int) -> dict:
    """Step time of a model cut from ``cfg.n_state`` to ``r`` modes mid-run against a fresh model
    built at ``r``: does a cut model step as fast as the small model it now has the shape of?

    The cut model trains ``warmup`` steps, is evaluated once (``eval()``, a no-grad forward,
    ``train()``, as a benchmark probe does), keeps ``r`` random modes per layer (parameters and
    Adam moments sliced, :func:`~lyactl_torch.ssm.truncate.select_modes`) and is timed for
    ``steps`` steps; so is the fresh model after the same warm-up. One host sync per timing.
    """
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g).to(dev)
    x, y = xy[:, :-1], xy[:, 1:]
    out = {}
    for name, n in (("fresh_small", r), ("cut", cfg.n_state)):
        model = SSMLM(dataclasses.replace(cfg, n_state=n), seed=0).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(warmup):
            _step(model, model, opt, x, y, x.device.type == "cuda")
        if name == "cut":
            out["before_s"] = _timed(model, opt, x, y, steps)
            model.eval()
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                model(x)
            model.train()
            for i, layer in enumerate(model.ssm_layers()):
                select_modes(layer, opt, keep_top(random_scores(i)(layer), r), rule="random", name=f"ssm{i}")
            out["cut_states"] = model.states()
        out[f"{name}_s"] = _timed(model, opt, x, y, steps)
    return out | {"n_state": cfg.n_state, "r": r, "batch": batch, "layout": cfg.scan_layout,
                  "cut_over_fresh": out["cut_s"] / out["fresh_small_s"]}


def kernel_profile(cfg: SSMLMConfig, batch: int, seq: int, dev: torch.device, top: int = 15) -> list[dict]:
    """The ``top`` kernels by device (or CPU) time in one eager step after two warm-up steps."""
    from torch.profiler import ProfilerActivity, profile

    model = SSMLM(cfg, seed=0).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xy = torch.randint(0, cfg.vocab_size, (batch, seq + 1)).to(dev)
    for _ in range(2):
        _step(model, model, opt, xy[:, :-1], xy[:, 1:], dev.type == "cuda")
    _sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        _step(model, model, opt, xy[:, :-1], xy[:, 1:], dev.type == "cuda")
        _sync(dev)
    key = "device_time_total" if dev.type == "cuda" else "cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [{"name": e.key[:120], "count": e.count, "time_ms": getattr(e, key) / 1e3} for e in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--states", type=int, nargs="+", default=[1024, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    ap.add_argument("--layouts", nargs="+", choices=("time", "state"), default=["time", "state"],
                    help="the LRU scan's memory layout (SSMLMConfig.scan_layout)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cut", action="store_true",
                    help="also time a model cut from the first to the last --states size against a fresh one")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    rows = []
    for mode, layout, B, N in itertools.product(args.modes, args.layouts, args.batches, args.states):
        cfg = SSMLMConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=4, n_state=N,
                          mlp_hidden=4 * args.d_model, chunk=64, scan_layout=layout)
        rows.append({"mode": mode, "layout": layout, "batch": B, "n_state": N}
                    | step_time(cfg, B, args.seq, mode, dev, args.warmup, args.steps))
        print(json.dumps(rows[-1]), flush=True)
    cfg0 = SSMLMConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=4, n_state=args.states[0],
                       mlp_hidden=4 * args.d_model, chunk=64, scan_layout=args.layouts[0])
    cuts = [cut_step_time(dataclasses.replace(cfg0, scan_layout=lay), args.states[-1], B, args.seq, dev,
                          args.warmup, args.steps) for lay in args.layouts for B in args.batches] if args.cut else []
    for c in cuts:
        print(json.dumps(c), flush=True)
    prof = kernel_profile(cfg0, args.batches[0], args.seq, dev)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "seq": args.seq, "d_model": args.d_model, "rows": rows, "cuts": cuts,
              "profile": {"n_state": args.states[0], "batch": args.batches[0], "layout": args.layouts[0],
                          "kernels": prof}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
