"""``lyactl rate``: a linear convergence rate certified over every m-strongly convex, L-smooth f.

::

    lyactl rate --optimizer gd|heavy-ball|nesterov --lr A [--momentum B] --mu M --L L [--json]
    lyactl rate --system FILE.npz --mu M --L L [--json]      (arrays A (n,n), B (n,), C (n,))

Runs :func:`lyactl.analysis.rates.certify_rate` (Lyapunov/IQC SDP, bisection on rho; clarabel
through its native API, so the command never imports cvxpy). Exit
codes: 0 holds (a rate < 1 with a certificate that re-verifies in numpy), 3 unknown (no
certificate found), 1 fails (a quadratic of the class on which the iteration does not
converge) or a certificate that does not re-verify, 2 bad input (the message names the
argument). ``--json`` prints exactly one JSON object with at least ``verdict``, ``rate``
(null unless holds), ``method`` and ``certificate`` (``P``, the multipliers, ``lmi_max_eig``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lyactl.app import exit_codes
from lyactl.errors import DataFileError, InvalidArgumentError, NonFiniteError, bad_arg

__all__ = ["add_parser", "run"]

_OPTIMIZERS = ("gd", "heavy-ball", "nesterov")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``rate`` on the CLI's subparsers."""
    p = sub.add_parser(
        "rate", help="certify a convergence rate over all m-strongly convex, L-smooth functions",
        description="Certify a linear rate rho < 1 for an optimizer on every m-strongly convex function "
                    "with L-Lipschitz gradient, by a Lyapunov/IQC semidefinite program (sector and "
                    "weighted off-by-one multipliers; Lessard, Recht & Packard 2016). Needs the extra "
                    "'sdp' (clarabel). Exit 0 holds, 3 unknown, 1 fails, 2 bad input.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--optimizer", choices=_OPTIMIZERS, help="a built-in optimizer (PyTorch parametrisation)")
    what.add_argument("--system", type=Path, help=".npz with arrays A (n,n), B (n,), C (n,): "
                                                  "xi+ = A xi + B grad f(C xi)")
    p.add_argument("--lr", type=float, help="step size (> 0), with --optimizer")
    p.add_argument("--momentum", type=float, help="momentum in [0, 1) (heavy-ball, nesterov)")
    p.add_argument("--mu", type=float, required=True, help="strong convexity m (>= 0)")
    p.add_argument("--L", type=float, required=True, help="smoothness L (> 0, >= mu)")
    p.add_argument("--sector-only", action="store_true", help="sector IQC only (no off-by-one multiplier)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate, certify, print; returns the exit code (see module docstring)."""
    _check_class(args.mu, args.L)
    system, about = _system(args)
    try:
        from lyactl.analysis.rates import certify_rate, reverify

        result = certify_rate(system, args.mu, args.L, off_by_one=not args.sector_only)
    except ImportError as exc:  # the sdp extra is missing: one line, exit 2 (not main's torch hint)
        print(f"lyactl: error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    out = {**result.to_json(), **about, "mu": args.mu, "L": args.L}
    _print(out, args.json)
    if result.certificate is not None and not reverify(result.certificate):
        return exit_codes.FAILS
    return exit_codes.of_verdict(result.verdict)


def _check_class(mu: float, L: float) -> None:
    for flag, value in (("--mu", mu), ("--L", L)):
        if not math.isfinite(value):
            raise NonFiniteError(bad_arg(flag, "a finite number", value))
        if value < 0:
            raise InvalidArgumentError(bad_arg(flag, "a number >= 0", value))
    if not L > 0:
        raise InvalidArgumentError(bad_arg("--L", "a number > 0", L))
    if mu > L:
        raise InvalidArgumentError(bad_arg("--mu", f"mu <= L = {L}", mu))


def _system(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from lyactl.analysis.lure import LureSystem, gd_system, heavy_ball_system, nesterov_system

    if args.system is not None:
        for flag in ("lr", "momentum"):
            if getattr(args, flag) is not None:
                raise InvalidArgumentError(bad_arg(f"--{flag}", "nothing with --system", getattr(args, flag)))
        A, B, C = _load_npz(args.system)
        return LureSystem(A, B, C, args.system.stem), {"system": str(args.system)}
    lr, beta = _hyper(args)
    make = {"gd": lambda: gd_system(lr), "heavy-ball": lambda: heavy_ball_system(lr, beta),
            "nesterov": lambda: nesterov_system(lr, beta)}[args.optimizer]  # the CLI's own choices
    return make(), {"optimizer": args.optimizer, "lr": lr, "momentum": beta}


def _hyper(args: argparse.Namespace) -> tuple[float, float]:
    if args.lr is None:
        raise InvalidArgumentError(bad_arg("--lr", "a step size with --optimizer", None))
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise InvalidArgumentError(bad_arg("--lr", "a finite step size > 0", args.lr))
    if args.optimizer == "gd":
        if args.momentum not in (None, 0.0):
            raise InvalidArgumentError(bad_arg("--momentum", "nothing for gd (use heavy-ball or nesterov)",
                                               args.momentum))
        return args.lr, 0.0
    if args.momentum is None:
        raise InvalidArgumentError(bad_arg("--momentum", f"a momentum in [0, 1) for {args.optimizer}", None))
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise InvalidArgumentError(bad_arg("--momentum", "a momentum in [0, 1)", args.momentum))
    return args.lr, args.momentum


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataFileError(bad_arg("--system", "an existing .npz file", str(path)))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, AttributeError, zipfile.BadZipFile) as exc:
        raise DataFileError(bad_arg("--system", f"a readable .npz file ({exc})", str(path))) from exc
    if not all(k in arrays for k in "ABC"):
        raise DataFileError(bad_arg("--system", f"arrays A, B, C in {path}", sorted(arrays)))
    return arrays["A"], arrays["B"], arrays["C"]


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, allow_nan=False))
        return
    cert = out.get("certificate") or {}
    for key in ("verdict", "rate", "quadratic_rate", "worst_curvature", "method", "optimizer", "system", "lr",
                "momentum", "mu", "L"):
        if key in out:
            print(f"{key}: {out[key]}")
    for key in ("lmi_max_eig", "norm_constant", "multipliers", "P"):
        if key in cert:
            print(f"certificate.{key}: {cert[key]}")
