"""When to cut: bits per byte against the full state, by cut point, for each selection rule.

Pools the SSM benchmark's records (``benchmarks/results/ssm_lm*.json``) in groups that share a
full-state arm (files joined by ``+`` ran in one device call: the same machine and teacher-free
seeds), pairs every cut run with the full run of its seed in its group, and prints one row per
(rule, cut point): the mean paired difference with its 95 % t-interval, the cut's immediate
damage where it was probed, and the training-FLOPs ratio. ``--plot`` draws the difference
against the cut point, one line per rule::

    python -m benchmarks.ssm.cut_point benchmarks/results/ssm_lm_800.json \\
        benchmarks/results/ssm_lm_late.json --plot docs/img/ssm_cut_point.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ssm.report import paired

__all__ = ["rows", "main"]

_RULES = ("lyactl", "lyactl-scaled", "random", "magnitude", "smallest", "horizon")


def _group(spec: str) -> list[dict[str, Any]]:
    """The runs of the ``+``-joined files, each cut run labelled ``rule@cut``."""
    runs = []
    for f in spec.split("+"):
        doc = json.loads(Path(f).read_text())
        for r in doc["arms"]:
            cut = r.get("cut_frac", doc["config"]["cut_frac"] if r.get("cut_step") is not None else None)
            runs.append(r | {"arm": r["arm"], "cut_frac": cut})
    return runs


def rows(specs: list[str]) -> list[dict[str, Any]]:
    """One row per (rule, cut point, group): paired difference against the group's full arm."""
    out = []
    for spec in specs:
        runs = _group(spec)
        full_flops = {r["seed"]: r["train_flops"] for r in runs if r["arm"] == "full"}
        for rule in _RULES:
            for cut in sorted({r["cut_frac"] for r in runs if r["arm"] == rule}):
                mine = [r for r in runs if r["arm"] == rule and r["cut_frac"] == cut]
                dmg = [r["metric_after_cut"] - r["metric_before_cut"] for r in mine
                       if r.get("metric_after_cut") is not None and r.get("metric_before_cut") is not None]
                flops = [r["train_flops"] / full_flops[r["seed"]] for r in mine if r["seed"] in full_flops]
                out.append({"rule": rule, "cut": cut, "source": spec, "vs_full": paired(runs, f"{rule}@{cut:g}", "full"),
                            "damage": float(np.mean(dmg)) if dmg else None,
                            "flops_ratio": float(np.mean(flops)) if flops else None})
    return out


def _plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, rule in enumerate(r for r in _RULES if any(x["rule"] == r for x in table)):
        pts = sorted((x["cut"], *x["vs_full"][:3]) for x in table if x["rule"] == rule)
        c, m, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
        ax.errorbar(c, m, yerr=[m - lo, hi - m], marker="o", capsize=3, color=f"C{k}", label=rule)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="cut point (fraction of training)", ylabel="val bpb - full state (paired, 95 %)",
           title="A quarter of the state, cut at different points")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="+", help="result files; files joined by '+' share one full arm")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    table = rows(args.groups)
    print("| rule | cut | vs full (paired, 95 %) | n | cut damage | train FLOPs / full | source |\n|---|---|---|---|---|---|---|")
    for r in table:
        m, lo, hi, n = r["vs_full"]
        dmg = "-" if r["damage"] is None else f"{r['damage']:+.4f}"
        fr = "-" if r["flops_ratio"] is None else f"{r['flops_ratio']:.3f}"
        print(f"| {r['rule']} | {r['cut']:g} | {m:+.4f} [{lo:+.4f}, {hi:+.4f}] | {n} | {dmg} | {fr} | {Path(r['source']).name} |")
    if args.plot is not None:
        _plot(table, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
