"""Compression benchmark (issue 15 item 5, the arms of items 1 and 4): one command.

A teacher GPT is trained on the corpus, then compressed to ``--target`` of its FLOPs/token
with ``--tokens`` continued-training tokens per arm and seed:

* ``lyactl`` / ``lyactl-distill``: lyactl's controller (without / with distillation), freezing
  blocks by the built-in convergence rule and the settled-group certificate
  (``--settled-eps``, :mod:`lyactl.control.settled`);
* ``lyactl-distill-nosettled``: lyactl-distill without the settled certificate (paired with it:
  what its freezes save and cost);
* ``oneshot-distill``: activation importance at step 0, then distillation (Minitron-style);
* ``oneshot-mix-distill``: one-shot at the first report, as many groups of each kind (layers,
  residual channels, heads, MLP blocks) as the ``--schedule-of`` arm removed in all, chosen by importance
  on the original (Block Influence for layers, channel activation, activation for widths:
  :mod:`lyactl_torch.depth_importance`), then distillation: the one-shot baseline that may also
  cut depth and channels, with lyactl's structure;
* ``measured-distill`` / ``measured3-distill``: no penalty: every group's removal measured on
  held-out batches, the lowest certified cost per FLOP pruned at step 0 (one round) or in three
  rounds at 0, 10 and 20 % of the run (``CompressConfig(method="measured")``,
  :mod:`lyactl.control.removal_cost`), then distillation;
* ``oneshot-mix-distill-eqflops``: the same, trained on more tokens, so that its training FLOPs
  equal those of the ``--schedule-of`` arm including that arm's measurement forwards
  (``measure_flops``): the comparison at equal compute (recorded with ``paired_tokens``, the
  token count it is paired at);
* ``random``: random groups at the schedule of ``--schedule-of`` (default lyactl-distill; same
  seed, counts per kind and event), distilled;
* ``scratch-same-tokens``: the ``--schedule-of`` arm's final shape, fresh weights, the same tokens;
* ``scratch-full``: that shape trained from scratch on as many tokens as the teacher (seed 0).

Writes ``benchmarks/results/compress.json``: ``{"name", "gpu", "arms": [{"arm", "seed", "tokens",
"flops_per_token_ratio", "val_bpb", "train_flops", "wall_s", "certificates"}]}``; compressed arms
also carry ``lm_losses`` (the language-model loss every ``lm_loss_every`` steps: where a removal
did not recover), ``events``, ``monitors`` and ``restores``.
``--preset tiny`` runs in about a minute on a CPU (a smoke test, not a measurement).
The JSON is rewritten after every arm, and ``--budget-s`` skips what would start after that
many seconds (a time-limited GPU call still leaves its finished arms). Order: per token
count (in the order given), the seeds, each seed's arms together: an interrupted run still has
paired arms.
Not here: the dense frontier of the issue (it lives in ``benchmarks/results/pretrain_h200.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lyactl.control.baselines import ReplayController, ScheduledEvent, random_scores, schedule_from_log
from lyactl_torch.compress import CompressConfig, compress, logits
from lyactl_torch.depth_importance import depth_width_importance
from lyactl_torch.importance import activation_rule
from lyactl_torch.compress_run import _bpb, _certificates
from lyactl_torch.corpus import Batches, encode_documents, load_documents, split_documents, train_bpe
from lyactl_torch.flops import model_flops_per_token
from lyactl_torch.model import GPT, GPTConfig
from lyactl_torch.runner import DEMO_CORPUS_DIR
from lyactl_torch.tokenizer import load_tokenizer

PRESETS = {  # teacher shape, teacher steps, batch, seq_len, vocab
    "tiny": dict(d_model=64, n_layer=2, n_head=4, mlp_hidden=256, steps=150, batch=8, seq=64, vocab=512),
    "h200": dict(d_model=768, n_layer=12, n_head=12, mlp_hidden=3072, steps=2700, batch=64, seq=512, vocab=8192),
    # what fits one 10-minute call with all arms: 8 blocks of d512 on 52 M tokens
    "h200-small": dict(d_model=512, n_layer=8, n_head=8, mlp_hidden=2048, steps=1600, batch=64, seq=512, vocab=8192),
}
ARMS = ("lyactl-distill", "lyactl-distill-nosettled", "measured-distill", "measured3-distill", "oneshot-distill",
        "oneshot-mix-distill", "oneshot-mix-distill-eqflops", "random", "lyactl", "scratch-same-tokens", "scratch-full")
SCHEDULE_ARMS = ("lyactl-distill", "measured-distill", "measured3-distill")
SOURCES = ("brown", "linux_doc", "mhcc", "milton", "python_doc", "shakespeare", "tdavid", "web_bible", "wordnet")


def train_dense(model: GPT, batches: Batches, steps: int, lr: float, dev: str) -> tuple[float, float]:
    """Plain AdamW with a cosine schedule; returns (training FLOPs, wall seconds)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    fpt, t0 = model_flops_per_token(model), time.perf_counter()
    for step in range(steps):
        xy = torch.from_numpy(batches.batch(step)).to(dev)
        with torch.autocast(torch.device(dev).type, torch.bfloat16, enabled=dev.startswith("cuda")):
            loss = model(xy[:, :-1], xy[:, 1:])[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    return fpt * steps * batches.batch_size * batches.seq_len, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--tokens", type=int, nargs="+", default=[20000])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--corpus", type=Path, default=DEMO_CORPUS_DIR)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer.json to use instead of training one")
    ap.add_argument("--val-docs", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=float("inf"))
    ap.add_argument("--no-freeze", action="store_true",
                    help="compress without freezing (a training-FLOPs budget): how compress.json was made")
    ap.add_argument("--settled-eps", type=float, default=1e-3,
                    help="with freezing: also freeze a block whose own updates buy or cost (95 %% interval, over the "
                         "learning rate to come) less than EPS*loss/n_blocks (lyactl.control.settled); 0: off")
    ap.add_argument("--prior", choices=("none", "activation"), default="none",
                    help="the lyactl arms rank by the original's activation importance (CompressConfig.prior)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {ARMS}")
    ap.add_argument("--calib-rows", type=int, default=4,
                    help="sequences per calibration batch of the measured arms (4 batches; one forward per group)")
    ap.add_argument("--schedule-of", choices=SCHEDULE_ARMS, default="lyactl-distill",
                    help="the arm whose events random and oneshot-mix-distill replay, and whose shape the scratch arms train")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compress.json"))
    args = ap.parse_args(argv)
    bad = sorted(set(args.arms.split(",")) - set(ARMS))
    if bad:
        ap.error(f"--arms: expected names from {ARMS}, found {bad}")
    followers = {"random", "oneshot-mix-distill", "oneshot-mix-distill-eqflops", "scratch-same-tokens",
                 "scratch-full"} & set(args.arms.split(","))
    if followers and args.schedule_of not in args.arms.split(","):
        ap.error(f"--schedule-of: expected one of the arms run ({args.arms}), found {args.schedule_of!r}")
    p, work, t_start = PRESETS[args.preset], args.out.parent / "compress-work", time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    sources = SOURCES if args.corpus != DEMO_CORPUS_DIR else None
    split = split_documents(load_documents(args.corpus, sources), 0.03 if sources else 0.1, 0)
    tok = load_tokenizer(args.tokenizer or train_bpe([d.text for d in split.train], p["vocab"], work / "tokenizer.json"))
    tokens = encode_documents(tok.backend, split.train)
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=p["seq"], d_model=p["d_model"], n_layer=p["n_layer"],
                    n_head=p["n_head"], head_dim=p["d_model"] // p["n_head"], mlp_hidden=p["mlp_hidden"])
    torch.manual_seed(0)
    teacher = GPT(cfg).to(args.device)
    flops, wall = train_dense(teacher, Batches(tokens, p["seq"], p["batch"], 0), p["steps"], 3e-3, args.device)
    base = CompressConfig(args.target, 1, batch_size=p["batch"], seq_len=p["seq"], device=args.device)
    bpb = lambda m: _bpb(m, tok, split, work, base, args.val_docs)  # noqa: E731
    arms = [{"arm": "teacher", "seed": 0, "tokens": p["steps"] * p["batch"] * p["seq"], "flops_per_token_ratio": 1.0,
             "val_bpb": bpb(teacher), "train_flops": flops, "wall_s": wall, "certificates": {}}]
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    meta = {"name": f"compress-{args.preset}", "gpu": gpu, "preset": p, "target": args.target,
            "train_tokens_available": int(tokens.size), "val_docs": args.val_docs,
            "freeze": not args.no_freeze, "prior": args.prior,
            "settled_eps": args.settled_eps, "schedule_of": args.schedule_of}
    save = lambda: args.out.write_text(json.dumps({**meta, "arms": arms}, indent=1))  # noqa: E731
    save()
    within = lambda: time.perf_counter() - t_start < args.budget_s  # noqa: E731
    for n in args.tokens:
        for seed in range(args.seeds):
            run_seed(teacher, tokens, tok, split, work, p, args, n, seed, bpb, within, save, arms)
    print(json.dumps([{k: a[k] for k in ("arm", "seed", "tokens", "flops_per_token_ratio", "val_bpb")} for a in arms]))
    return 0


