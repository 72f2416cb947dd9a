"""When does the balanced-truncation certificate start to mean something? The Hankel singular
values of every LRU layer of the SSM language model, traced through full-state training
(issue 14: "timing" is one of the two explanations of why the early cut lost).

    python -m benchmarks.ssm.hsv_trace --preset h200 --data .data --steps 800 --every 40 --out X.json
    python -m benchmarks.ssm.hsv_trace --preset small-cpu --data ../shared/data --steps 600 --every 50 --out X.json

Nothing is cut: the model trains as the benchmark's ``full`` arm does (same optimizer, schedule
and data order, :mod:`benchmarks.ssm.run`). Every ``--every`` steps, per layer, with the device
engine (:mod:`lyactl_torch.ssm.balance_torch`) in float64: the HSVs of the real-output system,
the share of their sum that a cut to ``keep`` of the states would discard, the certified bound
``2 * sum(discarded)`` of that cut, the H-infinity error it would actually make (measured on the
frequency grid of :func:`lyactl_torch.ssm.truncate.measured_error`, from the reduced system,
not written to the layer) and their ratio (1 = a tight certificate; ~900 at 10 % of the 200-step
runs), plus the memory-length quantiles of the modes. The training loss of the step before each trace point rides along.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.ssm.run import PRESETS, _lr_at, _optimizer
from benchmarks.ssm.tasks import load_lm
from lyactl_torch.ssm import balance_torch
from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig
from lyactl_torch.ssm.truncate import measured_error

__all__ = ["layer_trace", "main"]

_ROOT = Path(__file__).resolve().parents[2]
_SMALL_CPU = {"d_model": 64, "n_layer": 2, "n_state": 128, "mlp_hidden": 256, "chunk": 32}
TRACE_PRESETS = {
    "h200": PRESETS["h200"],
    "small-cpu": PRESETS["tiny"] | {"lm": PRESETS["tiny"]["lm"] | {"model": _SMALL_CPU, "seq_len": 128, "batch": 16,
                                                                   "steps": 600, "lr": 3e-3}},
    "tiny": PRESETS["tiny"],
}


@torch.no_grad()
def layer_trace(layer: torch.nn.Module, keep: float, n_freq: int) -> dict:
    """One layer's HSV record (module docstring) at real-state rank ``2 round(keep N)``."""
    full = balance_torch.diagonal_modes(layer)
    N = int(full[0].shape[0])
    rank = 2 * max(1, int(round(keep * N)))
    tr = balance_torch.lru_truncation(*full, rank=rank)
    hsv = np.asarray(tr.hsv)
    error = measured_error(full, (tr.A, tr.B, tr.C), n_freq, full[0].device)
    mem = 1.0 / (1.0 - full[0].abs().double().cpu().numpy())
    return {"rank": rank, "hsv_top": float(hsv[0]), "hsv_median": float(np.median(hsv)),
            "hsv_at_rank": float(hsv[rank - 1]), "discarded_share": float(hsv[rank:].sum() / hsv.sum()),
            "bound": float(tr.bound), "error": float(error), "bound_over_error": float(tr.bound / max(error, 1e-300)),
            "memory_q10_50_90": [float(x) for x in np.quantile(mem, [0.1, 0.5, 0.9])]}


def _train(model: SSMLM, data, cfg_t: dict, preset: dict, args) -> list[dict]:
    dev = torch.device(preset["device"])
    from lyactl_torch.corpus import Batches

    opt = _optimizer(model, cfg_t["lr"])
    steps, T, Bsz = cfg_t["steps"], cfg_t["seq_len"], cfg_t["batch"]
    batches = Batches(data.train, T, Bsz, args.seed)
    trace, last_loss = [], None
    for step in range(steps + 1):
        if step % args.every == 0 or step == steps:
            t0 = time.perf_counter()
            layers = [layer_trace(m, preset["keep"], args.n_freq) for m in model.ssm_layers()]
            trace.append({"step": step, "frac": step / steps, "trace_s": time.perf_counter() - t0,
                          "train_loss": last_loss, "layers": layers})
            print(json.dumps({"step": step, "discarded_share": [round(x["discarded_share"], 3) for x in layers],
                              "bound_over_error": [round(x["bound_over_error"], 1) for x in layers]}), flush=True)
        if step == steps:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, cfg_t["lr"]) * g.get("lr_scale", 1.0)
        xy = torch.from_numpy(batches.batch(step)).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=preset["bf16"]):
            logits = model(xy[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last_loss = float(loss.detach())  # one host sync per step: a trace, not a speed run
    return trace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(TRACE_PRESETS), default="tiny")
    ap.add_argument("--data", type=Path, default=_ROOT.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=None, help="token cache folder (default next to --out)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-freq", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error(f"--every: expected an int >= 1, found {args.every}")
    preset = TRACE_PRESETS[args.preset]
    cfg_t = preset["lm"] | ({"steps": args.steps} if args.steps else {})
    if preset["device"] == "cpu":
        torch.set_num_threads(1)
    cache = args.cache or (args.out.parent if args.out else Path(".")) / f"cache_{args.preset}"
    data = load_lm(args.data / "corpus", _ROOT / "benchmarks" / "results" / "tokenizer_bpe8192.json", cache,
                   cfg_t["val_fraction"], cfg_t["sources"])
    model = SSMLM(SSMLMConfig(vocab_size=data.tokenizer.vocab_size, **cfg_t["model"]), seed=args.seed)
    model = model.to(preset["device"])
    t0 = time.perf_counter()
    trace = _train(model, data, cfg_t, preset, args)
    result = {"preset": args.preset, "model": cfg_t["model"], "steps": cfg_t["steps"], "keep": preset["keep"],
              "seed": args.seed, "wall_s": time.perf_counter() - t0,
              "device": torch.cuda.get_device_name(0) if preset["device"] == "cuda" else "cpu", "trace": trace}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
