"""Render a pretraining results file as a markdown table and a bits-per-byte-vs-FLOPs plot.

    python benchmarks/results_doc.py benchmarks/results/pretrain_h200.json \\
        --plot docs/img/pretrain_h200.png > /tmp/table.md

The table has one row per arm run; the plot shows the dense frontier (every "frontier" and
"dense" run, by token budget) and every other arm as a labelled point.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = ["table", "paired_table", "source_table", "plot", "gap_plot", "main"]

_COLS = ("arm", "seed", "model", "final", "tokens", "train_flops", "wall_s", "compile_s", "val_bpb", "endings_acc_norm",
         "lambada_acc", "hellaswag_acc_norm", "mmlu_acc", "n_events", "peak_mem_gib")


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key == "model":
        return f"d{v['d_model']} L{v['n_layer']} H{v['n_head']} M{v['mlp_hidden']}"
    if key == "final":  # blocks, residual width, heads and MLP width summed over blocks
        shapes, d = v
        return f"L{len(shapes)} d{d} H{sum(s[0] for s in shapes)} M{sum(s[2] for s in shapes)}"
    if key == "train_flops":
        return f"{v:.3g}"
    if key == "tokens":
        return f"{v / 1e6:.1f} M"
    if key == "peak_mem_gib":
        return " / ".join(f"{m:.1f}" for _, m in v) if isinstance(v, list) else f"{v:.1f}"
    if key.endswith("_s"):
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.4f}" if v < 10 else f"{v:.1f}"
    return str(v)


def table(res: dict) -> str:
    """Markdown table of every arm run, sorted by arm then seed; ``model`` is the starting model,
    ``final`` the model at the end (blocks, width, heads and MLP width summed over blocks)."""
    rows = sorted(res["arms"], key=lambda a: (a["arm"] != "dense", a["arm"] != "lyactl", a["arm"], a.get("tokens") or 0,
                                               a["train_flops"], a["seed"]))
    out = ["| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    for a in rows:
        final = (a["final_shapes"], a["final_d"]) if a.get("final_shapes") and a.get("final_d") else None
        cells = [_fmt(k, final if k == "final" else a.get(k)) for k in _COLS]
        if a.get("caveat"):
            cells[0] += " (*)"
        if a.get("gpu_shared_by", 1) > 1:
            cells[_COLS.index("wall_s")] += " †"
        out.append("| " + " | ".join(cells) + " |")
    notes = [f"(*) {a['id']}: {a['caveat']}." for a in rows if a.get("caveat")]
    gone = [f"* {w['id']} (val_bpb {_fmt('val_bpb', w.get('val_bpb'))}): {w['reason']}." for w in res.get("withdrawn", [])]
    if any(a.get("gpu_shared_by", 1) > 1 for a in rows):
        notes.append("† wall-clock measured with other jobs on the same GPU (not a training time; left out of "
                     "every wall-clock ratio).")
    if notes:
        out += [""] + notes
    if gone:
        out += ["", "Withdrawn records (kept in the job archive, left out of every table and test):", ""] + gone
    return "\n".join(out)


_TASKS = (("endings", "acc_norm"), ("lambada", "acc"), ("hellaswag", "acc_norm"), ("mmlu5", "acc"))


def paired_table(res: dict, key: str = "paired") -> str:
    """Each run against dense (``key="paired"``) or lyactl (``"paired_vs_lyactl"``) on its
    seed: bits-per-byte difference with its paired bootstrap interval, accuracy differences
    with the exact McNemar p-value."""
    out = ["| run | vs | val bpb diff [95 % CI] | endings acc_norm | LAMBADA acc | HellaSwag acc_norm | MMLU 5-shot acc |",
           "|---|---|---|---|---|---|---|"]
    for p in sorted(res.get(key, []), key=lambda p: p["id"]):
        b = p["tests"]["bpb"]["bpb"]
        cells = [p["id"], p["vs"], f"{b['diff']:+.4f} [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]"]
        for task, metric in _TASKS:
            t = p["tests"].get(task, {}).get(metric)
            cells.append("-" if t is None else f"{t['diff']:+.4f} (p={t['p_mcnemar']:.2f})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def source_table(res: dict) -> str:
    """Validation bits per byte per source, the mean over each arm's seeds (frontier left out)."""
    arms = [a for a in res["arms"] if a["arm"] != "frontier" and a.get("val_bpb_by_source")]
    srcs = sorted({k for a in arms for k in a["val_bpb_by_source"]})
    out = ["| arm (seeds) | " + " | ".join(srcs) + " |", "|" + "---|" * (len(srcs) + 1)]
    for arm in sorted({a["arm"] for a in arms}, key=lambda x: (x != "dense", x != "lyactl", x)):
        runs = [a for a in arms if a["arm"] == arm]
        mean = [sum(a["val_bpb_by_source"][k] for a in runs) / len(runs) for k in srcs]
        out.append(f"| {arm} ({len(runs)}) | " + " | ".join(f"{m:.4f}" for m in mean) + " |")
    return "\n".join(out)


