"""A CPU-scale look at issue 6's question: where a smaller dense model IS worse, does lyactl
(early or late decisions) beat a dense model of the same training compute?

The demo's data and schedule (``lyactl_torch.demo.small_preset``: 400 steps of 16 x 64
tokens) with a 2-block model, d=128, 4 heads of 32, MLP 512 (the demo's 4 blocks are
oversized here: ``benchmarks/studies/demo_regime.py``). The dense frontier: the same depth and
width with fewer heads and a narrower MLP (heads of 32 kept: 4/512, 3/384, 2/256), which is
what lyactl's head and MLP-block pruning produces. Then lyactl as in the demo (budget 0.3,
decisions between 25 % and 80 % of training), lyactl-late (budget 0.2, decisions between
40 % and 70 %) and lyactl-gradual (lyactl's budget reached by a cubic ramp of the set-point
from 25 % to 50 % of training), seeds 0 and 1, validation bits per byte against training
FLOPs. Toy scale on
CPU: a pointer for the GPU runs, not a substitute. Writes
``benchmarks/results/cpu_regime_study.json``; about 5 minutes on two cores.
``--arms a,b`` runs only those arms and merges them into the existing file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from lyactl_torch.demo import small_preset
from lyactl_torch.runner import prepare_data, run_arm

SEEDS = (0, 1)


def _arms():
    base = small_preset()
    model = dataclasses.replace(base.model, n_layer=2, head_dim=32)
    arms = {f"dense-h{h}": (dataclasses.replace(base, model=dataclasses.replace(model, n_head=h, mlp_hidden=128 * h)),
                            False) for h in (4, 3, 2)}
    start = dataclasses.replace(base, model=dataclasses.replace(model, n_head=4, mlp_hidden=512))
    arms["lyactl"] = (start, True)
    arms["lyactl-late"] = (dataclasses.replace(start, controller=dataclasses.replace(
        start.controller, budget=0.2, warmup_frac=0.4, last_frac=0.7)), True)
    arms["lyactl-gradual"] = (dataclasses.replace(start, controller=dataclasses.replace(
        start.controller, ramp_end_frac=0.5)), True)
    # the penalty's cap u_max bounds how fast a chosen group is driven to zero
    arms["lyactl-late-slow"] = (dataclasses.replace(start, controller=dataclasses.replace(
        start.controller, budget=0.2, warmup_frac=0.4, last_frac=0.7, u_max=1.2)), True)
    return arms


def _frontier_bpb(rows: list[dict], seed: int, flops: float) -> float:
    """Dense bits per byte at ``flops`` by linear interpolation in log FLOPs (same seed)."""
    pts = sorted((r["train_flops"], r["val_bpb"]) for r in rows if r["arm"].startswith("dense") and r["seed"] == seed)
    x, y = np.log([p[0] for p in pts]), [p[1] for p in pts]
    return float(np.interp(np.log(flops), x, y))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="", help="comma-separated arms to (re-)run; the rest are kept from the file")
    args = ap.parse_args(argv)
    path = Path(__file__).resolve().parents[1] / "results" / "cpu_regime_study.json"
    only = set(filter(None, args.arms.split(",")))
    rows = [r for r in json.loads(path.read_text())["runs"] if r["arm"] not in only] if only else []
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for seed in SEEDS:
            for name, (cfg, controlled) in _arms().items():
                if only and name not in only:
                    continue
                cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, seed=seed))
                r = run_arm(cfg, prepare_data(cfg, out), out, f"{name}-s{seed}", controlled=controlled, progress=False)
                rows.append({"arm": name, "seed": seed, "train_flops": r["train_flops"], "val_bpb": r["val_bpb"],
                             "val_bpb_stderr": r["val_bpb_stderr"], "events": len(r.get("events", []))})
                print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        if r["arm"].startswith("lyactl"):
            r["dense_at_same_flops"] = _frontier_bpb(rows, r["seed"], r["train_flops"])
            r["vs_frontier"] = r["val_bpb"] / r["dense_at_same_flops"] - 1
    res = {"name": "cpu_regime_study", "runs": sorted(rows, key=lambda r: (r["seed"], r["arm"]))}
    path.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
