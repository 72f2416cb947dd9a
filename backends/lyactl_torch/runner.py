"""One run from a :class:`lyactl.app.runconfig.RunConfig`: data, model, controller, training,
validation bits per byte, and the run folder (what ``lyactl train`` and ``lyactl demo`` do).

Run folder (``out``)::

    config.json  split.json  tokenizer.json    the run's inputs (split = held-out doc ids)
    decisions.jsonl                            every controller decision with certificates
    metrics.jsonl / metrics.csv                loss, lr, FLOPs/token, kept fraction per log step
    traces.json                                per report and group: the monitors' V and margins
    summary.json                               one record per arm (see :func:`run_arm`)
    <arm>.pt                                   final checkpoint (:mod:`lyactl_torch.checkpoint`)
    tensorboard/                               when ``tensorboard`` is installed

The data order is a pure function of ``training.seed`` (:class:`~lyactl_torch.corpus.Batches`)
and the initial weights of ``torch.manual_seed(training.seed)``, so a dense and a controlled
arm of one config see the same batches from the same start.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lyactl.control.controller import Controller, ControlOutput
from lyactl.control.decision_log import DecisionLog, encode_array
from lyactl.app.runconfig import DEMO_CORPUS, RunConfig
from lyactl.app.runconfig import build_controller as build_from_section
from lyactl.control.budget import BudgetCounts

from .checkpoint import save
from .corpus import Batches, Split, encode_documents, load_documents, split_documents, train_bpe
from .evaluate import evaluate
from .flops import training_flops_per_token
from .flops_model import flops_with
from .groups import Layout, adapter_for
from .loop import Lyactl
from .model import GPT, GPTConfig
from .runlog import LOGGER, MetricsLog
from .tokenizer import Tokenizer, load_tokenizer
from .train import build_optimizer, lr_at, train

__all__ = ["DEMO_CORPUS_DIR", "RunData", "prepare_data", "build_model", "build_controller", "warm_up", "run_arm"]

DEMO_CORPUS_DIR = Path(__file__).resolve().parent / "data" / "demo_corpus"


@dataclass(frozen=True, eq=False)
class RunData:
    """The split, the tokenizer trained on its training half, and the training batches."""

    split: Split
    tokenizer: Tokenizer
    batches: Batches


def prepare_data(cfg: RunConfig, out: Path) -> RunData:
    """Split the corpus by document, train a BPE tokenizer on the training split only
    (``out/tokenizer.json``), encode, and write ``split.json`` and ``config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    folder = DEMO_CORPUS_DIR if cfg.data.corpus == DEMO_CORPUS else Path(cfg.data.corpus)
    split = split_documents(load_documents(folder), cfg.data.val_fraction, cfg.data.split_seed)
    path = train_bpe([d.text for d in split.train], cfg.model.vocab_size, out / "tokenizer.json")
    tok = load_tokenizer(path)
    tokens = encode_documents(tok.backend, split.train)
    (out / "split.json").write_text(json.dumps(split.record(), indent=1))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    LOGGER.info("corpus %s: %d training documents, %d tokens; %d held out", folder, len(split.train),
                len(tokens), len(split.val))
    return RunData(split, tok, Batches(tokens, cfg.model.seq_len, cfg.data.batch_size, cfg.training.seed))


