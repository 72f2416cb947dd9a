"""SSM state-truncation benchmark: full state vs lyactl's certified balanced truncation vs the
small state from scratch, random / smallest / magnitude mode selection and a state frontier.

One command per task (``--preset tiny`` runs on CPU in seconds, ``small-cpu`` in minutes;
``h200`` on one H200)::

    python -m benchmarks.ssm.run --preset h200 --task lm --data ../shared/data --out benchmarks/results
    python -m benchmarks.ssm.run --preset h200 --task mqar --lrs 1e-3,3e-3,1e-2 --arms full,small-scratch

Arms (paired: one seed fixes the initialisation and the data order in every arm):

* ``full``: N states per layer all along;
* ``lyactl``: at ``cut_frac`` of training every LRU layer is replaced by its balanced
  truncation to ``2 r`` real states (``r = N * keep``), or to the rank of HSV energy
  ``1 - tol`` with ``--tol``; Adam's state moved by ``--policy`` (:mod:`lyactl_torch.ssm.truncate`);
  ``lyactl-approx``: the same with the ``"approx"`` policy (first moment mapped by the change
  of basis, second moment under independence) whatever ``--policy`` says;
  ``lyactl-scaled``: lyactl with each new mode rescaled to the trained layer's ratio of output to
  input weights (``mode_scale="layer"``; same transfer function and certificate);
  The cut is decided and certified by :class:`lyactl_torch.ssm.StateTruncator` (the same path
  as a user's loop; no rollback guard, so the arms stay comparable); its certificates are
  re-verified by :func:`lyactl.control.decision_log.verify_certificate` (``"reverified"``);
* ``small-scratch``: ``r`` states from the start;
* ``random`` / ``smallest`` / ``magnitude``: at the same step keep ``r`` diagonal modes chosen at
  random, by the smallest modal HSV proxy (a sanity arm: it should lose), or by
  ``|C_i| |B_i| / (1 - |lam_i|)``; parameters and Adam state sliced exactly;
  ``random-reset``: random's modes with the layers' Adam state reset as lyactl's ``"reset"``
  policy does (the ablation that separates the choice of states from the optimizer state);
  ``horizon``: the ``r`` modes with the largest HSV proxy over the sequence length (time-limited
  Gramians, :func:`lyactl_torch.ssm.truncate.horizon_scores`), sliced exactly;
* ``frontier``: state sizes ``N * f`` from scratch for ``f`` in the preset's ``frontier``.

``--kind recall`` replaces the LRU mixer by :class:`~lyactl_torch.ssm.recall.RecallLRU` (gates
around an LRU memory; the plain LRU stays near chance on MQAR), ``--heads 4x8`` its heads;
``--equal-modes`` caps the lyactl arms at ``r`` complex modes per layer, as the modal arms keep
(without it a real eigenvalue of the reduced system spends a whole complex mode, and the
recall mixer's small phases make many real).

``--cut-frac 0.25,0.75,0.9`` runs every cut arm at each cut (``full`` and the from-scratch arms
once); ``--keep`` sets the kept share of the states; ``--probe-cut`` records the metric just
before and just after the cut (``metric_before_cut`` / ``metric_after_cut``), the damage a
selection does before any retraining.

Each run records ``{"arm", "seed", "state_start", "state_final", "val_bpb" | "accuracy",
"train_flops", "wall_s", "peak_mem", "certificates", ...}``; all go to ``OUT/ssm_<task>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.ssm.tasks import load_lm, mqar_batch
from lyactl_torch.ssm.lm import SSMLM, SSMLMConfig, default_r_min, flops_per_token, state_share
from lyactl.control.decision_log import verify_certificate
from lyactl.control.state_truncation import StateTruncationPolicy
from lyactl_torch.ssm import StateTruncator
from lyactl_torch.ssm.truncate import (horizon_scores, hsv_proxy_scores, keep_top, magnitude_scores, random_scores,
                                       select_modes)

__all__ = ["PRESETS", "ARMS", "run_arm", "main"]

_ROOT = Path(__file__).resolve().parents[2]
ARMS = ("full", "lyactl", "lyactl-approx", "lyactl-scaled", "small-scratch", "random", "random-reset", "smallest",
        "magnitude", "horizon", "frontier")
_CUT_ARMS = ("lyactl", "lyactl-approx", "lyactl-scaled", "random", "random-reset", "smallest", "magnitude", "horizon")

_TINY_MODEL = {"d_model": 16, "n_layer": 2, "n_state": 32, "mlp_hidden": 64, "chunk": 16}
_SMALL_CPU_MODEL = {"d_model": 64, "n_layer": 2, "n_state": 128, "mlp_hidden": 256, "chunk": 32}
_H200_MODEL = {"d_model": 256, "n_layer": 4, "n_state": 1024, "mlp_hidden": 1024, "chunk": 64}
PRESETS: dict[str, dict] = {
    "tiny": {"device": "cpu", "bf16": False, "compile": False, "cut_frac": 0.2, "keep": 0.25, "frontier": (0.5,),
             "lm": {"model": _TINY_MODEL, "seq_len": 64, "batch": 4, "steps": 20, "lr": 3e-3, "val_limit": 2,
                    "val_fraction": 0.2, "sources": None},
             "mqar": {"model": _TINY_MODEL, "seq_len": 48, "batch": 16, "steps": 30, "lr": 3e-3, "vocab": 64,
                      "pairs": 4, "val_batches": 2}},
    # a CPU scale between tiny and h200: a first look at a task (minutes on two cores)
    "small-cpu": {"device": "cpu", "bf16": False, "compile": False, "cut_frac": 0.25, "keep": 0.25, "frontier": (0.5,),
                  "lm": {"model": _SMALL_CPU_MODEL, "seq_len": 128, "batch": 16, "steps": 600, "lr": 3e-3, "val_limit": 4,
                         "val_fraction": 0.03, "sources": None},
                  "mqar": {"model": _SMALL_CPU_MODEL, "seq_len": 64, "batch": 32, "steps": 1500, "lr": 3e-3,
                           "vocab": 128, "pairs": 8, "val_batches": 8}},
    # compile off by default on the H200: with dynamic shapes inductor failed on the scan there
    # (torch 2.11: "-((0)) is not comparable"); ``--compile`` compiles with dynamic=False
    "h200": {"device": "cuda", "bf16": True, "compile": False, "cut_frac": 0.1, "keep": 0.25, "frontier": (0.5, 0.125),
             "lm": {"model": _H200_MODEL, "seq_len": 512, "batch": 32, "steps": 200, "lr": 2e-3, "val_limit": 10,
                    "val_fraction": 0.03, "sources": ("brown", "linux_doc", "mhcc", "milton", "python_doc",
                                                       "shakespeare", "tdavid", "web_bible", "wordnet")},
             # recall (--kind recall --heads 4x16): H' = 1024 memory inputs, 2N = 512 real states
             "mqar": {"model": _H200_MODEL | {"d_model": 128, "n_state": 256, "mlp_hidden": 512}, "seq_len": 128,
                      "batch": 64, "steps": 1200, "lr": 3e-3, "vocab": 1024, "pairs": 16, "val_batches": 8}},
}


def _optimizer(model: SSMLM, lr: float) -> torch.optim.Optimizer:
    """AdamW; recurrent parameters (nu, theta, gamma) at lr/2 without weight decay (LRU practice)."""
    rec = [p for n, p in model.named_parameters() if n.split(".")[-1] in ("nu_log", "theta_log", "gamma_log")]
    ids = {id(p) for p in rec}
    mats = [p for p in model.parameters() if id(p) not in ids and p.dim() == 2]
    rest = [p for p in model.parameters() if id(p) not in ids and p.dim() != 2]
    groups = [{"params": mats, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0},
              {"params": rec, "weight_decay": 0.0, "lr_scale": 0.5}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _surgery(arm: str, model: SSMLM, opt, r: int, seed: int, seq_len: int) -> list[dict]:
    """Cut every SSM layer to r modes by the arm's rule; the certificates."""
    certs = []
    for i, layer in enumerate(model.ssm_layers()):
        score = {"random": random_scores(seed * 1000 + i), "random-reset": random_scores(seed * 1000 + i),
                 "magnitude": magnitude_scores, "smallest": hsv_proxy_scores,
                 "horizon": horizon_scores(seq_len)}[arm](layer)
        rec = select_modes(layer, opt, keep_top(score, r, largest=arm != "smallest"), rule=arm.split("-")[0],
                           name=f"ssm{i}", reset_optimizer=arm == "random-reset")
        certs.append(rec.certificate())
    return certs


