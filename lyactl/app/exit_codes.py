"""The exit codes of every ``lyactl`` subcommand, defined once.

0 success, or the verdict holds; 1 the verdict fails, or a certificate does not re-verify;
2 bad input (a user error: one line on stderr naming the argument); 3 the verdict is unknown;
130 interrupted. Anything else is an internal error.
"""

from __future__ import annotations

from lyactl.verdict import Verdict

__all__ = ["BAD_INPUT", "FAILS", "INTERRUPTED", "OK", "UNKNOWN", "of_verdict"]

OK = 0
FAILS = 1
BAD_INPUT = 2
UNKNOWN = 3
INTERRUPTED = 130


def of_verdict(verdict: Verdict) -> int:
    """The exit code of a verdict: 0 holds, 1 fails, 3 unknown."""
    return {Verdict.HOLDS: OK, Verdict.FAILS: FAILS, Verdict.UNKNOWN: UNKNOWN}[verdict]