def run_seed(teacher, tokens, tok, split, work, p, args, n, seed, bpb, within, save, arms: list) -> None:
    """The arms of one token count and seed, appended to ``arms`` (saved after each); an arm
    that would start after ``--budget-s`` is skipped."""
    batches = Batches(tokens, p["seq"], p["batch"], 100 + seed)
    shape = None
    plans = [("lyactl-distill", "lyactl", 2.0), ("lyactl-distill-nosettled", "lyactl", 2.0),
             ("measured-distill", "measured", 2.0), ("measured3-distill", "measured", 2.0),
             ("oneshot-distill", "oneshot", 2.0), ("random", "replay", 2.0),
             ("oneshot-mix-distill", "replay", 2.0), ("oneshot-mix-distill-eqflops", "replay", 2.0),
             ("lyactl", "lyactl", None)]
    schedule: list = []
    n_eq = n  # tokens at the schedule arm's training FLOPs (its measurement included)
    groups = teacher_groups(teacher, CompressConfig(args.target, n))  # the index space of every arm's decisions
    for arm, method, tau in plans:
        if arm not in args.arms.split(",") or not within() or (method == "replay" and shape is None):
            continue
        student = GPT(teacher.config).to(args.device)
        student.load_state_dict(teacher.state_dict())
        prior = args.prior if method == "lyactl" and args.prior != "none" else None
        cfg = CompressConfig(args.target, n_eq if arm.endswith("-eqflops") else n, method=method, batch_size=p["batch"], seq_len=p["seq"], distill=tau,
                             device=args.device, seed=seed, freeze=not args.no_freeze, prior=prior,
                             settled_eps=None if args.settled_eps <= 0 or arm.endswith("-nosettled") else args.settled_eps,
                             rounds=3 if arm == "measured3-distill" else 1,
                             calib_rows=min(args.calib_rows, p["batch"]) if method == "measured" else None)
        factory = _mix_factory(batches, schedule, args.device) if arm.startswith("oneshot-mix-distill") else (
            lambda b, cons: ReplayController(b.groups(), cons, schedule, random_scores(seed)))
        r = compress(student, batches, cfg, controller=factory if method == "replay" else None)
        if arm == args.schedule_of:
            schedule = schedule_from_log([{"step": e.step, "decisions": [{"index": d.index, "action": d.action.value}
                                          for d in e.decisions]} for e in r.events], groups)
            shape = r.model
            extra = r.record.get("measure_flops", 0.0)
            n_eq = round(n * r.record["train_flops"] / (r.record["train_flops"] - extra))
        arms.append(record(arm, seed, r.record, bpb(r.model), _certificates(r))
                    | {"events": _events(r.events, groups), "monitors": _monitor_trace(r.outputs),
                       "restores": _restores(r.outputs), "rounds": r.record.get("rounds"), "paired_tokens": n,
                       "measure_flops": r.record.get("measure_flops", 0.0)})
        save()
    full = seed == 0 and n == args.tokens[0]
    for arm, steps in (("scratch-same-tokens", CompressConfig(args.target, n, batch_size=p["batch"],
                                                               seq_len=p["seq"]).steps), ("scratch-full", p["steps"])):
        if arm not in args.arms.split(",") or shape is None or not within() or (arm == "scratch-full" and not full):
            continue
        torch.manual_seed(seed)
        scratch = GPT(teacher.config, shapes=shape.shapes(), d_live=shape.d_live).to(args.device)
        flops, wall = train_dense(scratch, batches, steps, 3e-3, args.device)
        ratio = model_flops_per_token(scratch) / model_flops_per_token(teacher)
        arms.append({"arm": arm, "seed": seed, "tokens": steps * p["batch"] * p["seq"], "flops_per_token_ratio": ratio,
                     "val_bpb": bpb(scratch), "train_flops": flops, "wall_s": wall, "certificates": {},
                     "shape_of": f"{args.schedule_of} seed {seed}, {n} tokens"})
        save()