def _truncator(model: SSMLM, opt, r: int, cut: int, seq_len: int, args, opt_policy: str,
               mode_scale: str = "eig") -> StateTruncator:
    """The lyactl arm's cut: at step ``cut``, every LRU layer to ``2 r`` real states (or the HSV
    energy ``1 - tol``), decided and certified by the StateTruncator."""
    mode = {"mode": "rank", "keep": 2 * r} if args.tol is None else {"mode": "energy", "tau": args.tol}
    policy = StateTruncationPolicy(**mode, start_step=cut, last_step=cut, guard=None)
    return StateTruncator(model, opt, policy, interval=cut, seq_len=seq_len, optimizer_policy=opt_policy,
                          mode_scale=mode_scale, equal_modes=args.equal_modes)


def _certificates(trunc: StateTruncator) -> list[dict]:
    return [c.to_json() | {"reverified": not verify_certificate(c.certificate().to_json())}
            for c in trunc.certificates]


def _probe(task: str, model: SSMLM, data, preset: dict, dev: torch.device, seed: int) -> tuple[float | None, float]:
    """Validation bits per byte (lm) or accuracy (mqar) mid-run, the model put back in training
    mode; and the seconds it took (taken out of the run's wall-clock)."""
    if not preset.get("probe_cut"):
        return None, 0.0
    t0 = time.perf_counter()
    res = _evaluate(task, model, data, preset, dev, seed)
    model.train()
    return res.get("val_bpb", res.get("accuracy")), time.perf_counter() - t0


