"""One benchmark job: build the arm's model and policy, train, evaluate, return the record.

A job spec comes from :func:`arms.plan`. Arms of stage 2 derive their model size, step count
or event schedule from lyactl's seed-0 result (``<out>/lyactl-s0.json``), see ``_derive``.
Training wall-clock covers the whole loop (compilation and the controller included);
evaluation is timed apart and excluded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from lyactl.control.baselines import ReplayController, ScheduledEvent, magnitude_scores, random_scores, schedule_from_log, taylor_scores
from lyactl.app.runconfig import ControllerSection, build_controller
from lyactl.control.controller import ControllerConfig
from lyactl_torch.corpus import Batches, Document
from lyactl_torch.evaluate import evaluate
from lyactl_torch.flops import training_flops_per_token
from lyactl_torch.loop import Lyactl
from lyactl_torch.model import GPT, BlockShape, GPTConfig
from lyactl_torch.tokenizer import load_tokenizer
from lyactl_torch.train import TrainConfig, build_optimizer, train

__all__ = ["run_job"]


def _shapes_of(result: dict) -> tuple[list[BlockShape], int]:
    return [BlockShape(*s) for s in result["final_shapes"]], int(result["final_d"])


def _derive(spec: dict, out: Path, vocab: int) -> dict:
    """Fill in model/steps/schedule of a stage-2 arm from lyactl's seed-0 result."""
    if not spec.get("derive"):
        return spec
    if spec["derive"] == "match-compute":  # prune the wider start down to the matched model's FLOPs/token
        budget = 1.0 - _fpt(spec | {"model": spec["match"]}, vocab, None, None) / _fpt(spec, vocab, None, None)
        return spec | {"policy": spec["policy"] | {"budget": budget}}
    src = json.loads((out / f"{spec['source']}.json").read_text())
    tokens_per_step = spec["batch"] * spec["seq_len"]
    target = float(src["train_flops"])
    spec = dict(spec)
    if spec["derive"] == "lyactl-arch-scratch":
        shapes, d = _shapes_of(src)
        fpt = _fpt(spec, vocab, shapes, d)
        spec.update(shapes=[list(s.__dict__.values()) for s in shapes], d_live=d,
                    steps=max(1, round(target / (fpt * tokens_per_step))))
    elif spec["derive"] == "dense-short":
        fpt = _fpt(spec, vocab, None, None)
        spec["steps"] = max(1, round(target / (fpt * tokens_per_step)))
    elif spec["derive"] == "small-dense":  # shape by FLOPs/token, then steps to lyactl's compute
        spec["model"] = _matching_dense(spec, vocab, target / (spec["steps"] * tokens_per_step))
        spec["steps"] = max(1, round(target / (_fpt(spec, vocab, None, None) * tokens_per_step)))
    elif spec["derive"] == "replay":
        spec["schedule"] = src["events"]
    return spec


def _fpt(spec: dict, vocab: int, shapes, d) -> float:
    cfg = GPTConfig(vocab_size=vocab, seq_len=spec["seq_len"], **spec["model"])
    with torch.device("meta"):
        model = GPT(cfg, shapes, d)
    return training_flops_per_token(model, spec["seq_len"])


def _matching_dense(spec: dict, vocab: int, target_fpt: float) -> dict:
    """The dense model of the same d and depth, heads and MLP shrunk together (MLP width per
    head kept, rounded to 128), whose FLOPs/token is closest to ``target_fpt``.

    Shrinking the two together keeps the model's proportions: an earlier rule took any
    (heads, MLP) pair and chose 1 head beside a wide MLP, a degenerate baseline.
    """
    base = spec["model"]
    per_head = base["mlp_hidden"] / base["n_head"]
    cands = [base | {"n_head": h, "mlp_hidden": max(128, 128 * round(h * per_head / 128))}
             for h in range(1, base["n_head"] + 1)]
    return min(cands, key=lambda c: abs(_fpt(spec | {"model": c}, vocab, None, None) - target_fpt))


def _policy(spec: dict, model: GPT, opt: torch.optim.Optimizer):
    """The controller of the arm (None for plain dense training) wrapped in the loop adapter."""
    pol = spec.get("policy")
    if not pol:
        return None
    K = int(pol.get("interval", 25))
    loop = Lyactl(model, opt, None, interval=K)
    groups, constraints = loop.backend.groups(), loop.backend.constraints()
    T = spec["steps"]
    if pol["kind"] == "lyactl":  # the run config's controller section, built where every run builds it
        section = ControllerSection(
            interval=K, budget=pol.get("budget") or None, warmup_frac=pol["warmup_frac"], last_frac=pol["last_frac"],
            ramp_end_frac=pol.get("ramp_end_frac") or None, hysteresis=pol["hysteresis"],
            max_groups_per_event=pol["max_groups_per_event"], min_steps_between_events=pol["min_steps_between_events"],
            cooldown_steps=ControllerConfig().cooldown_steps, model_flops=training_flops_per_token(model, spec["seq_len"]))
        ctl = build_controller(section, T, groups, constraints, loop.backend.flops_model)
    elif pol["kind"] == "freeze":
        steps = np.linspace(pol["start_frac"] * T, pol["end_frac"] * T, pol["layers"])
        sched = [ScheduledEvent(int(s), {}, i + 1) for i, s in enumerate(steps)]
        ctl = ReplayController(groups, constraints, sched, random_scores(0))
    else:
        rule = {"random": random_scores(spec["seed"]), "magnitude": magnitude_scores, "taylor": taylor_scores}[pol["rule"]]
        ctl = ReplayController(groups, constraints, schedule_from_log(spec["schedule"], groups), rule)
    loop.controller = ctl
    return loop