def _mix_factory(batches: Batches, schedule: list, device: str, n_calib: int = 4):
    """The oneshot-mix controller: lyactl's total count per kind in one event at the first report,
    chosen by :func:`lyactl_torch.depth_importance.depth_width_importance` of the model then (the
    original: nothing has changed it yet), measured on batches the training never draws."""
    totals: dict[str, int] = {}
    for ev in schedule:
        for kind, n in ev.prune.items():
            totals[kind] = totals.get(kind, 0) + n

    def factory(backend, cons):
        calib = [torch.from_numpy(batches.batch(10**6 + i)[:, :-1]).to(device) for i in range(n_calib)]
        scores = depth_width_importance(backend.layout, calib, logits)
        return ReplayController(backend.groups(), cons, [ScheduledEvent(0, totals)], activation_rule(scores))

    return factory


def teacher_groups(teacher: GPT, cfg: CompressConfig) -> list:
    """The groups of the original model (the index space of the recorded schedule)."""
    from lyactl_torch.backend import TorchBackend

    return list(TorchBackend(teacher, torch.optim.SGD(teacher.parameters(), lr=0.0), block=cfg.block).groups())


def _events(events, groups: list) -> list[dict]:
    """Per controller event: its step, how many decisions of each action it made, and of each
    action and group kind (``"prune:layer"``, ``"prune:head"``, ...; ``groups``: the original
    model's, the index space of the decisions)."""
    out = []
    for e in events:
        counts: dict[str, int] = {}
        for d in e.decisions:
            for key in (d.action.value, f"{d.action.value}:{groups[d.index].kind.value}"):
                counts[key] = counts.get(key, 0) + 1
        out.append({"step": e.step, **counts})
    return out


