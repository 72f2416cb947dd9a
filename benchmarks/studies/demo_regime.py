"""Is the demo's dense model oversized for its 400 steps? (The regime check of the demo.)

Trains, on the demo's data and schedule (``lyactl_torch.demo.small_preset``), the demo's dense
model (d=128, 4 blocks) and three smaller dense models: 3 blocks, 2 blocks, and d=96 with 3
heads, each from seeds 0 and 1, and records training FLOPs and validation bits per byte
(with its standard error over the held-out documents). If a smaller dense model matches the
dense one, the demo regime is oversized and "no loss at fewer FLOPs" there shows lyactl's
mechanism, not a saving that beats simply training a smaller model. CPU, about 4 minutes on
two cores. Writes ``benchmarks/results/demo_regime.json``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from lyactl_torch.demo import small_preset
from lyactl_torch.runner import prepare_data, run_arm


def main() -> list[dict]:
    torch.set_num_threads(1)
    base = small_preset()
    variants = {"dense": base.model, "L3": dataclasses.replace(base.model, n_layer=3),
                "L2": dataclasses.replace(base.model, n_layer=2),
                "d96": dataclasses.replace(base.model, d_model=96, n_head=3, mlp_hidden=384)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for seed in (0, 1):
            for name, model in variants.items():
                cfg = dataclasses.replace(base, model=model, training=dataclasses.replace(base.training, seed=seed))
                r = run_arm(cfg, prepare_data(cfg, out), out, f"{name}-s{seed}", controlled=False, progress=False)
                rows.append({"arm": name, "seed": seed, "model": dataclasses.asdict(model),
                             "train_flops": r["train_flops"], "val_bpb": r["val_bpb"], "val_bpb_stderr": r["val_bpb_stderr"]})
                print(json.dumps(rows[-1]), flush=True)
    path = Path(__file__).resolve().parents[1] / "results" / "demo_regime.json"
    path.write_text(json.dumps({"name": "demo_regime", "preset": "small", "runs": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
