"""The exit codes of every ``lyactl`` subcommand, defined once.

0 success, or the verdict holds; 1 the verdict fails, a certificate does not re-verify, or a
run folder is damaged (a file missing, emptied, truncated or altered); 2 bad input (a user
error: one line on stderr naming the argument); 3 the verdict is unknown; 70 an internal
error (a bug in lyactl: one line and where to report it); 130 interrupted.
"""

from __future__ import annotations

from lyactl.verdict import Verdict

__all__ = ["BAD_INPUT", "FAILS", "INTERNAL", "INTERRUPTED", "OK", "UNKNOWN", "EPILOG", "of_verdict"]

OK = 0
FAILS = 1
BAD_INPUT = 2
UNKNOWN = 3
INTERNAL = 70  # EX_SOFTWARE of BSD's sysexits.h
INTERRUPTED = 130

EPILOG = ("exit codes: 0 success / the verdict holds; 1 the verdict fails, a certificate does not "
          "re-verify or a run folder is damaged; 2 bad input (one line naming the argument); "
          "3 the verdict is unknown; 70 internal error (a bug: please report it); 130 interrupted")
"""One line for every subcommand's ``--help`` (``epilog=``)."""


def of_verdict(verdict: Verdict) -> int:
    """The exit code of a verdict: 0 holds, 1 fails, 3 unknown."""
    return {Verdict.HOLDS: OK, Verdict.FAILS: FAILS, Verdict.UNKNOWN: UNKNOWN}[verdict]