def build_model(cfg: RunConfig, vocab_size: int) -> GPT:
    """The reference GPT of ``cfg.model``, initialised from ``torch.manual_seed(training.seed)``."""
    m = cfg.model
    torch.manual_seed(cfg.training.seed)
    return GPT(GPTConfig(vocab_size=vocab_size, seq_len=m.seq_len, d_model=m.d_model, n_layer=m.n_layer,
                         n_head=m.n_head, head_dim=m.head_dim or max(1, m.d_model // m.n_head),
                         mlp_hidden=m.mlp_hidden))


def build_controller(cfg: RunConfig, loop: Lyactl) -> Controller:
    """lyactl's controller over the loop's groups, configured by ``cfg.controller``
    (:func:`lyactl.app.runconfig.build_controller`, with the backend's exact FLOPs model; for a
    budget that counts pruned groups only, every kept block priced trainable, so an applied
    freeze is not counted as a saving)."""
    b = loop.backend
    flops = b.flops_model
    if cfg.controller.budget_counts == BudgetCounts.PRUNED_ONLY.value:
        flops = lambda status: flops_with(b.layout, status, trainable=True)  # noqa: E731
    return build_from_section(cfg.controller, cfg.training.steps, b.groups(), b.constraints(), flops)


class _Tracer:
    """Per controller report: every monitor's newest ``V`` and its margin for every group, as
    the controller computed them (:attr:`ControlOutput.results`; NaN where a monitor was not
    evaluated, or on a held report): no second evaluation, no extra host sync."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.steps: list[int] = []
        self.V: dict[str, list[list[Any]]] = {m.name: [] for m in ctl.monitors}
        self.margin: dict[str, list[list[Any]]] = {m.name: [] for m in ctl.monitors}

    def record(self, step: int, out: ControlOutput) -> None:
        self.steps.append(step)
        n, seen = self.ctl.n_groups, {r.monitor.name: r for r in out.results}
        for m in self.ctl.monitors:
            r = seen.get(m.name)
            V, margin = r.scattered(n) if r is not None else (np.full(n, np.nan), np.full(n, np.nan))
            self.V[m.name].append(encode_array(V))
            self.margin[m.name].append(encode_array(margin))

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "groups": [g.name for g in self.ctl.groups],
                "kinds": [g.kind.value for g in self.ctl.groups], "V": self.V, "margin": self.margin,
                "roles": {m.name: m.role.value for m in self.ctl.monitors}}


def _controller_hook(loop: Lyactl, log: DecisionLog, tracer: _Tracer) -> Callable[[int, torch.Tensor], bool]:
    def hook(step: int, loss: torch.Tensor) -> bool:
        n = len(loop.outputs)
        changed = loop.step(loss)
        if len(loop.outputs) > n:
            log.write(loop.outputs[-1])
            tracer.record(loop.n_steps, loop.outputs[-1])
            for ev in loop.outputs[-1].events:
                LOGGER.info("step %d: event %d, %d decisions (controller accounting: FLOPs/token %.3g -> %.3g)", ev.step, ev.event_id,
                            len(ev.decisions), ev.flops_before, ev.flops_after)
        return changed
    return hook


def _progress_hook(cfg: RunConfig, arm: str, model: GPT, metrics: MetricsLog, progress: bool,
                   dense_fpt: float, state: dict[str, Any]) -> Callable[[int, torch.Tensor], bool]:
    """tqdm bar and one metrics row per ``log_every`` steps (the loss is read there only)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.training.steps, desc=f"{arm:>6}", disable=not progress, leave=True,
               dynamic_ncols=True)
    state["bar"] = bar
    tcfg, t0 = cfg.training, time.perf_counter()

    def hook(step: int, loss: torch.Tensor) -> bool:
        if state.pop("changed", False):
            state["fpt"] = training_flops_per_token(model, cfg.model.seq_len)
        state["train_flops"] += state["fpt"] * cfg.data.batch_size * cfg.model.seq_len
        bar.update(1)
        if (step + 1) % tcfg.log_every == 0 or step + 1 == tcfg.steps:
            row = {"arm": arm, "step": step + 1, "loss": float(loss), "lr": lr_at(step, cfg.training),
                   "flops_per_token": state["fpt"], "flops_kept": state["fpt"] / dense_fpt,
                   "train_flops": state["train_flops"], "elapsed_s": time.perf_counter() - t0}
            metrics.log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", kept=f"{row['flops_kept']:.2f}")
        return False
    return hook


