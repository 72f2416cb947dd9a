"""Sanity check on the REAL evaluation files: a randomly initialised model scores at chance.

A randomly initialised small GPT (the project's ``lyactl_torch.model.GPT``, GPT-2 tokenizer,
d_model 64, 2 layers, seq_len 512) is scored on the first N HellaSwag items and on all 57
MMLU subjects 0-shot (first M test items of each subject). Chance is 0.25 for both; the
check passes when 0.25 lies inside value +- 1.96 stderr for acc. Writes
``benchmarks/results/eval_chance.json``. CPU, a few minutes.

Usage: python -m benchmarks.studies.eval_chance_check [--data-dir ../shared/data] [--hellaswag 500] [--mmlu 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from lyactl_torch.evaluate import evaluate
from lyactl_torch.model import GPT, GPTConfig
from lyactl_torch.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--hellaswag", type=int, default=500)
    p.add_argument("--mmlu", type=int, default=10, help="test items per subject (57 subjects)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_chance.json")
    args = p.parse_args(argv)
    if not (args.data_dir / "eval" / "hellaswag_val.jsonl.xz").is_file():
        print(f"missing evaluation data under {args.data_dir / 'eval'}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    tok = load_tokenizer()
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=512, d_model=64, n_layer=2, n_head=2, head_dim=32)
    model = GPT(cfg)
    out: dict = {"model": {"class": "lyactl_torch.model.GPT", "config": cfg.__dict__, "init_seed": 0},
                 "device": "cpu", "threads": torch.get_num_threads(), "chance": 0.25, "tasks": {}}
    for task, limit in (("hellaswag", args.hellaswag), ("mmlu0", args.mmlu)):
        t0 = time.perf_counter()
        res = evaluate(model, tok, [task], args.data_dir, device="cpu", batch_size=8, limit=limit, seq_len=512)
        r = res["tasks"][task]
        row = {"limit": limit, "seconds": round(time.perf_counter() - t0, 1), "metrics": r["metrics"]}
        for name, m in r["metrics"].items():
            lo, hi = m["value"] - 1.96 * m["stderr"], m["value"] + 1.96 * m["stderr"]
            row["metrics"][name] = {**m, "ci95": [lo, hi], "chance_inside_ci95": bool(lo <= 0.25 <= hi)}
        if "subjects" in r:
            row["n_subjects"] = len(r["subjects"])
        out["tasks"][task] = row
        print(task, {k: (round(v["value"], 4), round(v["stderr"], 4), v["chance_inside_ci95"])
                     for k, v in row["metrics"].items()}, f"{row['seconds']} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