def _restores(outputs) -> list[dict]:
    """The rollback guard's restores: per controller report that restored anything, the report's
    index and the steps of the events it undid (the decisions lists only what was applied)."""
    return [{"report": k, "event_steps": [int(e.step) for e in out.restores]}
            for k, out in enumerate(outputs) if getattr(out, "restores", ())]


def _monitor_trace(outputs) -> list[dict]:
    """Per controller report: ``{monitor: [groups seen, holding, unknown]}`` (why a certificate
    kind did or did not fire; HARMLESS and BOUNDED monitors see only the groups where they could
    change a decision) and, for the settled monitor, ``settled_dL_over_tol``: [min, median]."""
    trace = []
    for out in outputs:
        row = {}
        for res in getattr(out, "results", ()):
            m = res.margin
            row[res.monitor.name] = [int(m.size), int((m > 0).sum()), int(np.isnan(m).sum())]
            if res.monitor.name == "settled" and m.size:  # how far the blocks are: dL / tol (< 1 holds)
                q = np.asarray(res.numbers["dL"], float) / float(res.numbers["tol"])
                q = q[np.isfinite(q)]
                row["settled_dL_over_tol"] = [float(q.min()), float(np.median(q))] if q.size else None
        trace.append(row)
    return trace


def record(arm: str, seed: int, r: dict, val_bpb: float, certs: dict) -> dict:
    return {"arm": arm, "seed": seed, "tokens": r["tokens"], "flops_per_token_ratio": r["flops_per_token_ratio"],
            "val_bpb": val_bpb, "train_flops": r["train_flops"], "wall_s": r["wall_s"], "certificates": certs,
            "reached_target": r["reached_target"], "frozen_blocks": r.get("frozen_blocks", 0),
            "training_flops_saving": r.get("training_flops_saving", 0.0),
            "lm_losses": r.get("losses"), "lm_loss_every": max(1, int(r.get("steps", 1)) // 100)}


if __name__ == "__main__":
    raise SystemExit(main())