def _save(fig, ax, path: Path) -> None:
    """Grid, legend, tight layout; write ``path`` (PNG, 120 dpi) and close the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(res: dict, path: Path) -> None:
    """Validation bits per byte against training FLOPs (log x), frontier lines per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    dense_like = [a for a in res["arms"] if a["arm"] in ("frontier", "dense") and a.get("val_bpb")]
    for tok in sorted({a["tokens"] for a in dense_like}):
        by_size: dict[float, list[float]] = {}
        for a in dense_like:
            if a["tokens"] == tok:  # seeds of one size: plot their mean
                by_size.setdefault(a["train_flops"], []).append(a["val_bpb"])
        pts = sorted((f, sum(v) / len(v)) for f, v in by_size.items())
        ax.plot(*zip(*pts), "o-", color="0.5" if tok < max(a["tokens"] for a in dense_like) else "k",
                label=f"dense frontier, {tok / 1e6:.0f} M tokens", ms=4)
    markers = iter("s^vD<>ph*X")
    for arm in sorted({a["arm"] for a in res["arms"]} - {"frontier", "dense"}):
        pts = [(a["train_flops"], a["val_bpb"]) for a in res["arms"] if a["arm"] == arm and a.get("val_bpb")]
        if pts:
            ax.plot(*zip(*pts), next(markers, "o"), ls="none", ms=7, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"{res['name']} ({res.get('gpu', '')})")
    _save(fig, ax, path)


def gap_plot(res: dict, path: Path, seed: int = 0, smooth: int = 5) -> None:
    """Training loss minus dense's at the same step (same batches: paired data order), a moving
    mean over ``smooth`` logged points, for every arm of ``seed`` but dense and the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = {a["arm"]: a for a in res["arms"] if a["seed"] == seed and a.get("losses")}
    ref = dict((int(s), v) for s, v in runs["dense"]["losses"])
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for arm, a in sorted(runs.items()):
        if arm in ("dense", "frontier"):
            continue
        pts = [(int(s), v - ref[int(s)]) for s, v in a["losses"] if int(s) in ref and int(s) > 0]
        x, y = np.array(pts).T
        k = np.ones(smooth) / smooth
        ax.plot(x[smooth - 1:], np.convolve(y, k, mode="valid"), label=arm)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss - dense's (nats, mean of {smooth} logged steps)")
    ax.set_title(f"{res['name']}: loss gap to dense, seed {seed}")
    _save(fig, ax, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--gap-plot", type=Path, default=None, help="training-loss gap to dense over steps (seed 0)")
    args = ap.parse_args(argv)
    res = json.loads(args.results.read_text())
    print(table(res), paired_table(res), paired_table(res, "paired_vs_lyactl"), source_table(res), sep="\n\n")
    if args.plot:
        plot(res, args.plot)
    if args.gap_plot:
        gap_plot(res, args.gap_plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
