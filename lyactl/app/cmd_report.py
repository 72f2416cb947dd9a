"""``lyactl report RUN_DIR``: re-plot a run folder and re-verify every certificate offline."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="re-plot a run folder and re-verify every certificate offline",
        description="Read RUN_DIR (written by lyactl demo or lyactl train), redraw its plots, print the "
                    "table and re-verify every certificate of its decision log with lyactl alone. "
                    "Exit 0 if all verify, 1 if any fails, 2 if RUN_DIR is not a run folder.")
    p.add_argument("run_dir", type=Path, help="the run folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lyactl.app.runreport import format_table, load_run, plot_run, reverify_run

    run = load_run(args.run_dir)
    plots = plot_run(args.run_dir, run)
    report = reverify_run(args.run_dir)
    print(format_table(run))
    for line, group, monitor, problem in report.failures:
        print(f"FAIL {args.run_dir / 'decisions.jsonl'}:{line} {group} [{monitor}]: {problem}")
    print(f"re-verified offline: {report.n_certificates} certificates of {report.n_decisions} decisions: "
          f"{'all verify' if report.ok else f'{len(report.failures)} FAIL'}")
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0 if report.ok else 1
