"""``lyactl report RUN_DIR``: check a run folder, re-plot it and re-verify every certificate offline.

Exit codes (the CLI's convention): 0 the folder is intact and every certificate re-verifies;
1 a file is missing, emptied, truncated or altered (against the run's ``manifest.json``), the
summary's events have no decisions, or a certificate does not re-verify; 2 RUN_DIR is not a
run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lyactl.app import exit_codes
from lyactl.errors import DataFileError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="check a run folder, re-plot it and re-verify every certificate offline",
        description="Read RUN_DIR (written by lyactl demo, train or compress), check every file against the "
                    "run's manifest.json, redraw its plots, print the table and re-verify every certificate "
                    "of its decision log with lyactl alone. Exit 0 if the folder is intact and all verify, "
                    "1 if a file is missing, emptied, truncated or altered, events have no decisions or a "
                    "certificate fails, 2 if RUN_DIR is not a run folder.",
        epilog=exit_codes.EPILOG)
    p.add_argument("run_dir", type=Path, help="the run folder")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lyactl.app.runreport import check_run, format_compress, format_table, is_compress, load_run, plot_run, reverify_run

    problems = check_run(args.run_dir)  # DataFileError (exit 2) if RUN_DIR is no run folder
    for p in problems:
        print(f"FAIL {args.run_dir / p.file}: {p.problem}")
    try:
        run = load_run(args.run_dir)
        report = reverify_run(args.run_dir)
    except Exception as exc:  # a damaged folder may fail anywhere; an intact one must not (a bug: re-raised)
        if not (problems or isinstance(exc, DataFileError)):
            raise
        print(f"FAIL {args.run_dir}: its files cannot be read back ({type(exc).__name__}: {exc})".splitlines()[0])
        return exit_codes.FAILS
    if not problems and is_compress(run):  # lyactl compress: no training-curve plots, its own summary
        print(format_compress(run))
    elif not problems:  # the plots are redrawn from intact files only
        plots = plot_run(args.run_dir, run)
        print(format_table(run))
        print("plots: " + ", ".join(str(p) for p in plots))
    for line, group, monitor, problem in report.failures:
        print(f"FAIL {args.run_dir / 'decisions.jsonl'}:{line} {group} [{monitor}]: {problem}")
    print(f"re-verified offline: {report.n_certificates} certificates of {report.n_decisions} decisions: "
          f"{'all verify' if report.ok else f'{len(report.failures)} FAIL'}")
    if problems:
        print(f"run folder {args.run_dir}: {len(problems)} damaged file(s); see the FAIL lines above")
    return exit_codes.OK if report.ok and not problems else exit_codes.FAILS
