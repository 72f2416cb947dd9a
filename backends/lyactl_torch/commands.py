"""The torch backend's subcommands of ``lyactl``: ``demo``, ``train`` and ``eval``.

The core CLI (:mod:`lyactl.app.cli`) finds them through the entry-point group
``lyactl.commands`` declared in pyproject.toml, so no module of ``lyactl`` imports this
backend. Importing this module imports no torch: each handler imports what it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lyactl.app import exit_codes
from lyactl.errors import InvalidArgumentError

__all__ = ["add_compress", "add_demo", "add_eval", "add_train", "run_eval"]


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train a small GPT on the shipped corpus, dense and with lyactl, and compare",
        description="Train a small GPT on the shipped demo corpus (World English Bible excerpt) twice, "
                    "dense and with the lyactl controller (same seed, same data order); print FLOPs, "
                    "wall-clock, validation bits per byte and the certified decisions; write a run folder "
                    "with the decision log, metrics (CSV, JSON), plots and a manifest of checksums. Exit 0 if "
                    "every certificate re-verifies offline, 1 if one does not, 2 on bad input.",
        epilog=exit_codes.EPILOG)
    _add_out(p, "demo")
    p.add_argument("--preset", choices=("small", "tiny", "large"), default="small",
                   help="small: CPU, ~2 min (default); tiny: seconds (tests); large: a GPU")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="training steps per arm (default: the preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="log events to stderr (always in RUN/run.log)")
    p.set_defaults(handler=_run_demo)


def _add_out(p: argparse.ArgumentParser, kind: str) -> None:
    """``--out``, ``--new-run``, ``--overwrite`` (see :mod:`lyactl.app.runfolder`)."""
    p.add_argument("--out", type=Path, default=None,
                   help=f"run folder (default: the next free ./lyactl-runs/{kind}-N, a git-ignored folder); "
                        "one that holds files is refused unless --new-run or --overwrite")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--new-run", action="store_true",
                     help="if --out holds files, write the next free numbered folder beside it (OUT-2, OUT-3, ...)")
    how.add_argument("--overwrite", action="store_true",
                     help="if --out is a previous run folder, remove that run's files first (after the input "
                          "is validated)")


def _check_device(device: str) -> None:
    """``device`` must name a device torch has here: ``cpu``, ``cuda[:N]`` or ``mps``."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise InvalidArgumentError(f"--device: expected cpu, cuda, cuda:N or mps, found {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device: expected a device torch can use, found {device!r} (no CUDA here)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidArgumentError(f"--device: expected cuda:N with N < {torch.cuda.device_count()}, found {device!r}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InvalidArgumentError(f"--device: expected a device torch can use, found {device!r} (no MPS here)")


def _run_demo(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise InvalidArgumentError(f"--steps: expected an int >= 1, found {args.steps}")
    if args.threads is not None and args.threads < 1:
        raise InvalidArgumentError(f"--threads: expected an int >= 1, found {args.threads}")
    from lyactl_torch.demo import run_config, run_demo

    if args.device is not None:
        _check_device(args.device)
    cfg = run_config(args.preset, device=args.device, steps=args.steps)
    _check_device(cfg.training.device)
    return run_demo(cfg, args.out, progress=not args.no_progress, verbose=args.verbose, threads=args.threads,
                    overwrite=args.overwrite, new_run=args.new_run, kind="demo")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the reference GPT from a TOML/YAML config",
        description="Train the reference GPT as configured in CONFIG (.toml, .yaml or .yml; sections "
                    "[model], [data], [training], [controller]; unknown keys are errors; see "
                    "docs/quickstart.md), with the lyactl controller unless controller.enabled = false. "
                    "Writes the run folder (checkpoint, decision log, metrics, plots, manifest); the config "
                    "and corpus are checked before anything is written. Exit 0 ok, 1 if a certificate does "
                    "not re-verify, 2 on a bad config.",
        epilog=exit_codes.EPILOG)
    p.add_argument("config", type=Path, help="the run configuration (.toml, .yaml, .yml)")
    _add_out(p, "train")
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
    return run_demo(cfg, args.out, arms=arms, progress=not args.no_progress, verbose=args.verbose,
                    overwrite=args.overwrite, new_run=args.new_run, kind="train")


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", add_help=False, help="evaluate a checkpoint offline (lyactl eval --help); "
                       "exit 0 ok, 2 on bad input")
    p.set_defaults(run_argv=run_eval)  # lyactl_torch.evaluate parses the rest of the command line


def run_eval(argv: list[str]) -> int:
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


def add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress", help="prune a trained model to a FLOPs target while training continues",
        description="Load CHECKPOINT (a lyactl GPT checkpoint or a local Hugging Face GPT-2/Llama/Qwen2/Mistral "
                    "directory, offline), continue training on a corpus while lyactl prunes it to --target-flops "
                    "of its FLOPs per token, optionally distilling from the original; write the compressed model, "
                    "the decision log and a summary (docs/compress.md). Exit 0 target reached, 1 not reached, "
                    "2 bad input.", epilog=exit_codes.EPILOG)
    p.add_argument("checkpoint", type=Path, help="lyactl checkpoint file or Hugging Face model directory")
    p.add_argument("--target-flops", type=float, required=True, help="final FLOPs/token over the original's, in (0, 1)")
    p.add_argument("--tokens", type=int, required=True, help="continued-training tokens (>= 1)")
    p.add_argument("--corpus", type=Path, default=None, help="folder of *.jsonl.xz (default: the shipped demo corpus)")
    p.add_argument("--distill", type=float, default=None, metavar="T", help="distil from the original at temperature T")
    p.add_argument("--uniform", action="store_true", help="one width per layer; export a from_pretrained directory")
    p.add_argument("--method", choices=("lyactl", "oneshot", "measured"), default="lyactl",
                   help="lyactl's controller (default), one-shot activation importance at step 0 (baseline), or "
                        "measured removal costs: every group's loss increase measured on held-out batches, the lowest "
                        "certified cost per FLOP pruned in --rounds rounds (docs/compress.md)")
    p.add_argument("--rounds", type=int, default=1, help="with --method measured: pruning rounds (every 10 %% of the run)")
    p.add_argument("--prior", choices=("activation",), default=None,
                   help="with --method lyactl: rank the groups the budget pushes and completes by the original's "
                        "activation importance per FLOP instead of |g.w| per FLOP (docs/compress.md)")
    p.add_argument("--no-freeze", action="store_true",
                   help="never freeze converged blocks (default: freeze them, saving training compute; only pruning "
                        "counts towards --target-flops)")
    p.add_argument("--settled-eps", type=float, default=1e-3,
                    help="with freezing: also freeze a block whose own updates buy or cost (95 %% interval, over the "
                         "learning rate to come) less than EPS*loss/n_blocks (lyactl.control.settled); 0: off")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--block", type=int, default=32, help="MLP neurons per group")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    _add_out(p, "compress")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_compress)