def warm_up(cfg: RunConfig, data: RunData, steps: int = 3) -> None:
    """A few untimed steps of a throwaway model, so one-time costs (kernel selection, lazy
    initialisation) are not charged to whichever arm runs first."""
    tcfg = cfg.training
    model = build_model(cfg, data.tokenizer.vocab_size).to(cfg.training.device)
    opt = build_optimizer(model, tcfg)
    for step in range(steps):
        xy = torch.from_numpy(data.batches.batch(step)).to(cfg.training.device)
        with torch.autocast(torch.device(cfg.training.device).type, dtype=torch.bfloat16, enabled=tcfg.bf16):
            loss = model(xy[:, :-1], xy[:, 1:])[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        model(xy[:, :-1])


def run_arm(cfg: RunConfig, data: RunData, out: Path, arm: str, *, controlled: bool, progress: bool = True,
            metrics: MetricsLog | None = None) -> dict[str, Any]:
    """Train one arm (dense, or with lyactl's controller when ``controlled``), evaluate
    validation bits per byte, save ``<arm>.pt``; return the arm's summary record."""
    tcfg, dev = cfg.training, torch.device(cfg.training.device)
    model = build_model(cfg, data.tokenizer.vocab_size).to(dev)
    opt = build_optimizer(model, tcfg)
    fpt0 = training_flops_per_token(model, cfg.model.seq_len)
    n_params0 = sum(p.numel() for p in model.parameters())
    metrics = metrics if metrics is not None else MetricsLog(out / "metrics.jsonl")
    state: dict[str, Any] = {"fpt": fpt0, "train_flops": 0.0}
    hooks, loop, tracer = [], None, None
    if controlled:
        loop = Lyactl(model, opt, None, interval=cfg.controller.interval, block=cfg.controller.block)
        loop.controller = build_controller(cfg, loop)
        tracer = _Tracer(loop.controller)
        (out / "decisions.jsonl").unlink(missing_ok=True)
        ctl_hook = _controller_hook(loop, DecisionLog(out / "decisions.jsonl"), tracer)

        def hook(step: int, loss: torch.Tensor) -> bool:
            changed = ctl_hook(step, loss)
            state["changed"] = state.get("changed", False) or changed
            return changed
        hooks.append(hook)
    hooks.append(_progress_hook(cfg, arm, model, metrics, progress, fpt0, state))
    res = train(model, opt, data.batches, tcfg, hooks=hooks, seq_len=cfg.model.seq_len)
    state["bar"].close()
    t0 = time.perf_counter()
    ev = evaluate(model, data.tokenizer, ["bpb"], out, device=dev, batch_size=32, seq_len=cfg.model.seq_len,
                  heldout=data.split.val[:cfg.data.val_docs])
    bpb = ev["tasks"]["bpb"]["metrics"]["bpb"]
    layout = loop.backend.layout if loop is not None else Layout(model, adapter_for(model), cfg.controller.block)
    save(out / f"{arm}.pt", model, live=layout.live, block_ids=layout.block_ids, block=cfg.controller.block,
         extra={"arm": arm, "seq_len": cfg.model.seq_len, "steps": cfg.training.steps})
    record = {"arm": arm, "controlled": controlled, "steps": cfg.training.steps, "tokens": res.tokens,
              "wall_s": res.wall_s, "eval_s": time.perf_counter() - t0, "train_flops": res.train_flops,
              "dense_train_flops": fpt0 * res.tokens, "flops_per_token_before": fpt0,
              "flops_per_token_after": training_flops_per_token(model, cfg.model.seq_len), "fpt": res.fpt,
              "val_bpb": bpb["value"], "val_bpb_stderr": bpb["stderr"], "losses": res.losses,
              "n_params_before": n_params0, "n_params_after": sum(p.numel() for p in model.parameters()),
              "final_shapes": [list(s.__dict__.values()) for s in model.shapes()], "final_d": model.d_live,
              "frozen_prefix": model.frozen_prefix}
    if loop is not None and tracer is not None:
        record["events"] = [{"event_id": e.event_id, "step": e.step, "flops_before": e.flops_before,
                             "flops_after": e.flops_after, "groups": [d.group for d in e.decisions],
                             "actions": [d.action.value for d in e.decisions],
                             "monitors": [[c.monitor for c in d.certificates] for d in e.decisions]}
                            for e in loop.events]
        record["restored"] = [e.event_id for e in loop.restored]
        (out / "traces.json").write_text(json.dumps(tracer.to_json()))
    return record