def run_arm(arm: str, seed: int, n_state: int, preset: dict, task: str, data, args, lr: float | None = None) -> dict:
    """Train one arm and return its record (with ``--probe-cut``, the metric just before and just
    after the cut as well: the damage the cut does before any retraining).

    ``losses``: ``[step, loss, seconds]`` about 20 times a run; the seconds are the training time
    so far (probes excluded), read after the loss's host sync, so the step rate before and after
    a cut can be compared within one run.
    """
    cfg_t = preset[task]
    dev = torch.device(preset["device"])
    vocab = data.tokenizer.vocab_size if task == "lm" else cfg_t["vocab"]
    model = SSMLM(SSMLMConfig(vocab_size=vocab, **(cfg_t["model"] | {"n_state": n_state})), seed=seed).to(dev)
    lr = lr or cfg_t["lr"]
    opt = _optimizer(model, lr)
    steps, T, Bsz = cfg_t["steps"], cfg_t["seq_len"], cfg_t["batch"]
    cut = int(preset["cut_frac"] * steps) if arm in _CUT_ARMS else -1
    r = max(1, int(round(cfg_t["model"]["n_state"] * preset["keep"])))
    policy = "approx" if arm == "lyactl-approx" else args.policy
    scale = "layer" if arm == "lyactl-scaled" else "eig"
    trunc = _truncator(model, opt, r, max(1, cut), T, args, policy, scale) if arm.startswith("lyactl") else None
    fwd = torch.compile(model, dynamic=False) if preset["compile"] else model
    batches = None
    if task == "lm":
        from lyactl_torch.corpus import Batches

        batches = Batches(data.train, T, Bsz, seed)
    flops, certs, losses, share0, probe = 0.0, [], [], state_share(model, T), []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for step in range(steps):
        if step == cut and trunc is None:
            probe = [_probe(task, model, data, preset, dev, seed)]
            certs = _surgery(arm, model, opt, r, seed, T)
            probe.append(_probe(task, model, data, preset, dev, seed))
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr) * g.get("lr_scale", 1.0)
        if task == "lm":
            xy = torch.from_numpy(batches.batch(step)).to(dev)
            x, y = xy[:, :-1], xy[:, 1:]
        else:
            x, y = (t.to(dev) for t in mqar_batch(seed, step, Bsz, T, cfg_t["pairs"], vocab))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=preset["bf16"]):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        flops += flops_per_token(model, T)["train"] * Bsz * T
        if trunc is not None and step == cut - 1:  # the truncator counts steps from 1: it fires after `cut` steps
            probe = [_probe(task, model, data, preset, dev, seed)]
        if trunc is not None and trunc.step(loss):  # after `cut` steps, as the other arms' cut before step `cut`
            certs = _certificates(trunc)
            probe.append(_probe(task, model, data, preset, dev, seed))
            fwd = torch.compile(model, dynamic=False) if preset["compile"] else model  # shapes changed
        if step % max(1, steps // 20) == 0 or step == steps - 1:  # float(): the sync these times rely on
            losses.append([step, float(loss.detach()), time.perf_counter() - t0 - sum(t for _, t in probe)])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    probe = (probe + [(None, 0.0)] * 2)[:2]
    wall = time.perf_counter() - t0 - sum(t for _, t in probe)
    rec = {"arm": arm, "seed": seed, "lr": lr, "state_start": n_state * len(model.ssm_layers()),
           "state_final": sum(model.states()), "train_flops": flops, "wall_s": wall,
           "peak_mem": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
           "state_share_start": share0, "state_share_final": state_share(model, T), "losses": losses,
           "certificates": certs, "cut_step": cut if cut >= 0 else None,
           "cut_frac": preset["cut_frac"] if cut >= 0 else None,
           "metric_before_cut": probe[0][0], "metric_after_cut": probe[1][0], "keep": preset["keep"],
           "policy": policy if arm.startswith("lyactl") else "reset" if arm == "random-reset" else None}
    rec.update(_evaluate(task, model, data, preset, dev, seed))
    return rec


def _evaluate(task: str, model: SSMLM, data, preset: dict, dev: torch.device, seed: int) -> dict:
    cfg_t = preset[task]
    model.eval()
    if task == "lm":
        from lyactl_torch.evaluate import evaluate

        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=preset["bf16"]):
            res = evaluate(model, data.tokenizer, ["bpb"], Path("."), device=dev, batch_size=16,
                           limit=cfg_t["val_limit"], seq_len=cfg_t["seq_len"], heldout=data.val)
        return {"val_bpb": res["tasks"]["bpb"]["metrics"]["bpb"]["value"]}
    hits, total = 0, 0
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=preset["bf16"]):
        for k in range(cfg_t["val_batches"]):  # held-out draws: a seed no training run uses
            x, y = (t.to(dev) for t in mqar_batch(10_000 + seed, k, cfg_t["batch"], cfg_t["seq_len"], cfg_t["pairs"], cfg_t["vocab"]))
            pred = model(x).argmax(-1)
            mask = y != -100
            hits += int((pred[mask] == y[mask]).sum())
            total += int(mask.sum())
    return {"accuracy": hits / total}


