"""Wall-clock time of one certified state cut of one LRU layer (issue 14), per engine and stage.

    python -m benchmarks.ssm.cut_time --device cuda --out /tmp/cut_time_h200.json
    python -m benchmarks.ssm.cut_time --device cpu --reps 2 --out /tmp/cut_time_cpu.json

The layer: ``LRU(d_model, n_state)`` at its initialisation (float32 parameters, AdamW state
after one step), on ``--device``. Each repetition cuts a fresh copy of it, three ways, each
timed end to end with the device synchronised:

* ``balanced_torch``: what :class:`lyactl_torch.ssm.StateTruncator` runs per LRU layer, the
  layer's HSVs (:func:`~lyactl_torch.ssm.state_op.layer_report`), then
  :func:`~lyactl_torch.ssm.truncate.balanced_surgery` to ``--rank`` real states (device engine);
* ``balanced_numpy``: the same two steps with the core on the host (HSVs by
  :func:`lyactl.analysis.gramians.hsv_from_gramians`, ``engine="numpy"``); the error check is
  the device one in both;
* ``modal``: :func:`~lyactl_torch.ssm.truncate.select_modes` keeping ``--modes`` modes.

The first repetition is reported apart (``cold``: solver handles, allocator) from the mean of
the others. ``stages`` times the torch engine step by step (Gramians, two ``eigh``, the
singular values and vectors, the reduction with its ``eig`` and the map back, the error check),
with the alternatives it did not take for reference. ``agreement`` compares
the two engines' certificates (HSVs, bound, error). Nothing is written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lyactl.analysis.gramians import hsv_from_gramians, real_output_gramians
from lyactl_torch.ssm import balance_torch as bt
from lyactl_torch.ssm.hinf_torch import hinf_error
from lyactl_torch.ssm.lru import LRU, LRUConfig
from lyactl_torch.ssm.state_op import layer_report
from lyactl_torch.ssm.truncate import Surgery, balanced_surgery, keep_top, magnitude_scores, select_modes

__all__ = ["main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _layer(N: int, H: int, device: torch.device, seed: int) -> tuple[LRU, torch.optim.Optimizer]:
    """A fresh layer and its AdamW after one step on random gradients (seeded)."""
    torch.manual_seed(seed)
    layer = LRU(LRUConfig(H, N), torch.Generator().manual_seed(seed)).to(device)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    for p in layer.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    return layer, opt


def _cut(case: str, layer: LRU, opt: torch.optim.Optimizer, rank: int, modes: int, n_freq: int,
         device: torch.device) -> dict:
    """One cut, timed: the HSV report (balanced cases) and the surgery."""
    out: dict = {}
    if case == "modal":
        keep = keep_top(magnitude_scores(layer), modes)
        out["surgery_s"], rec = _timed(lambda: select_modes(layer, opt, keep, rule="magnitude", n_freq=n_freq), device)
    else:
        engine = case.split("_")[1]
        report = (lambda: layer_report(layer, "l", 0, 64)) if engine == "torch" else \
            (lambda: hsv_from_gramians(*real_output_gramians(*layer.system()[:3])))
        out["hsv_report_s"], _ = _timed(report, device)
        out["surgery_s"], rec = _timed(
            lambda: balanced_surgery(layer, opt, rank=rank, n_freq=n_freq, engine=engine), device)
    out["total_s"] = out.get("hsv_report_s", 0.0) + out["surgery_s"]
    out["record"] = rec
    return out


def _stages(layer: LRU, rank: int, n_freq: int, device: torch.device) -> dict[str, float]:
    """The torch engine's steps one by one (the layer is not changed), with the choices it
    did not make for reference (``*_reference_s``: the plain SVD, scipy's host ``eig``)."""
    t: dict[str, float] = {}
    t["modes_s"], (lam, B, C) = _timed(lambda: bt.diagonal_modes(layer), device)
    t["gramians_s"], (P, Q) = _timed(lambda: bt.real_output_gramians(lam, B, C), device)
    t["eigh_x2_s"], ((Lp, _), (Lq, _)) = _timed(lambda: (bt.psd_factor(P), bt.psd_factor(Q)), device)
    M = Lq.mT @ Lp
    t["singular_s"], (s, U_r, V_r) = _timed(lambda: bt._singular(M, rank), device)
    t["singular_values_only_s"], _ = _timed(lambda: bt._singular(M, 0), device)
    t["singular_svd_reference_s"], _ = _timed(lambda: torch.linalg.svd(M), device)
    sc = 1.0 / torch.sqrt(s[:rank])
    Tz, Tzinv = (Lp @ V_r) * sc, sc[:, None] * (U_r.mT @ Lq.mT)
    t["reduce_eig_map_back_s"], red = _timed(lambda: bt._map_back(lam, B, C, Tz, Tzinv, 1e8), device)
    N = lam.shape[0]
    a, b = lam.real[:, None], lam.imag[:, None]
    Ar = Tzinv @ torch.cat([a * Tz[:N] - b * Tz[N:], b * Tz[:N] + a * Tz[N:]], 0)
    t["of_which_eig_s"], _ = _timed(lambda: bt._rediagonalise_on(Ar, 1e8), device)
    t["eig_host_reference_s"], _ = _timed(lambda: bt._rediagonalise_on(Ar, 1e8, torch_eig=False), device)
    t["error_check_s"], _ = _timed(lambda: hinf_error((lam, B, C), red[:3], n_freq, device), device)
    return t


def _summary(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k.endswith("_s")]
    rest = runs[1:] or runs
    return {"cold": {k: runs[0][k] for k in keys}, "warm_mean": {k: float(np.mean([r[k] for r in rest])) for k in keys},
            "all": {k: [r[k] for r in runs] for k in keys}}


def _agreement(a: Surgery, b: Surgery) -> dict:
    ha, hb = np.asarray(a.hsv), np.asarray(b.hsv)
    return {"hsv_max_rel_diff": float(np.max(np.abs(ha - hb) / np.maximum(hb, 1e-300))),
            "hsv_max_abs_diff_over_hsv0": float(np.max(np.abs(ha - hb)) / hb[0]),
            "bound_torch": a.bound, "bound_numpy": b.bound, "error_torch": a.error, "error_numpy": b.error,
            "modes_after_torch": a.states_after, "modes_after_numpy": b.states_after}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--n-state", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--rank", type=int, default=None, help="real states kept by the balanced cut (default n_state / 2)")
    ap.add_argument("--modes", type=int, default=None, help="modes kept by the modal cut (default n_state / 4)")
    ap.add_argument("--n-freq", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default="balanced_torch,balanced_numpy,modal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    N, H = args.n_state, args.d_model
    rank, modes = args.rank or N // 2, args.modes or N // 4
    base, opt0 = _layer(N, H, device, args.seed)
    result: dict = {"device": args.device, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "n_state": N, "d_model": H, "rank": rank, "modes": modes,
                    "n_freq": args.n_freq, "reps": args.reps, "cases": {}}
    records: dict[str, Surgery] = {}
    for case in args.cases.split(","):
        runs = []
        for _ in range(args.reps):
            layer = copy.deepcopy(base)
            opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
            opt.load_state_dict(opt0.state_dict())
            run = _cut(case, layer, opt, rank, modes, args.n_freq, device)
            records[case] = run.pop("record")
            runs.append(run)
            print(case, {k: round(v, 4) for k, v in run.items()}, flush=True)
        result["cases"][case] = _summary(runs) | {"error": records[case].error, "bound": records[case].bound,
                                                 "modes_after": records[case].states_after}
    result["stages_torch"] = _stages(base, rank, args.n_freq, device)
    print("stages_torch", {k: round(v, 4) for k, v in result["stages_torch"].items()}, flush=True)
    if "balanced_torch" in records and "balanced_numpy" in records:
        result["agreement"] = _agreement(records["balanced_torch"], records["balanced_numpy"])
        print("agreement", result["agreement"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
