"""Tables and a plot from the compression benchmark's JSON (``benchmarks/results/compress.json``).

Pairing: within one token count, one seed fixes the data order of every compression arm (and
the random arm replays lyactl-distill's schedule of that seed), so each arm is compared with a
reference seed by seed, ``d_s = bpb(arm, s) - bpb(ref, s)``; the interval is the t-interval of
the mean difference (n - 1 degrees of freedom; with 3 seeds it is wide). The target of issue 15
is read against ``scratch-full``, the same final shape trained from scratch on the teacher's
tokens (one seed).

    python -m benchmarks.compress.report benchmarks/results/compress.json [--plot docs/img/compress.png]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["paired", "summary", "main"]

ARMS = ("lyactl-distill", "lyactl-distill-nosettled", "measured-distill", "measured3-distill", "lyactl",
        "oneshot-distill", "oneshot-mix-distill", "oneshot-mix-distill-eqflops", "random", "scratch-same-tokens")


def paired(arms: list[dict[str, Any]], tokens: int, arm: str, ref: str) -> dict[str, float]:
    """Mean, 95 % t-interval and n of ``bpb(arm) - bpb(ref)`` over the seeds both have at ``tokens``."""
    by = {(a["arm"], a["seed"]): a["val_bpb"] for a in arms if a.get("paired_tokens", a["tokens"]) == tokens}
    d = np.array([by[(arm, s)] - by[(ref, s)] for (a, s) in by if a == arm and (ref, s) in by])
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size) if d.size >= 2 else math.nan
    mean = float(d.mean()) if d.size else math.nan
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(d.size)}


def summary(doc: dict[str, Any], ref: str = "lyactl-distill") -> dict[str, Any]:
    """Per token count: each arm's mean bpb, FLOPs ratio, training FLOPs; paired differences
    ``ref - arm`` (key ``"<ref>_minus_this"``, ``-`` read ``_``; default lyactl-distill); distance to scratch-full and the compute ratio to it (None when the
    run has no scratch-full arm, e.g. one made with ``--arms``)."""
    arms = doc["arms"]
    full = next((a for a in arms if a["arm"] == "scratch-full"), None)
    out: dict[str, Any] = {"teacher_bpb": next(a["val_bpb"] for a in arms if a["arm"] == "teacher"),
                           "scratch_full_bpb": full and full["val_bpb"], "scratch_full_train_flops": full and full["train_flops"],
                           "by_tokens": {}}
    for n in sorted({a.get("paired_tokens", a["tokens"]) for a in arms if a["arm"] in ARMS}):
        row: dict[str, Any] = {}
        for arm in ARMS:
            rs = [a for a in arms if a["arm"] == arm and a.get("paired_tokens", a["tokens"]) == n]
            if not rs:
                continue
            certs: dict[str, int] = {}
            for r in rs:
                for k, v in r["certificates"].items():
                    certs[k] = certs.get(k, 0) + v
            bpb, flops = float(np.mean([r["val_bpb"] for r in rs])), float(np.mean([r["train_flops"] for r in rs]))
            row[arm] = {"bpb_mean": bpb, "n": len(rs), "flops_ratio": [round(r["flops_per_token_ratio"], 4) for r in rs],
                        "train_flops_over_scratch_full": full and flops / full["train_flops"],
                        "minus_scratch_full": full and bpb - full["val_bpb"], "certificates": certs}
            if arm != ref:
                row[arm][f"{ref.replace('-', '_')}_minus_this"] = paired(arms, n, ref, arm)
        out["by_tokens"][str(n)] = row
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, arm in enumerate(ARMS):
        pts = [(a["tokens"] / 1e6, a["val_bpb"]) for a in doc["arms"] if a["arm"] == arm]
        ax.scatter([p[0] * (1 + 0.03 * (i - 2)) for p in pts], [p[1] for p in pts], label=arm, s=18)
    for arm, style in (("teacher", "--"), ("scratch-full", ":")):
        a = next((a for a in doc["arms"] if a["arm"] == arm), None)
        if a is None:
            continue
        ax.axhline(a["val_bpb"], ls=style, c="k", lw=1, label=f"{arm} ({a['tokens'] / 1e6:.0f} M tokens)")
    ax.set_xscale("log")
    ax.set_xlabel("continued-training tokens (M)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"compression to <= {doc.get('target', 0.5)} of the FLOPs/token ({doc['gpu']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--ref", choices=ARMS, default="lyactl-distill", help="the arm every other is paired with")
    a = ap.parse_args(argv)
    doc = json.loads(a.results.read_text())
    print(json.dumps(summary(doc, a.ref), indent=1))
    if a.plot is not None:
        plot(doc, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
