"""Command-line interface: ``lyactl <subcommand> ...`` (also ``python -m lyactl``).

Each subcommand lives in a module of its own with ``add_parser(sub)``, which registers its
arguments and sets ``handler`` (a function ``(args) -> int``). The core's subcommands are
listed in :data:`COMMANDS`; a backend adds its own (``demo``, ``train``, ``eval`` for torch)
through the entry-point group ``lyactl.commands`` (pyproject.toml), so no module of ``lyactl``
imports a backend. A subcommand that parses its own arguments sets ``run_argv`` instead of
``handler`` and receives the remaining command line.

Exit codes, one convention for every subcommand: 0 success / the verdict holds, 1 a verdict
that fails or a certificate that does not re-verify, 2 bad input (one line on stderr naming
the argument, no traceback), 3 the verdict is unknown, 70 an internal error (a bug: one line
with a bug-report hint, never a traceback; ``LYACTL_TRACEBACK=1`` re-raises), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points
from types import ModuleType

from lyactl._version import __version__
from lyactl.app import cmd_rate, cmd_reduce, cmd_report, cmd_verify, exit_codes
from lyactl.errors import LyactlError

__all__ = ["COMMANDS", "main", "build_parser"]

# The core's subcommands, each a module with add_parser(sub) that sets handler=run.
COMMANDS: tuple[ModuleType, ...] = (cmd_verify, cmd_report, cmd_rate, cmd_reduce)
ENTRY_POINT_GROUP = "lyactl.commands"


class _UsageError(Exception):
    """Raised by the parser instead of exiting, so main() controls the message and code."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = _Parser(prog="lyactl", description="Lyapunov-certified pruning and freezing.",
                     epilog=exit_codes.EPILOG)
    parser.add_argument("--version", action="version", version=f"lyactl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    for entry in entry_points(group=ENTRY_POINT_GROUP):  # backends' subcommands (no import of torch)
        entry.load()(sub)
    for p in sub.choices.values():  # one exit-code convention, stated in every subcommand's --help
        p.epilog = p.epilog or exit_codes.EPILOG
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, rest = build_parser().parse_known_args(argv)
        if getattr(args, "run_argv", None) is not None:  # a subcommand with its own parser
            return int(args.run_argv(rest))
        if rest:
            raise _UsageError(f"unrecognized arguments: {' '.join(rest)}")
        return int(args.handler(args))
    except _UsageError as exc:
        print(f"lyactl: error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except (LyactlError, OSError) as exc:
        print(f"lyactl: error: {exc}".splitlines()[0], file=sys.stderr)
        return exit_codes.BAD_INPUT
    except ImportError as exc:
        print(f"lyactl: error: {exc} (install the extra: pip install -e '.[torch]')".splitlines()[0], file=sys.stderr)
        return exit_codes.BAD_INPUT
    except KeyboardInterrupt:
        print("lyactl: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except Exception as exc:  # a bug, not a user error: one line, never a traceback (LYACTL_TRACEBACK=1 shows it)
        if os.environ.get("LYACTL_TRACEBACK"):
            raise
        where = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        print(f"lyactl: internal error: {where} (a bug in lyactl {__version__}: please report it with the command "
              f"line; LYACTL_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return exit_codes.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
