"""Tables and a plot from the SSM benchmark's JSON (``benchmarks/results/ssm_<task>*.json``).

Paired comparisons: one seed fixes the initialisation and the data order in every arm, so
each arm is compared with a reference arm seed by seed (``lyactl`` and ``random`` at the same
cut: records carrying ``cut_frac`` are labelled ``arm@cut``), ``d_s = m(arm, s) - m(ref, s)``, and
the interval is the t-interval of the mean difference over seeds (n - 1 degrees of freedom;
with 3 seeds it is wide: say so). Training FLOPs and wall-clock are ratios to the full-state
arm of the same seed. Certificates: measured H-infinity error against the bound, per layer.
"Cut damage": the metric just after the cut minus just before (``--probe-cut``), before retraining.

    python -m benchmarks.ssm.report benchmarks/results/ssm_lm.json [--plot docs/img/ssm_lm.png]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["paired", "summary", "table", "main"]


def _metric(run: dict[str, Any]) -> float:
    return float(run["val_bpb"] if "val_bpb" in run else run["accuracy"])


def _label(run: dict[str, Any]) -> str:
    """``arm``, ``frontier-<states>``, or ``arm@<cut_frac>`` for records that carry their cut."""
    if run["arm"] == "frontier":
        return f"frontier-{run['state_final']}"
    return run["arm"] if run.get("cut_frac") is None else f"{run['arm']}@{run['cut_frac']:g}"


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    """:func:`_label` of each run, qualified ``arm@cut/keep<k>`` where the pooled runs cut one
    arm at one point to more than one kept share (files of different ``--keep`` pooled together
    would otherwise be paired as one arm)."""
    base = [_label(r) for r in runs]
    keeps: dict[str, set] = {}
    for b, r in zip(base, runs):
        if "@" in b:
            keeps.setdefault(b, set()).add(r.get("keep"))
    return [f"{b}/keep{'?' if r.get('keep') is None else format(r['keep'], 'g')}"
            if "@" in b and len(keeps[b]) > 1 else b for b, r in zip(base, runs)]


def _same_cut(label: str, arm: str) -> str:
    """The label of ``arm`` cut where ``label`` was (``random@0.75`` for ``lyactl@0.75``)."""
    return arm + label[label.index("@"):] if "@" in label else arm


def _damage(runs: list[dict[str, Any]]) -> float | None:
    """Mean of ``metric_after_cut - metric_before_cut`` (``--probe-cut`` records), else None."""
    d = [r["metric_after_cut"] - r["metric_before_cut"] for r in runs
         if r.get("metric_after_cut") is not None and r.get("metric_before_cut") is not None]
    return float(np.mean(d)) if d else None


def paired(runs: list[dict[str, Any]], arm: str, ref: str) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of ``metric(arm) - metric(ref)`` over the seeds both have (95 %).
    Two records of one label and seed (the same arm from two calls, pooled) cannot be paired
    unambiguously: :class:`ValueError` names them."""
    by: dict[tuple[str, int], float] = {}
    for label, r in zip(_labels(runs), runs):
        if label in (arm, ref) and (label, r["seed"]) in by:
            raise ValueError(f"runs: two records of {label!r}, seed {r['seed']}: pool files with distinct seeds")
        by[(label, r["seed"])] = _metric(r)
    d = np.array([by[(arm, s)] - by[(ref, s)] for (a, s) in by if a == arm and (ref, s) in by])
    if d.size < 2:
        return (float(d.mean()) if d.size else math.nan), math.nan, math.nan, int(d.size)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), int(d.size)


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: metric mean and per seed, ratios to full, paired differences."""
    full = {r["seed"]: r for r in runs if r["arm"] == "full"}
    rows = []
    labels = _labels(runs)
    for label in dict.fromkeys(labels):
        mine = [r for lab, r in zip(labels, runs) if lab == label]
        ratio = lambda key: [r[key] / full[r["seed"]][key] for r in mine if r["seed"] in full]  # noqa: E731
        certs = [c for r in mine for c in r.get("certificates") or []]
        rows.append({
            "arm": label, "seeds": [r["seed"] for r in mine], "metric": [_metric(r) for r in mine],
            "state_final": mine[0]["state_final"], "flops_ratio": _mean(ratio("train_flops")),
            "wall_ratio": _mean(ratio("wall_s")), "vs_full": paired(runs, label, "full"),
            "vs_lyactl": paired(runs, label, _same_cut(label, "lyactl")),
            "vs_random": paired(runs, label, _same_cut(label, "random")),
            "vs_small": paired(runs, label, "small-scratch"), "cut_damage": _damage(mine),
            "max_error_over_bound": max((c["error"] / c["bound"] for c in certs if c.get("bound")), default=None),
            "median_error": float(np.median([c["error"] for c in certs])) if certs else None,
            "median_bound": float(np.median([c["bound"] for c in certs])) if certs else None})
    return rows


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _pm(t: tuple[float, float, float, int]) -> str:
    mean, lo, hi, n = t
    if n == 0 or math.isnan(mean):
        return "-"
    return f"{mean:+.4f}" if math.isnan(lo) else f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def table(rows: list[dict[str, Any]], metric: str = "val bpb") -> str:
    """A Markdown table of :func:`summary` (``metric``: the per-seed column's name)."""
    head = (f"| arm | states (total) | {metric} per seed | vs full (paired, 95 %) | vs lyactl | vs random "
            "| vs small-scratch | cut damage | train FLOPs / full | wall / full | error / bound (median) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    out = []
    for r in rows:
        cert = "-" if r["median_bound"] is None else f"{r['median_error']:.2f} / {r['median_bound']:.0f}"
        fr = "-" if r["flops_ratio"] is None else f"{r['flops_ratio']:.3f}"
        wr = "-" if r["wall_ratio"] is None else f"{r['wall_ratio']:.2f}"
        dmg = "-" if r["cut_damage"] is None else f"{r['cut_damage']:+.4f}"
        out.append(f"| {r['arm']} | {r['state_final']} | {' / '.join(f'{m:.4f}' for m in r['metric'])} | "
                   f"{_pm(r['vs_full'])} | {_pm(r['vs_lyactl'])} | {_pm(r['vs_random'])} | {_pm(r['vs_small'])} | "
                   f"{dmg} | {fr} | {wr} | {cert} |")
    return head + "\n".join(out) + "\n"


def plot(rows: list[dict[str, Any]], runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Validation metric against training FLOPs (ratio to full), each seed a dot, the mean a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = {r["seed"]: r["train_flops"] for r in runs if r["arm"] == "full"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, r in enumerate(rows):
        mine = [x for lab, x in zip(_labels(runs), runs) if lab == r["arm"] and x["seed"] in full]
        xs = [x["train_flops"] / full[x["seed"]] for x in mine]
        ys = [_metric(x) for x in mine]
        color = f"C{k % 10}"
        ax.scatter(xs, ys, s=12, color=color, alpha=0.5)
        ax.scatter([np.mean(xs)], [np.mean(ys)], s=60, color=color, marker="D", label=r["arm"])
    ax.set(xlabel="training FLOPs / full-state arm", ylabel="validation bits per byte", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="ssm_<task>*.json files (their runs are pooled per arm label)")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = [r for f in args.results for r in json.loads(f.read_text())["arms"]]
    try:
        rows = summary(runs)
    except ValueError as exc:  # the same arm and seed in two files: say which, do not pick one
        ap.error(str(exc))
    print(table(rows, "val bpb" if runs and "val_bpb" in runs[0] else "accuracy"))
    if args.plot is not None:
        plot(rows, runs, args.plot, " + ".join(f.stem for f in args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
