"""Does the settled-group freeze certificate (:mod:`lyactl.control.settled`) fire in continued
training, and how far from its tolerance is each block? A diagnostic on the compression
benchmark's tiny preset (CPU, about a minute).

At every controller report it evaluates the settled monitor on every block of the
controller's window (not only where the controller would ask) and records, per block, the
benefit-rate mean and its upper bound ``u``, ``dL = max(u, 0) Lambda`` over ``tol`` (the
certificate holds below 1), and which blocks were frozen by then. Wraps the private training
loop of :mod:`lyactl_torch.compress` for the duration of the call only.

    PYTHONPATH=.:backends python -m benchmarks.studies.settled_margin [--tokens 80000] [--eps 1e-3]

Writes ``benchmarks/results/settled_margin_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.compress import run as bench
from lyactl.control.groups import GroupKind
from lyactl.control.settled import settled_monitor
from lyactl_torch import compress as C

__all__ = ["rows_of_report", "main"]

OUT = Path(__file__).resolve().parents[1] / "results" / "settled_margin_cpu.json"


def rows_of_report(ctl, total_steps: int, eps: float) -> dict | None:
    """The settled certificate on every block of ``ctl``'s window now (None before it is full)."""
    blocks = np.flatnonzero([g.kind is GroupKind.LAYER for g in ctl.groups])
    w = ctl.window
    if not w.full or blocks.size == 0:
        return None
    res = settled_monitor(total_steps, int(blocks.size), eps).evaluate(w.columns(blocks))
    n = res.numbers
    ratio = n["dL"] / n["tol"]
    return {"step": int(w.scalar("step")[-1]), "frac": float(w.scalar("step")[-1]) / total_steps,
            "tol": float(n["tol"]), "lam_rest": float(n["lam_rest"]),
            "blocks": [ctl.groups[i].name for i in blocks],
            "b_mean": [float(x) for x in n["b_mean"]], "u": [float(x) for x in n["u"]],
            "ratio": [float(x) for x in ratio], "holds": [bool(x) for x in res.margin > 0],
            "frozen": [bool(ctl.status[i] == 1) for i in blocks]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=80000)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows: list[dict] = []
    train = C._train

    def traced(model, teacher, loop, opt, batches, config, dev, on_report, progress):
        ctl = loop.controller

        def hook(out) -> None:
            r = rows_of_report(ctl, config.steps, args.eps)
            if r is not None:
                rows.append(r)
            if on_report is not None:
                on_report(out)

        return train(model, teacher, loop, opt, batches, config, dev, hook, progress)

    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(C, "_train", traced):
        out = Path(tmp) / "c.json"
        bench.main(["--preset", "tiny", "--tokens", str(args.tokens), "--seeds", "1", "--arms", "lyactl-distill",
                    "--settled-eps", str(args.eps), "--out", str(out)])
        arms = json.loads(out.read_text())["arms"]
    rec = {"study": "settled_margin", "preset": "tiny", "tokens": args.tokens, "eps": args.eps,
           "arm": {k: v for k, v in arms[-1].items() if k not in ("losses",)}, "rows": rows}
    args.out.write_text(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    rec = main()
    for r in rec["rows"][::3]:
        print(r["step"], round(r["frac"], 2), "tol %.2e" % r["tol"], "ratio", [round(x, 2) for x in r["ratio"]],
              "frozen", sum(r["frozen"]))
    print(json.dumps(rec["arm"].get("certificates")), rec["arm"].get("training_flops_saving"))