def run_job(spec: dict, out: Path) -> dict:
    """Train and evaluate one arm; return its JSON-ready record."""
    torch.manual_seed(spec["seed"])
    work = Path(spec["work"])
    meta = json.loads((work / "meta.json").read_text())
    tok = load_tokenizer(Path(meta["tokenizer"]))
    spec = _derive(spec, out, tok.vocab_size)
    dev = torch.device(spec["device"])
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=spec["seq_len"], **spec["model"])
    shapes = [BlockShape(*s) for s in spec["shapes"]] if spec.get("shapes") else None
    model = GPT(cfg, shapes, spec.get("d_live")).to(dev)
    n_params0 = sum(p.numel() for p in model.parameters())
    tcfg = TrainConfig(steps=spec["steps"], lr=spec["lr"], warmup=min(spec["warmup"], spec["steps"]),
                       device=spec["device"], bf16=spec["bf16"], compile=spec["compile"], seed=spec["seed"])
    opt = build_optimizer(model, tcfg)
    batches = Batches(np.load(work / "train.npy", mmap_mode="r"), spec["seq_len"], spec["batch"], spec["seed"])
    loop = _policy(spec, model, opt)
    hooks = [lambda step, loss: loop.step(loss)] if loop else []
    res = train(model, opt, batches, tcfg, hooks=hooks)
    record = {"id": spec["id"], "arm": spec["arm"], "seed": spec["seed"], "model": spec["model"],
              "steps": spec["steps"], "tokens": res.tokens, "n_params": n_params0,
              "n_params_final": sum(p.numel() for p in model.parameters()),
              "final_shapes": [list(s.__dict__.values()) for s in model.shapes()], "final_d": model.d_live,
              "frozen_prefix": model.frozen_prefix, **_train_fields(res),
              "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    if loop:
        record["events"] = [_event_json(e) for e in loop.events]
        record["backend_record"] = loop.backend.record
    record.update(_evaluate(spec, model, tok, work, dev))
    return record


def _train_fields(res) -> dict:
    return {"wall_s": res.wall_s, "compile_s": res.compile_s, "train_flops": res.train_flops,
            "losses": res.losses, "fpt": res.fpt, "step_ms": res.step_ms, "peak_mem_gib": res.peak_mem}


def _event_json(ev) -> dict:
    return {"event_id": ev.event_id, "step": ev.step, "flops_before": ev.flops_before, "flops_after": ev.flops_after,
            "decisions": [{"group": d.group, "index": d.index, "action": d.action.value,
                           "certificates": [c.to_json() for c in d.certificates]} for d in ev.decisions]}


def _evaluate(spec: dict, model: GPT, tok, work: Path, dev: torch.device) -> dict:
    ev = spec["eval"]
    val = [Document(**d) for d in json.loads((work / "val.json").read_text())]  # src, text, index, line
    t0 = time.perf_counter()
    results = {}
    for task in ev["tasks"]:
        r = evaluate(model, tok, [task], Path(spec["data"]), device=dev, batch_size=ev["batch_size"],
                     limit=ev.get("limits", {}).get(task), seq_len=spec["seq_len"], heldout=val)
        results[task] = r["tasks"][task]
        results[task]["items"].pop("logprobs", None)  # per-choice scores: not needed for the tests
    m = {t: r["metrics"] for t, r in results.items()}
    flat = {
        "val_bpb": m.get("bpb", {}).get("bpb", {}).get("value"),
        "val_bpb_by_source": {k[4:]: v["value"] for k, v in m.get("bpb", {}).items() if k.startswith("bpb/")},
        "endings_acc_norm": m.get("endings", {}).get("acc_norm", {}).get("value"),
        "lambada_acc": m.get("lambada", {}).get("acc", {}).get("value"),
        "hellaswag_acc_norm": m.get("hellaswag", {}).get("acc_norm", {}).get("value"),
        "mmlu_acc": m.get("mmlu5", {}).get("acc", {}).get("value"),
    }
    return flat | {"eval_s": time.perf_counter() - t0, "eval": results}
