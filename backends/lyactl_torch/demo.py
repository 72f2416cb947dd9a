"""``lyactl demo``: a small GPT trained twice on the shipped corpus, dense and with lyactl.

Both arms use one :class:`~lyactl.app.runconfig.RunConfig` (same seed, same initial weights, same
data order); only the controller differs. The demo prints the comparison table and the
decisions with their certificates, re-verifies every certificate offline from the decision
log, and leaves a run folder (see :mod:`lyactl_torch.runner`) with plots.

Presets (the CLI's own option strings, mapped to functions returning a config):

* ``small`` (default, CPU, about two minutes on two cores);
* ``tiny`` (seconds; for tests);
* ``large`` (a GPU: wider, deeper, longer).

The controller settings are chosen so that certified events happen within the run; see
``docs/quickstart.md`` for what they are and why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from lyactl.app.runconfig import ControllerSection, DataSection, ModelSection, RunConfig, TrainingSection
from lyactl.app.runreport import format_table, load_run, plot_run, reverify_run

from .runlog import LOGGER, MetricsLog, write_csv
from .runner import prepare_data, run_arm, warm_up

__all__ = ["small_preset", "tiny_preset", "large_preset", "PRESETS", "run_demo", "run_config"]


def small_preset() -> RunConfig:
    """CPU, about two minutes on two cores."""
    return RunConfig(
        model=ModelSection(d_model=128, n_layer=4, n_head=4, mlp_hidden=512, seq_len=64, vocab_size=512),
        data=DataSection(batch_size=16),
        training=TrainingSection(steps=400, lr=3e-3, warmup=30, log_every=10),
        controller=ControllerSection(interval=10, block=32, budget=0.3, u_max=1.0, warmup_frac=0.25,
                                     last_frac=0.8, hysteresis=2, window=8, lag=2,
                                     min_steps_between_events=20, cooldown_steps=100))


def tiny_preset() -> RunConfig:
    """Seconds on a CPU; for tests (few steps, a very small model)."""
    base = small_preset()
    return dataclasses.replace(
        base, model=ModelSection(d_model=64, n_layer=2, n_head=2, mlp_hidden=128, seq_len=32, vocab_size=300),
        data=DataSection(batch_size=8, val_docs=2),
        training=dataclasses.replace(base.training, steps=120, warmup=10, log_every=5),
        controller=dataclasses.replace(base.controller, interval=5, block=32, window=6,
                                       min_steps_between_events=10))


def large_preset() -> RunConfig:
    """A GPU: d=384, 6 layers, 800 steps of 32 x 128 tokens, bf16 (the corpus is small:
    about 3 epochs; a bigger model mostly overfits it)."""
    base = small_preset()
    return dataclasses.replace(
        base, model=ModelSection(d_model=384, n_layer=6, n_head=6, mlp_hidden=1536, seq_len=128, vocab_size=2048),
        data=DataSection(batch_size=32),
        training=TrainingSection(steps=800, lr=2e-3, warmup=50, log_every=20, device="cuda", bf16=True),
        controller=dataclasses.replace(base.controller, interval=25, block=64, min_steps_between_events=100,
                                       cooldown_steps=500))


PRESETS: dict[str, Callable[[], RunConfig]] = {"small": small_preset, "tiny": tiny_preset, "large": large_preset}


def run_config(preset: str, *, device: str | None = None, steps: int | None = None) -> RunConfig:
    """The preset's config with ``device`` / ``steps`` overridden (warm-up capped at steps)."""
    cfg = PRESETS[preset]()
    t = cfg.training
    if device is not None:
        t = dataclasses.replace(t, device=device, bf16=t.bf16 and device.startswith("cuda"))
    if steps is not None:
        t = dataclasses.replace(t, steps=steps, warmup=min(t.warmup, steps), log_every=min(t.log_every, steps))
    return dataclasses.replace(cfg, training=t)


def _setup_logging(out: Path, verbose: bool) -> None:
    LOGGER.setLevel(logging.INFO)
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == (out / "run.log").resolve()
               for h in LOGGER.handlers):
        fh = logging.FileHandler(out / "run.log", mode="w", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOGGER.addHandler(fh)
    if verbose and not any(type(h) is logging.StreamHandler for h in LOGGER.handlers):
        LOGGER.addHandler(logging.StreamHandler(sys.stderr))


def _default_threads(device: str) -> int | None:
    """One CPU thread when other processes already keep the cores busy (1-minute load
    average >= cores - 0.5): torch's OpenMP threads spin-wait, and on oversubscribed cores
    a step then takes tens of times longer than on one thread. None: torch's default."""
    if not device.startswith("cpu") or not hasattr(os, "getloadavg"):
        return None
    cores = os.cpu_count() or 1
    if cores > 1 and os.getloadavg()[0] >= cores - 0.5:
        LOGGER.info("cores busy (load %.1f on %d cores): one torch thread", os.getloadavg()[0], cores)
        return 1
    return None


def run_demo(cfg: RunConfig, out: Path, *, arms: tuple[str, ...] = ("dense", "lyactl"), progress: bool = True,
             verbose: bool = False, threads: int | None = None) -> int:
    """Train the arms, write the run folder, print the table; 0 if every certificate
    re-verifies offline, 1 otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, verbose)
    threads = threads if threads is not None else _default_threads(cfg.training.device)
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for name in ("metrics.jsonl", "decisions.jsonl", "traces.json"):
        (out / name).unlink(missing_ok=True)
    data = prepare_data(cfg, out)
    warm_up(cfg, data)
    metrics = MetricsLog(out / "metrics.jsonl", out / "tensorboard")
    try:
        records = [run_arm(cfg, data, out, arm, controlled=arm != "dense", progress=progress, metrics=metrics)
                   for arm in arms]
    finally:
        metrics.close()
    summary = {"arms": records, "total_s": time.perf_counter() - t0, "device": cfg.training.device,
               "torch_threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return finish_run(out)


def finish_run(out: Path) -> int:
    """Metrics CSV, plots, table, offline re-verification; returns the exit code."""
    run = load_run(out)
    write_csv(run["metrics"], out / "metrics.csv")
    plot_run(out, run)
    report = reverify_run(out)
    print(format_table(run))
    status = "all verify" if report.ok else f"{len(report.failures)} FAIL"
    print(f"re-verified offline: {report.n_certificates} certificates of {report.n_decisions} decisions: {status}")
    for line, group, monitor, problem in report.failures[:10]:
        print(f"  {out / 'decisions.jsonl'}:{line} {group} [{monitor}]: {problem}")
    print(f"run folder: {out}  (summary.json, metrics.csv, decisions.jsonl, loss.png, flops.png, lyapunov.png)")
    return 0 if report.ok else 1
