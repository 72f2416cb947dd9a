"""``lyactl reduce SYSTEM.npz --rank R``: certified balanced truncation of an LTI system.

``SYSTEM.npz`` holds arrays ``A`` ((N,) diagonal entries or (N, N), real or complex), ``B``
(N, H), ``C`` (P, N) and optionally ``D`` ((P, H), or (H,) elementwise). ``--real-output``
declares ``y = Re(C x) + D u``: the HSVs are then those of the 2N-state real realisation and
``--rank`` counts its (real) states; a diagonal ``A`` comes back in LRU form (one complex mode
per conjugate pair or real eigenvalue, see :func:`lyactl.analysis.balanced.lru_truncation`).

Prints the Hankel singular values, the rank, the certified bound ``2 * sum(hsv[rank:])`` and the
measured H-infinity error on a frequency grid (a lower bound of the true error); ``--json``
prints them as one JSON object with keys ``hsv``, ``rank``, ``bound``, ``error``,
``within_bound``, ``states_full``, ``states_kept``, ``modes_kept`` and ``real_output``.
``--out FILE.npz`` writes the reduced ``A, B, C`` (``D`` when given), ``T``, ``Tinv`` and the
certificate (``hsv``, ``rank``, ``bound``, ``error``).

Exit codes: 0 the measured error is within the bound; 1 it is not (the certificate does not
re-verify); 2 bad input (unreadable file, missing array, unstable or non-finite system,
mismatched shapes, bad rank), one line on stderr naming the argument.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from lyactl.analysis.balanced import Truncation, balanced_truncation, hinf_error, rank_for_energy
from lyactl.analysis.gramians import hankel_singular_values, is_diagonal, real_output_realisation
from lyactl.app import exit_codes
from lyactl.app.atomic import atomic_write
from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg

__all__ = ["add_parser", "run", "load_system"]

_REL_TOL = 1e-6  # rounding allowance on "error <= bound" (the sampled error is a lower bound)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``reduce`` on the top-level subparsers."""
    p = sub.add_parser("reduce", help="balanced truncation of an LTI system with its H-infinity certificate",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("system", type=Path, metavar="SYSTEM.npz", help="arrays A, B, C and optionally D")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--rank", type=int, help="states kept (real states with --real-output)")
    size.add_argument("--tol", type=float, help="energy tolerance: keep sum(hsv[:r]) >= (1 - tol) sum(hsv)")
    p.add_argument("--real-output", action="store_true", help="the output is Re(C x) + D u (LRU layers)")
    p.add_argument("--n-freq", type=int, default=2048, help="frequency grid size for the measured error")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.npz", help="write the reduced system")
    p.set_defaults(handler=run)


def load_system(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(A, B, C, D or None)`` from an ``.npz`` file; DataFileError names the file and the key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
    except FileNotFoundError as exc:
        raise DataFileError(bad_arg("SYSTEM.npz", "an existing .npz file", str(path))) from exc
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npz of numeric arrays ({type(exc).__name__}: {exc})") from exc
    if not isinstance(arrays, dict) or not arrays:
        raise DataFileError(f"{path}: expected an .npz archive with arrays A, B, C[, D], found no arrays")
    missing = [k for k in ("A", "B", "C") if k not in arrays]
    if missing:
        raise DataFileError(f"{path}: expected arrays A, B, C[, D], missing {', '.join(missing)} "
                            f"(found {sorted(arrays)})")
    return arrays["A"], arrays["B"], arrays["C"], arrays.get("D")


def _full_hsv(A: np.ndarray, B: np.ndarray, C: np.ndarray, real_output: bool) -> np.ndarray:
    if real_output and np.iscomplexobj(A) | np.iscomplexobj(B) | np.iscomplexobj(C):
        if is_diagonal(A):
            return hankel_singular_values(*real_output_realisation(A, B, C))
        return hankel_singular_values(np.block([[A.real, -A.imag], [A.imag, A.real]]),
                                      np.vstack([B.real, B.imag]), np.hstack([C.real, -C.imag]))
    return hankel_singular_values(A, B, C)


def _rank(args: argparse.Namespace, A, B, C) -> int:
    if args.rank is not None:
        return args.rank
    if not (args.tol is not None and 0.0 <= args.tol < 1.0):
        raise InvalidArgumentError(bad_arg("--tol", "a number in [0, 1)", args.tol))
    return rank_for_energy(_full_hsv(A, B, C, args.real_output), args.tol)


def run(args: argparse.Namespace) -> int:
    """Reduce, measure, print; exit 0 within the bound, 1 not, (2 bad input via main)."""
    if args.n_freq < 2:
        raise InvalidArgumentError(bad_arg("--n-freq", "an int >= 2", args.n_freq))
    A, B, C, D = load_system(args.system)
    t = balanced_truncation(A, B, C, D, rank=_rank(args, A, B, C), real_output=args.real_output)
    error = hinf_error((A, B, C, D), t, args.n_freq, real_output=args.real_output)
    within = bool(error <= t.bound * (1 + _REL_TOL) + _REL_TOL * 1e-3 * float(np.sum(t.hsv)))
    report = {"hsv": t.hsv.tolist(), "rank": t.rank, "bound": t.bound, "error": error, "within_bound": within,
              "states_full": int(t.hsv.shape[0]), "states_kept": t.rank, "modes_kept": int(np.shape(t.A)[0]),
              "real_output": t.real_output}
    if args.out is not None:
        _write(args.out, t, error)
    if args.json:
        print(json.dumps(report))
    else:
        print(_text(report, args.out))
    return exit_codes.OK if within else exit_codes.FAILS


def _write(path: Path, t: Truncation, error: float) -> None:
    arrays = {"A": t.A, "B": t.B, "C": t.C, "T": t.T, "Tinv": t.Tinv, "hsv": t.hsv,
              "rank": np.array(t.rank), "bound": np.array(t.bound), "error": np.array(error),
              "real_output": np.array(t.real_output)}
    if t.D is not None:
        arrays["D"] = t.D
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def _text(r: dict, out: Path | None) -> str:
    hsv = ", ".join(f"{s:.4g}" for s in r["hsv"][:12]) + (", ..." if len(r["hsv"]) > 12 else "")
    lines = [f"Hankel singular values ({r['states_full']}{', real-output realisation' if r['real_output'] else ''}):"
             f" {hsv}",
             f"kept {r['rank']} of {r['states_full']} states ({r['modes_kept']} diagonal modes or matrix order)",
             f"bound  2 * sum(discarded HSVs) = {r['bound']:.6g}",
             f"error  max over the grid of sigma_max(G - G_r) = {r['error']:.6g}  "
             f"({'within' if r['within_bound'] else 'EXCEEDS'} the bound)"]
    if out is not None:
        lines.append(f"wrote {out}")
    return "\n".join(lines)
