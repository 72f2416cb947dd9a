"""Command-line interface: ``lyactl <subcommand> ...`` (also ``python -m lyactl``).

Each subcommand is added by one small function ``_add_<name>(subparsers)`` that registers
its arguments and sets ``handler`` (a function ``(args) -> int``). Exit codes: 0 ok (for
``verify``: a verdict was computed, whatever it is), 1 a failed check (a certificate that does
not re-verify), 2 a user error (one line on stderr naming the argument, no traceback).

Subcommands needing PyTorch (``demo``, ``train``, ``eval``) import ``lyactl_torch`` inside
their handlers, so ``import lyactl`` (and ``lyactl verify``/``report``) never imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from lyactl._version import __version__
from lyactl.errors import LyactlError
from lyactl.analysis.optimizers import OptimizerModel, OptimizerParams, adam, gd, heavy_ball, nesterov

__all__ = ["COMMANDS", "main", "build_parser"]

# Subcommands in modules of their own: each has add_parser(sub) that sets handler=run.
COMMANDS: tuple[ModuleType, ...] = ()

_OPTIMIZERS: dict[str, Callable[[], OptimizerModel]] = {
    "gd": gd, "heavy-ball": heavy_ball, "nesterov": nesterov, "adam": adam,
}  # the CLI's own option strings -> model constructors (not an extension point)
_BOUNDARY_TOL = 1e-9


class _UsageError(Exception):
    """Raised by the parser instead of exiting, so main() controls the message and code."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = _Parser(prog="lyactl", description="Lyapunov-certified pruning and freezing.")
    parser.add_argument("--version", action="version", version=f"lyactl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_verify(sub)
    _add_demo(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_report(sub)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 verdict computed, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["eval"]:  # its own parser (lyactl_torch.evaluate); see _run_eval
            return _run_eval(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except _UsageError as exc:
        print(f"lyactl: error: {exc}", file=sys.stderr)
        return 2
    except (LyactlError, OSError) as exc:
        print(f"lyactl: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"lyactl: error: {exc} (install the extra: pip install -e '.[torch]')".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lyactl: interrupted", file=sys.stderr)
        return 130


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify stability of an optimizer model or a linear system x+ = A x")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--optimizer", choices=sorted(_OPTIMIZERS), help="optimizer model on a quadratic mode")
    what.add_argument("--matrix", type=Path, help="JSON list of lists or .npy file holding A")
    p.add_argument("--lr", type=float, help="step size eta (>= 0)")
    p.add_argument("--momentum", type=float, default=None, help="momentum beta (heavy-ball, nesterov)")
    p.add_argument("--beta1", type=float, default=None, help="Adam's beta1 (default 0.9)")
    p.add_argument("--curvature", type=float, help="curvature lam of the mode (after preconditioning for adam)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="coupled L2 (gd, heavy-ball, nesterov) or decoupled (adam = AdamW)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_verify)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train a small GPT on the shipped corpus, dense and with lyactl, and compare",
        description="Train a small GPT on the shipped demo corpus (World English Bible excerpt) twice, "
                    "dense and with the lyactl controller (same seed, same data order); print FLOPs, "
                    "wall-clock, validation bits per byte and the certified decisions; write a run folder "
                    "with the decision log, metrics (CSV, JSON) and plots. Exit 0 if every certificate "
                    "re-verifies offline, 1 if one does not.")
    p.add_argument("--out", type=Path, default=Path("lyactl-demo"), help="run folder (default ./lyactl-demo)")
    p.add_argument("--preset", choices=("small", "tiny", "large"), default="small",
                   help="small: CPU, ~2 min (default); tiny: seconds (tests); large: a GPU")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="training steps per arm (default: the preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="log events to stderr (always in RUN/run.log)")
    p.set_defaults(handler=_run_demo)


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise _UsageError(f"--device: expected a device torch can use, found {device!r} (no CUDA here)")


def _run_demo(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise _UsageError(f"--steps: expected an int >= 1, found {args.steps}")
    if args.threads is not None and args.threads < 1:
        raise _UsageError(f"--threads: expected an int >= 1, found {args.threads}")
    from lyactl_torch.demo import run_config, run_demo

    cfg = run_config(args.preset, device=args.device, steps=args.steps)
    _check_device(cfg.training.device)
    return run_demo(cfg, args.out, progress=not args.no_progress, verbose=args.verbose, threads=args.threads)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the reference GPT from a TOML/YAML config",
        description="Train the reference GPT as configured in CONFIG (.toml, .yaml or .yml; sections "
                    "[model], [data], [training], [controller]; unknown keys are errors; see "
                    "docs/quickstart.md), with the lyactl controller unless controller.enabled = false. "
                    "Writes the run folder (checkpoint, decision log, metrics, plots). Exit 0 ok, 1 if a "
                    "certificate does not re-verify, 2 on a bad config.")
    p.add_argument("config", type=Path, help="the run configuration (.toml, .yaml, .yml)")
    p.add_argument("--out", type=Path, default=Path("lyactl-run"), help="run folder (default ./lyactl-run)")
    p.add_argument("--dense-too", action="store_true", help="also train the dense arm (same seed and data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="log events to stderr")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from lyactl.app.runconfig import load_run_config

    cfg = load_run_config(args.config)
    from lyactl_torch.demo import run_demo

    _check_device(cfg.training.device)
    arm = "lyactl" if cfg.controller.enabled else "dense"
    arms = ("dense", arm) if args.dense_too and arm != "dense" else (arm,)
    return run_demo(cfg, args.out, arms=arms, progress=not args.no_progress, verbose=args.verbose)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("eval", add_help=False, help="evaluate a checkpoint offline (lyactl eval --help)")


def _run_eval(argv: list[str]) -> int:
    """``lyactl eval CHECKPOINT --tasks ...``: lyactl_torch.evaluate's CLI on a checkpoint of
    :mod:`lyactl_torch.checkpoint`; the run folder's tokenizer.json is used unless --tokenizer."""
    from lyactl_torch.checkpoint import load
    from lyactl_torch.evaluate import run_eval_cli

    ckpt = next((Path(a) for a in argv if not a.startswith("-")), None)
    if ckpt is not None and "--tokenizer" not in argv and (ckpt.parent / "tokenizer.json").is_file():
        argv = argv + ["--tokenizer", str(ckpt.parent / "tokenizer.json")]
    try:
        return run_eval_cli(argv, lambda path, device: load(path, map_location=device).model)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="re-plot a run folder and re-verify every certificate offline",
        description="Read RUN_DIR (written by lyactl demo or lyactl train), redraw its plots, print the "
                    "table and re-verify every certificate of its decision log with lyactl alone. "
                    "Exit 0 if all verify, 1 if any fails, 2 if RUN_DIR is not a run folder.")
    p.add_argument("run_dir", type=Path, help="the run folder")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
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


def _run_verify(args: argparse.Namespace) -> int:
    if args.matrix is not None:
        return _verify_matrix(args)
    for name in ("lr", "curvature"):
        value = getattr(args, name)
        if value is None:
            raise _UsageError(f"--{name}: required with --optimizer")
        if not math.isfinite(value):
            raise _UsageError(f"--{name}: expected a finite number, found {value}")
    if args.optimizer == "adam":
        if args.momentum is not None:
            raise _UsageError("--momentum: not used by adam; give --beta1")
        beta = 0.9 if args.beta1 is None else args.beta1
    else:
        if args.beta1 is not None:
            raise _UsageError(f"--beta1: only for adam, not {args.optimizer}")
        if args.optimizer == "gd" and args.momentum not in (None, 0.0):
            raise _UsageError("--momentum: gd has no momentum; use heavy-ball or nesterov")
        beta = 0.0 if args.momentum is None else args.momentum
    p = _params(args.lr, beta, args.weight_decay)
    from lyactl.analysis.regions import derive_region

    model = _OPTIMIZERS[args.optimizer]()
    region = derive_region(model)
    ev = region.check(model, args.curvature, p, _BOUNDARY_TOL)
    out = {"verdict": ev.verdict.value, "region": region.text,
           "region_at_point": _pretty(region.at(p.beta, p.eta * p.wd)), "margin": _num(ev.margin),
           "spectral_radius": _num(ev.details["spectral_radius"]), "optimizer": args.optimizer,
           "lr": p.eta, "momentum" if args.optimizer != "adam" else "beta1": p.beta,
           "curvature": args.curvature, "weight_decay": p.wd, "eta_lam": p.eta * args.curvature,
           "method": ev.method}
    _print(out, args.json)
    return 0


def _params(eta: float, beta: float, wd: float) -> OptimizerParams:
    names = {"eta": "--lr", "beta": "--momentum/--beta1", "wd": "--weight-decay"}
    try:
        return OptimizerParams(eta, beta, wd)
    except LyactlError as exc:
        field = str(exc).split(":", 1)[0]
        raise _UsageError(f"{names.get(field, field)}: {str(exc).split(':', 1)[1].strip()}") from exc


def _verify_matrix(args: argparse.Namespace) -> int:
    from lyactl.analysis.lyapunov import verify_dlyap

    extra = [n for n in ("lr", "curvature", "momentum", "beta1") if getattr(args, n) is not None]
    if extra:
        raise _UsageError(f"--{extra[0]}: not used with --matrix")
    A = _load_matrix(args.matrix)
    ev = verify_dlyap(A, tol=_BOUNDARY_TOL)
    out = {"verdict": ev.verdict.value, "region": "rho(A) < 1  <=>  A^T P A - P = -I has P > 0",
           "margin": _num(ev.margin), "spectral_radius": _num(ev.details["spectral_radius"]),
           "n": int(A.shape[0]), "residual": _num(ev.residuals.get("lyapunov", math.nan)),
           "P_positive_definite": ev.details.get("P_positive_definite"), "matrix": str(args.matrix),
           "method": ev.method}
    _print(out, args.json)
    return 0


def _load_matrix(path: Path) -> np.ndarray:
    from lyactl.errors import DataFileError

    if not path.is_file():
        raise _UsageError(f"--matrix: expected an existing file, found {str(path)!r}")
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
        raise _UsageError(str(exc)) from exc


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