def _run_compress(args: argparse.Namespace) -> int:
    if not 0.0 < args.target_flops < 1.0:
        raise InvalidArgumentError(f"--target-flops: expected a number in (0, 1), found {args.target_flops}")
    if args.tokens < 1:
        raise InvalidArgumentError(f"--tokens: expected an int >= 1, found {args.tokens}")
    if not args.checkpoint.exists():
        raise InvalidArgumentError(f"CHECKPOINT: expected an existing file or directory, found {args.checkpoint}")
    if args.distill is not None and not args.distill > 0:
        raise InvalidArgumentError(f"--distill: expected a temperature > 0, found {args.distill}")
    _check_device(args.device)
    from lyactl_torch.compress import CompressConfig
    from lyactl_torch.compress_run import exit_code, format_summary, run_compress
    from lyactl_torch.runner import DEMO_CORPUS_DIR

    cfg = CompressConfig(args.target_flops, args.tokens, method=args.method, batch_size=args.batch_size,
                         seq_len=args.seq_len, lr=args.lr, distill=args.distill, uniform=args.uniform,
                         block=args.block, device=args.device, prior=args.prior, freeze=not args.no_freeze,
                         settled_eps=None if args.settled_eps <= 0 else args.settled_eps, rounds=args.rounds)
    record = run_compress(args.checkpoint, cfg, corpus=args.corpus or DEMO_CORPUS_DIR, out=args.out,
                          overwrite=args.overwrite, new_run=args.new_run, progress=not args.no_progress)
    print(format_summary(record))
    return exit_code(record)
