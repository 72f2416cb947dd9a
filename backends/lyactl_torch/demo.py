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

The run folder is history (:mod:`lyactl.app.runfolder`): the whole input (config, corpus) is
validated before the folder is chosen, a folder that holds files is refused unless
``--new-run`` or ``--overwrite`` says otherwise, the default is a fresh
``lyactl-runs/<kind>-<n>`` (git-ignored), and ``manifest.json`` seals the run when it ends.
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

from lyactl.app.runconfig import DEMO_CORPUS, ControllerSection, DataSection, ModelSection, RunConfig, TrainingSection
from lyactl.app.runfolder import claim, default_out, write_manifest
from lyactl.app.runreport import TABLE_LEGEND, check_run, format_table, load_run, plot_run, reverify_run

from .corpus import load_documents, split_documents
from .runlog import LOGGER, MetricsLog, write_csv
from .runner import DEMO_CORPUS_DIR, prepare_data, run_arm, warm_up

__all__ = ["small_preset", "tiny_preset", "large_preset", "PRESETS", "check_inputs", "run_demo", "run_config"]


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


def _setup_logging(out: Path, verbose: bool) -> list[logging.Handler]:
    """Handlers for ``out/run.log`` (and stderr when ``verbose``); returns the ones added."""
    LOGGER.setLevel(logging.INFO)
    added: list[logging.Handler] = []
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == (out / "run.log").resolve()
               for h in LOGGER.handlers):
        fh = logging.FileHandler(out / "run.log", mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        added.append(fh)
    if verbose and not any(type(h) is logging.StreamHandler for h in LOGGER.handlers):
        added.append(logging.StreamHandler(sys.stderr))
    for h in added:
        LOGGER.addHandler(h)
    return added


def _close_logging(handlers: list[logging.Handler]) -> None:
    """Detach and close ``handlers`` (``run.log`` is complete before the manifest is written)."""
    for h in handlers:
        LOGGER.removeHandler(h)
        h.close()


def check_inputs(cfg: RunConfig) -> None:
    """Validate what the run reads before anything is written: the corpus folder exists,
    holds documents, and splits (errors name the folder or the key)."""
    folder = DEMO_CORPUS_DIR if cfg.data.corpus == DEMO_CORPUS else Path(cfg.data.corpus)
    split_documents(load_documents(folder), cfg.data.val_fraction, cfg.data.split_seed)


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


def run_demo(cfg: RunConfig, out: Path | None, *, arms: tuple[str, ...] = ("dense", "lyactl"), progress: bool = True,
             verbose: bool = False, threads: int | None = None, overwrite: bool = False, new_run: bool = False,
             kind: str = "demo") -> int:
    """Validate the inputs, claim the run folder (``out``, or the next free
    ``lyactl-runs/<kind>-<n>`` when None; see :func:`lyactl.app.runfolder.claim`), train the
    arms, seal the folder with its manifest, print the table; 0 if the folder is intact and
    every certificate re-verifies offline, 1 otherwise."""
    check_inputs(cfg)
    out = claim(Path(out), overwrite=overwrite, new_run=new_run) if out is not None else claim(default_out(kind))
    print(f"run folder: {out}", flush=True)
    handlers = _setup_logging(out, verbose)
    threads = threads if threads is not None else _default_threads(cfg.training.device)
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    metrics = MetricsLog(out / "metrics.jsonl", out / "tensorboard")
    try:
        data = prepare_data(cfg, out)
        warm_up(cfg, data)
        records = [run_arm(cfg, data, out, arm, controlled=arm != "dense", progress=progress, metrics=metrics)
                   for arm in arms]
    finally:
        metrics.close()
        _close_logging(handlers)
    summary = {"arms": records, "total_s": time.perf_counter() - t0, "device": cfg.training.device,
               "torch_threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return finish_run(out)


def finish_run(out: Path) -> int:
    """Metrics CSV, plots, the manifest, table and its legend, the folder's check and
    offline re-verification; returns the exit code."""
    run = load_run(out)
    write_csv(run["metrics"], out / "metrics.csv")
    plot_run(out, run)
    write_manifest(out)
    problems = check_run(out)
    report = reverify_run(out)
    print(format_table(run))
    print(TABLE_LEGEND)
    status = "all verify" if report.ok else f"{len(report.failures)} FAIL"
    print(f"re-verified offline: {report.n_certificates} certificates of {report.n_decisions} decisions: {status}")
    for line, group, monitor, problem in report.failures[:10]:
        print(f"  {out / 'decisions.jsonl'}:{line} {group} [{monitor}]: {problem}")
    for p in problems:
        print(f"  FAIL {out / p.file}: {p.problem}")
    print(f"run folder: {out}  (summary.json, metrics.csv, decisions.jsonl, manifest.json, loss.png, flops.png, "
          f"lyapunov.png; lyactl report {out} checks it again)")
    return 0 if report.ok and not problems else 1
