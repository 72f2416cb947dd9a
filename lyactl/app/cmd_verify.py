"""``lyactl verify``: stability of an optimizer model on a quadratic mode, or of x+ = A x.

Exit codes (the CLI's convention, :mod:`lyactl.app.exit_codes`): 0 the verdict holds, 1 it
fails, 3 unknown, 2 bad input (a missing option, a value out of range, or values whose update
matrix overflows, e.g. ``--lr 1e308 --curvature 1e308``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from lyactl.app import exit_codes
from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams, adam, gd, heavy_ball, nesterov
from lyactl.errors import DataFileError, InvalidArgumentError, LyactlError, bad_arg

__all__ = ["add_parser", "run"]

_OPTIMIZERS: dict[str, Callable[[], OptimizerModel]] = {
    "gd": gd, "heavy-ball": heavy_ball, "nesterov": nesterov, "adam": adam,
}  # the CLI's own option strings -> model constructors (not an extension point)
_BOUNDARY_TOL = 1e-9


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify stability of an optimizer model or a linear system x+ = A x",
                       description="The verdict (holds, fails, unknown) on the Schur stability of an optimizer "
                                   "model on one quadratic mode of curvature lam, or of x+ = A x for a matrix "
                                   "read from a file.", epilog=exit_codes.EPILOG)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--optimizer", choices=sorted(_OPTIMIZERS), help="optimizer model on a quadratic mode")
    what.add_argument("--matrix", type=Path, metavar="FILE",
                      help="path of a file holding A: a JSON list of lists (any other suffix) or a NumPy .npy "
                           "array (inline JSON is not read)")
    p.add_argument("--lr", type=float, help="step size eta (>= 0)")
    p.add_argument("--momentum", type=float, default=None, help="momentum beta (required for heavy-ball, nesterov)")
    p.add_argument("--beta1", type=float, default=None, help="Adam's beta1 (default 0.9)")
    p.add_argument("--curvature", type=float, help="curvature lam of the mode (after preconditioning for adam)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="coupled L2 (gd, heavy-ball, nesterov) or decoupled (adam = AdamW)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.matrix is not None:
        return _verify_matrix(args)
    for name in ("lr", "curvature"):
        value = getattr(args, name)
        if value is None:
            raise InvalidArgumentError(f"--{name}: required with --optimizer")
        if not math.isfinite(value):
            raise InvalidArgumentError(f"--{name}: expected a finite number, found {value}")
    if args.optimizer == "adam":
        if args.momentum is not None:
            raise InvalidArgumentError("--momentum: not used by adam; give --beta1")
        beta = 0.9 if args.beta1 is None else args.beta1
    else:
        if args.beta1 is not None:
            raise InvalidArgumentError(f"--beta1: only for adam, not {args.optimizer}")
        if args.optimizer == "gd" and args.momentum not in (None, 0.0):
            raise InvalidArgumentError("--momentum: gd has no momentum; use heavy-ball or nesterov")
        if args.optimizer != "gd" and args.momentum is None:
            raise InvalidArgumentError(bad_arg("--momentum", f"a number in [0, 1) for {args.optimizer}", None))
        beta = 0.0 if args.momentum is None else args.momentum
    p = _params(args.lr, beta, args.weight_decay)
    from lyactl.analysis.regions import derive_region

    model = _OPTIMIZERS[args.optimizer]()
    _check_finite_matrix(model, args.curvature, p)
    region = derive_region(model)
    ev = region.check(model, args.curvature, p, _BOUNDARY_TOL)
    out = {"verdict": ev.verdict.value, "region": region.text,
           "region_at_point": _pretty(region.at(p.beta, p.eta * p.wd)), "margin": _num(ev.margin),
           "spectral_radius": _num(ev.details["spectral_radius"]), "optimizer": args.optimizer,
           "lr": p.eta, "momentum" if args.optimizer != "adam" else "beta1": p.beta,
           "curvature": args.curvature, "weight_decay": p.wd, "eta_lam": p.eta * args.curvature,
           "method": ev.method}
    _print(out, args.json)
    return exit_codes.of_verdict(ev.verdict)


def _params(eta: float, beta: float, wd: float) -> OptimizerParams:
    names = {"eta": "--lr", "beta": "--momentum/--beta1", "wd": "--weight-decay"}
    try:
        return OptimizerParams(eta, beta, wd)
    except LyactlError as exc:
        field = str(exc).split(":", 1)[0]
        raise InvalidArgumentError(f"{names.get(field, field)}: {str(exc).split(':', 1)[1].strip()}") from exc


def _check_finite_matrix(model: OptimizerModel, lam: float, p: OptimizerParams) -> None:
    """Bad input when ``A(lam)`` overflows (e.g. ``eta*lam = 1e308 * 1e308``): no verdict is
    given on a matrix holding inf or NaN."""
    with np.errstate(all="ignore"):
        A = np.asarray(model.matrix(lam, p), dtype=float)
        products = (p.eta * lam, p.eta * p.wd)
    if not (np.isfinite(A).all() and all(math.isfinite(x) for x in products)):
        raise InvalidArgumentError(bad_arg("--lr, --curvature, --weight-decay",
                                           "values whose products eta*lam and eta*wd are finite floats",
                                           f"lr={p.eta:g}, curvature={lam:g}, weight decay={p.wd:g}: the update "
                                           "matrix overflows"))


def _verify_matrix(args: argparse.Namespace) -> int:
    from lyactl.analysis.lyapunov import verify_dlyap

    extra = [n for n in ("lr", "curvature", "momentum", "beta1") if getattr(args, n) is not None]
    if extra:
        raise InvalidArgumentError(f"--{extra[0]}: not used with --matrix")
    A = _load_matrix(args.matrix)
    ev = verify_dlyap(A, tol=_BOUNDARY_TOL)
    out = {"verdict": ev.verdict.value, "region": "rho(A) < 1  <=>  A^T P A - P = -I has P > 0",
           "margin": _num(ev.margin), "spectral_radius": _num(ev.details["spectral_radius"]),
           "n": int(A.shape[0]), "residual": _num(ev.residuals.get("lyapunov", math.nan)),
           "P_positive_definite": ev.details.get("P_positive_definite"), "matrix": str(args.matrix),
           "method": ev.method}
    _print(out, args.json)
    return exit_codes.of_verdict(ev.verdict)


def _load_matrix(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InvalidArgumentError(f"--matrix: expected an existing file, found {str(path)!r}")
    try:
        if path.suffix == ".npy":
            A = np.load(path, allow_pickle=False)
        else:
            A = np.array(json.loads(path.read_text()))
    except (ValueError, OSError) as exc:
        raise DataFileError(f"--matrix: expected a JSON list of lists or a .npy array in {path}: {exc}") from exc
    from lyactl.analysis.systems import as_square_matrix

    try:
        return as_square_matrix(A, "--matrix")
    except LyactlError as exc:
        raise InvalidArgumentError(str(exc)) from exc


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pretty(expr: object) -> str:
    from lyactl.analysis.regions import _pretty as pretty_rel

    return pretty_rel(expr)


def _print(out: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key}: {value}")
