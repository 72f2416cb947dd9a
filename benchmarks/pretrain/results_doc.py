"""Render a pretraining results file as a markdown table and a bits-per-byte-vs-FLOPs plot.

    python -m benchmarks.pretrain.results_doc benchmarks/results/pretrain_h200.json \\
        --plot docs/img/pretrain_h200.png > /tmp/table.md

The table has one row per arm run; the plot shows the dense frontier (every "frontier" and
"dense" run, by token budget) and every other arm as a labelled point.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = ["table", "paired_table", "source_table", "pareto", "plot", "gap_plot", "main"]

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


def pareto(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower-left envelope of (cost, loss) points, by increasing cost: the points that no
    other point matches or beats on both (a point of equal cost and loss is kept once).
    A frontier drawn through every size would zig-zag where a size is dominated."""
    front: list[tuple[float, float]] = []
    for c, v in sorted(set(pts), key=lambda t: (t[0], t[1])):
        if not front or v < front[-1][1]:
            front.append((c, v))
    return front


def _dense_sizes(res: dict) -> dict[int, list[tuple[float, float]]]:
    """tokens -> [(train FLOPs, mean val bpb over seeds)] of the "dense" and "frontier" runs."""
    by_tok: dict[int, dict[float, list[float]]] = {}
    for a in res["arms"]:
        if a["arm"] in ("frontier", "dense") and a.get("val_bpb"):
            by_tok.setdefault(a["tokens"], {}).setdefault(a["train_flops"], []).append(a["val_bpb"])
    return {t: sorted((f, sum(v) / len(v)) for f, v in d.items()) for t, d in by_tok.items()}


def plot(res: dict, path: Path, zoom: float = 1.35) -> None:
    """Validation bits per byte against training FLOPs (log x): per token budget the dense
    frontier (the Pareto envelope of the dense sizes; dominated sizes hollow) and every other
    arm; the right panel zooms to within a factor ``zoom`` of lyactl's mean FLOPs."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    sizes = _dense_sizes(res)
    for ax in axes:
        for tok, pts in sorted(sizes.items()):
            color = "0.5" if tok < max(sizes) else "k"
            front = pareto(pts)
            ax.plot(*zip(*front), "o-", color=color, ms=4, label=f"dense frontier, {tok / 1e6:.0f} M tokens")
            if off := [q for q in pts if q not in front]:
                ax.plot(*zip(*off), "o", mfc="none", color=color, ms=5, label=f"dense, dominated ({tok / 1e6:.0f} M)")
        markers = iter("s^vD<>ph*XP")
        for arm in sorted({a["arm"] for a in res["arms"]} - {"frontier", "dense"}):
            pts = [(a["train_flops"], a["val_bpb"]) for a in res["arms"] if a["arm"] == arm and a.get("val_bpb")]
            if pts:
                ax.plot(*zip(*pts), next(markers, "o"), ls="none", ms=7, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("validation bits per byte")
    ly = [a for a in res["arms"] if a["arm"] == "lyactl" and a.get("val_bpb")]
    if ly:
        f0 = sum(a["train_flops"] for a in ly) / len(ly)
        axes[1].set_xlim(f0 / zoom, f0 * zoom)
        inside = [a["val_bpb"] for a in res["arms"] if f0 / zoom <= a["train_flops"] <= f0 * zoom and a.get("val_bpb")]
        top = max(a["val_bpb"] for a in ly) + 0.02  # arms far above lyactl stay on the left panel
        axes[1].set_ylim(min(inside) - 0.005, min(max(inside), top) + 0.005)
        ticks = [f0 / zoom * zoom ** (2 * k / 4) for k in range(5)]  # 5 log-spaced ticks
        axes[1].xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axes[1].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.2e}"))
        axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[1].set_title(f"near lyactl's compute (x{zoom:g})")
    axes[0].set_title(f"{res['name']} ({res.get('gpu', '')})")
    axes[1].grid(alpha=0.3)
    _save(fig, axes[0], path)


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
    arms = sorted(set(runs) - {"dense", "frontier"})
    colors = plt.cm.tab20(np.linspace(0, 1, 20))[::2].tolist() + plt.cm.tab20(np.linspace(0, 1, 20))[1::2].tolist()
    for arm, color in zip(arms, colors):  # more arms than the default cycle's 10 colours
        a = runs[arm]
        pts = [(int(s), v - ref[int(s)]) for s, v in a["losses"] if int(s) in ref and int(s) > 0]
        x, y = np.array(pts).T
        w = min(smooth, len(y))  # a short run (fewer logged points than the window): a shorter window
        ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), label=arm, color=color,
                lw=2.2 if arm == "lyactl" else 1.2)
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