def _plan(arms: list[str], preset: dict, task: str) -> list[tuple[str, int]]:
    N = preset[task]["model"]["n_state"]
    r = max(1, int(round(N * preset["keep"])))
    out = []
    for a in arms:
        if a == "frontier":
            out += [("frontier", max(1, int(round(N * f)))) for f in preset["frontier"]]
        else:
            out.append((a, r if a == "small-scratch" else N))
    return out


def _write(args: argparse.Namespace, preset: dict, runs: list[dict], wall_s: float) -> Path:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and preset["device"] == "cuda" else "cpu"
    result = {"name": args.name or f"ssm_{args.task}", "gpu": gpu, "task": args.task, "preset": args.preset,
              "config": {k: v for k, v in preset.items() if k not in ("lm", "mqar")} | {"task": preset[args.task]},
              "total_wall_s": wall_s, "arms": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=1, default=list))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--task", choices=("lm", "mqar"), default="lm")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default="", help="comma-separated learning rates: run every arm at each (a sweep)")
    ap.add_argument("--tol", type=float, default=None, help="lyactl arm: rank by HSV energy 1 - tol instead of keep")
    ap.add_argument("--policy", choices=("approx", "reset", "slice"), default="reset")
    ap.add_argument("--data", type=Path, default=_ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=_ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None, help="results file name (default ssm_<task>)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    ap.add_argument("--cut-frac", default=None,
                    help="override the preset's cut step (fraction of training); comma-separated: every cut arm at each")
    ap.add_argument("--keep", type=float, default=None, help="override the preset's kept share of the states (0, 1]")
    ap.add_argument("--probe-cut", action="store_true",
                    help="evaluate just before and just after the cut (the cut's damage before retraining)")
    ap.add_argument("--cache", type=Path, default=None, help="token cache folder (default OUT/cache_<preset>)")
    ap.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    ap.add_argument("--scan-layout", choices=("state", "time"), default="state",
                    help="the LRU scan's memory layout (records before 2026-12-02 late: time)")
    ap.add_argument("--compile", action="store_true", help="torch.compile(dynamic=False); recompiled after a cut")
    ap.add_argument("--kind", choices=("lru", "s4d", "recall"), default="lru",
                    help="the SSM layer (SSMLMConfig.kind); recall: the gated mixer around an LRU (MQAR needs it)")
    ap.add_argument("--heads", default="4x8", help="recall mixer: n_head x d_head (its LRU has n_head d_head^2 inputs)")
    ap.add_argument("--device", default=None, help="override the preset's device (e.g. a CPU preset's shapes on cuda, fp32)")
    ap.add_argument("--equal-modes", action="store_true",
                    help="lyactl arms keep at most r complex modes per layer (as the modal arms), the rank stepping down")
    ap.add_argument("--r-min", type=float, default=None,
                    help="smallest initial |lam| (default 0.9; 0.99 for --kind recall: its memory must last the sequence)")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset] | ({"compile": True} if args.compile else {}) | (
        {"device": args.device} if args.device else {})
    try:
        n_head, d_head = (int(x) for x in args.heads.split("x"))
    except ValueError:
        ap.error(f"--heads: expected N_HEADxD_HEAD, e.g. 4x8, found {args.heads!r}")
    r_min = args.r_min if args.r_min is not None else default_r_min(args.kind)
    shape = {"scan_layout": args.scan_layout, "kind": args.kind, "r_min": r_min} | (
        {"n_head": n_head, "d_head": d_head} if args.kind == "recall" else {})
    preset = preset | {t: preset[t] | {"model": preset[t]["model"] | shape} for t in ("lm", "mqar")}
    if args.steps:
        preset = preset | {args.task: preset[args.task] | {"steps": args.steps}}
    if args.batch:
        preset = preset | {args.task: preset[args.task] | {"batch": args.batch}}
    cut_fracs = [float(x) for x in (args.cut_frac or str(preset["cut_frac"])).split(",") if x]
    if not all(0.0 < f < 1.0 for f in cut_fracs):
        ap.error(f"--cut-frac: expected numbers in (0, 1), found {args.cut_frac}")
    if args.keep is not None:
        if not 0.0 < args.keep <= 1.0:
            ap.error(f"--keep: expected a number in (0, 1], found {args.keep}")
        preset = preset | {"keep": args.keep}
    preset = preset | {"probe_cut": args.probe_cut, "cut_frac": cut_fracs[0], "cut_fracs": cut_fracs,
                       "equal_modes": args.equal_modes}
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        ap.error(f"--arms: expected names from {ARMS}, found {bad}")
    if preset["device"] == "cpu":
        torch.set_num_threads(1)  # on a shared 2-core machine two threads ran tiny models ~100x slower
    data = None
    if args.task == "lm":
        c = preset["lm"]
        data = load_lm(args.data / "corpus", _ROOT / "benchmarks" / "results" / "tokenizer_bpe8192.json",
                       args.cache or args.out / f"cache_{args.preset}", c["val_fraction"], c["sources"])
    lrs = [float(x) for x in args.lrs.split(",") if x] or [None]
    runs: list[dict] = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm, n in _plan(arms, preset, args.task):
            for lr, f in [(lr, f) for lr in lrs for f in (cut_fracs if arm in _CUT_ARMS else cut_fracs[:1])]:
                rec = run_arm(arm, seed, n, preset | {"cut_frac": f}, args.task, data, args, lr)
                runs.append(rec)
                metric = rec.get("val_bpb", rec.get("accuracy"))
                keys = ("arm", "seed", "lr", "cut_frac", "state_final", "wall_s", "metric_before_cut", "metric_after_cut")
                print(json.dumps({k: rec[k] for k in keys} | {"metric": metric}), flush=True)
                path = _write(args, preset, runs, time.perf_counter() - t0)  # after every run: a cut-off call keeps them
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
