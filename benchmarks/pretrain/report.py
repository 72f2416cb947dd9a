"""Gather the jobs of a pretraining benchmark into one results file, with paired tests.

Schema (docs/results.md): ``{"name", "gpu", "tokens", "arms": [{"arm", "seed", "wall_s",
"train_flops", "val_bpb", "hellaswag_acc_norm", "mmlu_acc", ...}], "paired": [...],
"paired_vs_lyactl": [...], "summary": {...}}``. Per-item evaluation scores are used here for
the paired tests against "dense" (and "lyactl") on the same seed (paired bootstrap over documents / items, exact McNemar) and then
left out of the file, which would otherwise be tens of MB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from benchmarks.pretrain.record_notes import note_for
from scipy import stats as sstats

__all__ = ["merge", "seed_paired"]

_KEEP = ("id", "arm", "seed", "model", "steps", "tokens", "n_params", "n_params_final", "final_shapes", "final_d",
         "frozen_prefix", "wall_s", "compile_s", "eval_s", "train_flops", "val_bpb", "val_bpb_by_source",
         "endings_acc_norm", "lambada_acc", "hellaswag_acc_norm", "mmlu_acc", "peak_mem_gib", "fpt", "gpu",
         "n_events", "final_loss", "caveat", "gpu_shared_by", "warmed", "losses")


def _load(out: Path) -> tuple[list[dict], list[dict]]:
    """(runs, withdrawn runs) from ``out/*.json``; notes of :mod:`record_notes` applied."""
    runs, withdrawn = [], []
    for p in sorted(out.glob("*.json")):
        if p.name.endswith(".spec.json") or p.name == "status.json":
            continue
        run = json.loads(p.read_text())
        if "arm" not in run:  # skip side files (e.g. a benchmark's own result)
            continue
        note = note_for(run.get("id", p.stem), p)
        if note is not None and note[0] == "withdrawn":
            withdrawn.append({k: run.get(k) for k in ("id", "arm", "seed", "train_flops", "val_bpb")} | {"reason": note[1]})
            continue
        if note is not None:
            run["caveat"] = note[1]
        runs.append(run)
    return runs, withdrawn


def seed_paired(a: list[float], b: list[float]) -> dict:
    """Mean relative difference ``(a_s - b_s) / b_s`` over paired seeds with a t-interval (95%)."""
    d = np.array([(x - y) / y for x, y in zip(a, b)], dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return {"mean_rel": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    half = float(sstats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean_rel": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _paired_items(runs: list[dict], ref_arm: str = "dense", skip: tuple[str, ...] = ()) -> list[dict]:
    """Each run (other than ``ref_arm``'s, dense's and the ``skip`` arms') against the ``ref_arm``
    run of its seed, item by item (:func:`lyactl_torch.evaluate.compare`)."""
    from lyactl_torch.evaluate import compare

    ref = {r["seed"]: r for r in runs if r["arm"] == ref_arm}
    rows = []
    for r in runs:
        other = ref.get(r["seed"])
        if r["arm"] in (ref_arm, "dense", *skip) or other is None or "eval" not in r or "eval" not in other:
            continue
        cmp = compare({"tasks": r["eval"]}, {"tasks": other["eval"]})
        rows.append({"arm": r["arm"], "id": r["id"], "seed": r["seed"], "vs": other["id"], "tests": cmp})
    return rows


def _summary(runs: list[dict]) -> dict:
    by = lambda arm: {r["seed"]: r for r in runs if r["arm"] == arm}  # noqa: E731
    dense, out = by("dense"), {}
    for arm in sorted({r["arm"] for r in runs} - {"dense", "frontier"}):
        own = by(arm)
        seeds = sorted(set(own) & set(dense))
        if not seeds:
            continue
        solo = [s for s in seeds if own[s].get("gpu_shared_by", 1) == 1 and dense[s].get("gpu_shared_by", 1) == 1]
        out[arm] = {
            "seeds": seeds,
            # a wall-clock measured while other jobs shared the GPU is not a training time
            "wall_ratio": seed_paired([own[s]["wall_s"] for s in solo], [dense[s]["wall_s"] for s in solo]),
            "flops_ratio": seed_paired([own[s]["train_flops"] for s in seeds], [dense[s]["train_flops"] for s in seeds]),
            "val_bpb": seed_paired([own[s]["val_bpb"] for s in seeds], [dense[s]["val_bpb"] for s in seeds]),
        }
    if len(dense) > 1:
        v = [r["val_bpb"] for r in dense.values()]
        out["dense_seed_spread"] = {"min": min(v), "max": max(v), "rel_range": (max(v) - min(v)) / np.mean(v)}
    return out


def merge(out: Path, name: str, preset: str) -> dict:
    """Read ``out/*.json`` job results; return the results document."""
    runs, withdrawn = _load(out)
    runs = [r for r in runs if r.get("arm") not in ("bench", "warm")]
    for r in runs:
        r["n_events"] = len(r.get("events", []))
        r["final_loss"] = r["losses"][-1][1] if r.get("losses") else None
    arms = [{k: r.get(k) for k in _KEEP if k in r} for r in runs]
    dense = [r for r in runs if r["arm"] == "dense"]
    decisions = [{"id": r["id"], "events": r.get("events", [])} for r in runs if r.get("events")]
    return {
        "name": name,
        "preset": preset,
        "gpu": next((r.get("gpu") for r in runs if r.get("gpu")), "cpu"),
        "tokens": dense[0]["tokens"] if dense else None,
        "arms": arms,
        "paired": _paired_items(runs),
        "paired_vs_lyactl": _paired_items(runs, "lyactl", skip=("frontier",)),
        "summary": _summary(runs),
        "events": decisions,
        "withdrawn": withdrawn,
    }
