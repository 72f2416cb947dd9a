"""Cost of the second-moment curvature ``curv`` in one statistics report, on this CPU.

``curv_g = sum v_i w_i^2 / sum w_i^2`` (:mod:`lyactl_torch.stats`) adds one stack of Adam's
``exp_avg_sq``, two products and the same per-group reductions to the fused pass; the
division is on the host. This measures ``TorchBackend.statistics()`` with and without it
(without: ``second_moment_of`` patched to report no second moment, so the pass skips the
row, which is the pass as it was) on two models: the tiny-width GPT-2-small *structure*
(launch-bound, as ``bench_stats_dispatch.py``) and a GPT-2-small-shaped model (12 x d768,
124 M parameters; arithmetic-bound on a CPU). Reports the median wall time and the ATen
operations dispatched per report, interleaving the two variants.

``--certificates PRESET`` (instead of the timings, merged into the same file) trains the demo's lyactl arm (``lyactl demo --preset PRESET``
settings) three times: without ``curv`` (the edge-of-stability fallback ``2 / lr``), with it
(``curv_scale = 1``, the low estimate) and with ``curv_scale`` = tokens per step (the high
one), and counts per monitor how many (report, group) pairs held and which monitors
certified the decisions taken. Writes ``benchmarks/results/curvature.json``. Not a GPU
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lyactl_torch as L
from lyactl_torch import stats as S

__all__ = ["main"]


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _time(backend: L.TorchBackend, patched: bool, reps: int) -> tuple[list[float], int]:
    """Times of ``reps`` reports and the ATen ops of one, with the curvature off if ``patched``."""
    orig = S.second_moment_of
    S.second_moment_of = (lambda *a: None) if patched else orig
    try:
        times = []
        for _ in range(reps):
            backend.observe_step(1.0)
            t = time.perf_counter()
            backend.statistics()
            times.append(time.perf_counter() - t)
        with _Count() as c:
            backend.statistics()
        return times, c.n
    finally:
        S.second_moment_of = orig


def _case(cfg: L.GPTConfig, block: int, reps: int, B: int) -> dict:
    torch.manual_seed(0)
    model = L.GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (B, cfg.seq_len))
    loss = model(x, x)[1]
    loss.backward()
    opt.step()  # every parameter gets its moments
    backend = L.TorchBackend(model, opt, block=block)
    backend.statistics()  # warm-up
    off, on = [], []
    for _ in range(reps):  # interleaved, one report each, against drift
        off += _time(backend, True, 1)[0]
        on += _time(backend, False, 1)[0]
    ops_off, ops_on = _time(backend, True, 0)[1], _time(backend, False, 0)[1]
    med_off, med_on = float(np.median(off)) * 1e3, float(np.median(on)) * 1e3
    return {"n_params": sum(p.numel() for p in model.parameters()), "reps": reps,
            "without_curv": {"median_ms": round(med_off, 3), "aten_ops": ops_off},
            "with_curv": {"median_ms": round(med_on, 3), "aten_ops": ops_on},
            "overhead_ratio": round(med_on / med_off, 3),
            "curv_finite_groups": int(np.isfinite(backend.statistics().curv).sum()), "n_groups": len(backend.groups())}


def _certificates(preset: str, variant: str) -> dict:
    """One lyactl arm of the demo ``preset`` with the curvature ``variant`` (off / low / high)."""
    from lyactl.control import controller as C
    from lyactl_torch.demo import run_config
    from lyactl_torch.runner import prepare_data, run_arm

    cfg = run_config(preset)
    held: Counter = Counter()
    decided: Counter = Counter()
    observe, statistics, moment = C.Controller.observe, S.ReductionPlan.statistics, S.second_moment_of
    scale = float(cfg.data.batch_size * cfg.model.seq_len) if variant == "high" else 1.0

    def counting(self, stats):
        out = observe(self, stats)
        for r in out.results:
            held[r.monitor.name] += int(r.holds(self.n_groups).sum())
        for e in out.events:
            for d in e.decisions:
                decided["+".join(sorted(c.monitor for c in d.certificates))] += 1
        return out

    C.Controller.observe = counting
    S.ReductionPlan.statistics = lambda self, *a, **k: statistics(self, *a, **{**k, "curv_scale": scale})
    if variant == "off":
        S.second_moment_of = lambda *a: None
    try:
        with tempfile.TemporaryDirectory() as d:
            rec = run_arm(cfg, prepare_data(cfg, Path(d)), Path(d), "lyactl", controlled=True, progress=False)
    finally:
        C.Controller.observe, S.ReductionPlan.statistics, S.second_moment_of = observe, statistics, moment
    return {"curv_scale": scale if variant != "off" else None, "monitor_holds": dict(held),
            "decisions_by_certificates": dict(decided), "val_bpb": rec["val_bpb"],
            "flops_per_token_ratio": rec["flops_per_token_after"] / rec["flops_per_token_before"],
            "frozen_prefix": rec["frozen_prefix"], "events": len(rec.get("events", []))}


def main(certificates: str | None = None) -> dict:
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    out = Path(__file__).resolve().parents[1] / "results" / "curvature.json"
    res = json.loads(out.read_text()) if out.exists() else {"name": "curvature"}
    if certificates is not None:
        res["certificates"] = {"preset": certificates,
                               **{v: _certificates(certificates, v) for v in ("off", "low", "high")}}
    else:
        tiny = L.GPTConfig(vocab_size=512, seq_len=32, d_model=24, n_layer=12, n_head=12, head_dim=2, mlp_hidden=96,
                           bias=True)
        small = L.GPTConfig(vocab_size=50304, seq_len=64, d_model=768, n_layer=12, n_head=12, head_dim=64, bias=True)
        res.update({"what": "TorchBackend.statistics() per report, with and without the curv row",
                    "cases": {"gpt2_small_structure_d24": _case(tiny, 16, 30, 2),
                              "gpt2_small_shape_d768": _case(small, 64, 7, 1)},
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__})
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--certificates", choices=("tiny", "small"), default=None,
                    help="also count certificates on the demo preset's lyactl arm")
    print(json.dumps(main(ap.parse_args().certificates), indent=2))
