"""Presets and the job plan of the pretraining benchmark (which arms, sizes, seeds, budgets).

Arms (names are fixed by the results schema):

* ``dense``: the starting model, full schedule;
* ``lyactl``: the same model with the lyactl controller (certified pruning and freezing);
* ``freeze``: layer freezing alone, FreezeOut-like (bottom layers frozen on a fixed schedule);
* ``frontier``: dense models of several sizes and two token budgets (the quality-compute frontier);
* ``lyactl-arch-scratch``: lyactl's final architecture, freshly initialised, trained with
  lyactl's training FLOPs (same tokens per step, fewer or more steps to match);
* ``small-dense``: a uniformly narrower dense model (heads and MLP) whose FLOPs over the full
  schedule match lyactl's;
* ``dense-short``: the dense model for fewer steps, cosine schedule refit, lyactl's FLOPs;
* ``lyactl-late`` (a design change under test): decisions only between 40 % and 70 % of
  training, budget 0.20;
* ``lyactl-gradual`` (the next design change under test): the same budget reached by a cubic
  ramp of the set-point between 3 % and 30 % of training (several smaller cuts instead of one);
* ``lyactl-wide`` (the design change after those): start wider than the dense model (12
  blocks instead of 8) and let lyactl prune it down to the dense model's training FLOPs
  (budget ``1 - fpt(dense) / fpt(wide)``, set when the job starts); compared with dense at
  equal compute, it asks whether training wide and pruning beats training the small model;
  the wide model trained dense is a frontier point;
* ``random``, ``magnitude``, ``taylor``: lyactl's event schedule (same steps, same number of
  groups of each kind, same frozen prefix) with groups chosen by that rule, no certificates.

Stage-2 arms derive from lyactl's seed-0 run and run on seed 0, except the replays, which
follow the lyactl run of their own seed (seeds 0 and 1).

With ``torch.compile``, :func:`with_warmup` puts a short untimed job per starting shape ahead
of the timed ones, so that every arm's first compilation finds the inductor cache warm: what is
left in ``compile_s`` is then an arm's own recompilation (lyactl's after an event), not the
luck of which job filled the cache first.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRESETS", "plan", "with_warmup"]

_ROOT = Path(__file__).resolve().parents[1]  # benchmarks/

_SOURCES = ("brown", "linux_doc", "mhcc", "milton", "python_doc", "shakespeare", "tdavid", "web_bible", "wordnet")

_LYACTL = {
    "interval": 25,          # K: steps between statistics reports
    "budget": 0.40,          # target fraction of training FLOPs to save
    "warmup_frac": 0.03,     # no decision before this fraction of training
    "last_frac": 0.60,       # no decision after this fraction of training
    "max_groups_per_event": 256,
    "min_steps_between_events": 100,
    "hysteresis": 2,
}

PRESETS: dict[str, dict] = {
    "h200": {
        "sources": _SOURCES, "val_fraction": 0.03, "split_seed": 0,
        "tokenizer": str(_ROOT / "results" / "tokenizer_bpe8192.json"), "vocab": 8192,
        "seq_len": 512, "batch": 64, "tokens": 88_000_000, "lr": 1e-3, "warmup": 100,
        "device": "cuda", "bf16": True, "compile": True,
        "dense": {"d_model": 768, "n_layer": 8, "n_head": 12, "mlp_hidden": 3072},
        "wide": {"d_model": 768, "n_layer": 12, "n_head": 12, "mlp_hidden": 3072},  # lyactl-wide's start
        "seeds": (0, 1, 2),
        # the last two bracket lyactl's compute (0.60 of dense) with the dense model's width
        # and fewer blocks, and with narrower blocks and one fewer (0.66 and 0.64 of dense)
        "frontier": ((256, 4, 4, 1024), (384, 6, 6, 1536), (512, 8, 8, 2048), (768, 8, 12, 3072),
                     (768, 5, 12, 3072), (640, 7, 10, 2560), (768, 12, 12, 3072)),
        "frontier_tokens": (88_000_000, 44_000_000),
        "frontier_short": ((512, 8, 8, 2048), (768, 8, 12, 3072)),  # sizes also run at the 2nd budget
        "lyactl": _LYACTL,
        "late": {"warmup_frac": 0.40, "last_frac": 0.70, "budget": 0.20},
        "gradual": {"ramp_end_frac": 0.30, "min_steps_between_events": 200},
        "freeze": {"start_frac": 0.5, "end_frac": 0.9, "layers": 4},
        "eval": {"tasks": ["bpb", "endings", "lambada", "hellaswag", "mmlu5"], "batch_size": 64,
                 "limits": {"mmlu5": 20}},
    },
    "tiny": {
        "sources": None, "val_fraction": 0.2, "split_seed": 0, "tokenizer": None, "vocab": 1024,
        "seq_len": 256, "batch": 4, "tokens": 4 * 256 * 40, "lr": 3e-3, "warmup": 5,
        "device": "cpu", "bf16": False, "compile": False,
        "dense": {"d_model": 64, "n_layer": 2, "n_head": 2, "mlp_hidden": 256},
        "wide": {"d_model": 64, "n_layer": 3, "n_head": 2, "mlp_hidden": 256},
        "seeds": (0,),
        "frontier": ((32, 1, 1, 128), (64, 2, 2, 256)),
        "frontier_tokens": (4 * 256 * 40, 4 * 256 * 20),
        "lyactl": _LYACTL | {"interval": 5, "min_steps_between_events": 10, "warmup_frac": 0.1},
        "gradual": {"ramp_end_frac": 0.5, "min_steps_between_events": 5},
        "freeze": {"start_frac": 0.5, "end_frac": 0.9, "layers": 1},
        "eval": {"tasks": ["bpb", "endings", "hellaswag"], "batch_size": 8, "limits": {"endings": 8, "bpb": 2}},
    },
}


_PRIORITY = {"lyactl-s0": 100, "dense-s0": 99, "lyactl-arch-scratch": 90, "small-dense": 90, "dense-short": 90,
             "random": 89, "magnitude": 89, "taylor": 89, "lyactl-budget25": 85, "lyactl-late": 84, "lyactl-gradual": 84, "lyactl-wide": 86, "lyactl-s1": 80, "dense-s1": 80, "lyactl-s2": 70,
             "dense-s2": 70, "freeze": 60, "frontier": 50}


def _steps(preset: dict, tokens: int) -> int:
    return max(1, tokens // (preset["batch"] * preset["seq_len"]))


def _job(preset: dict, arm: str, seed: int, model: dict, tokens: int, **extra) -> dict:
    steps = _steps(preset, tokens)
    flops_proxy = model["d_model"] ** 2 * model["n_layer"] * steps
    job = {"id": f"{arm}-s{seed}", "arm": arm, "seed": seed, "model": dict(model), "steps": steps,
           "policy": None, "needs": [], "derive": None, "cost": float(flops_proxy)}
    job.update(extra)
    return job


def plan(preset: dict, stage: str, **paths: str) -> list[dict]:
    """All jobs of ``stage`` ("1", "2" or "all"); ``paths`` (work, data, out) go in each."""
    dense, T = preset["dense"], preset["tokens"]
    jobs: list[dict] = []
    if stage in ("1", "all"):
        for s in preset["seeds"]:
            jobs.append(_job(preset, "dense", s, dense, T))
            jobs.append(_job(preset, "lyactl", s, dense, T, policy={"kind": "lyactl", **preset["lyactl"]}))
        jobs.append(_job(preset, "freeze", 0, dense, T, policy={"kind": "freeze", **preset["freeze"]}))
        for d, L, H, M in preset["frontier"]:
            for tok in preset["frontier_tokens"]:
                if tok != T and (d, L, H, M) not in preset.get("frontier_short", preset["frontier"]):
                    continue
                model = {"d_model": d, "n_layer": L, "n_head": H, "mlp_hidden": M}
                if model == dense and tok == T:
                    continue  # that point is the dense arm itself
                job = _job(preset, "frontier", 0, model, tok)
                job["id"] = f"frontier-d{d}-L{L}-t{tok // 1_000_000 or tok}-s0"
                jobs.append(job)
    if stage in ("2", "all"):
        need = {"needs": ["lyactl-s0"] if stage == "all" else [], "source": "lyactl-s0"}
        for arm in ("lyactl-arch-scratch", "small-dense", "dense-short"):
            jobs.append(_job(preset, arm, 0, dense, T, derive=arm, **need))
        # a replay runs on the seed of the lyactl run it replays (same init and data order as
        # that run and as dense on that seed: fully paired), for the first two seeds
        for rseed in preset["seeds"][:2]:
            src = f"lyactl-s{rseed}"
            rneed = {"needs": [src] if stage == "all" else [], "source": src}
            for rule in ("random", "magnitude", "taylor"):
                jobs.append(_job(preset, rule, rseed, dense, T, derive="replay",
                                 policy={"kind": "replay", "rule": rule, **preset["lyactl"]}, **rneed))
        jobs.append(_job(preset, "lyactl-budget25", 0, dense, T,
                         policy={"kind": "lyactl", **preset["lyactl"], "budget": 0.25}))
        # design change to try (docs/results.md): prune late, so most of training has the full
        # model; a smaller saving is taken where the model has learned most of what it will
        if "late" in preset:
            jobs.append(_job(preset, "lyactl-late", 0, dense, T, policy={"kind": "lyactl", **preset["lyactl"],
                                                                          **preset["late"]}))
        # design change (docs/results.md): start wide, prune to dense's compute
        if "wide" in preset:
            for s in preset["seeds"][:2]:
                jobs.append(_job(preset, "lyactl-wide", s, preset["wide"], T, derive="match-compute", match=dict(dense),
                                 policy={"kind": "lyactl", **preset["lyactl"]}))
        # design change 1 (docs/results.md): the same saving in several smaller cuts
        if "gradual" in preset:
            jobs.append(_job(preset, "lyactl-gradual", 0, dense, T, policy={"kind": "lyactl", **preset["lyactl"],
                                                                             **preset["gradual"]}))
    for j in jobs:  # queue priority: what unblocks or anchors the comparison first
        j["cost"] = _PRIORITY.get(j["id"], _PRIORITY.get(j["arm"], 0)) + j["cost"] * 1e-12
    common = {k: preset[k] for k in ("seq_len", "batch", "lr", "warmup", "device", "bf16", "compile", "vocab", "eval")}
    for j in jobs:
        j.update(common, **paths)
    return jobs

_DERIVED_SHAPE = ("lyactl-arch-scratch", "small-dense")  # starting shape known only at run time


def with_warmup(jobs: list[dict]) -> list[dict]:
    """``jobs`` with, when they compile, one untimed 3-step job per starting shape that each job
    of that shape needs (id ``warm-...``, arm "warm"). Jobs whose shape is derived at run time
    from another job compile cold; their records say so (no ``warmed`` flag)."""
    warm: dict[str, dict] = {}
    out = []
    for j in jobs:
        if not j.get("compile") or j.get("derive") in _DERIVED_SHAPE:
            out.append(j)
            continue
        m = j["model"]
        wid = f"warm-d{m['d_model']}-L{m['n_layer']}-H{m['n_head']}-M{m['mlp_hidden']}"
        warm.setdefault(wid, j | {"id": wid, "arm": "warm", "seed": 0, "steps": 3, "warmup": 1, "policy": None,
                                  "derive": None, "needs": [], "cost": 1000.0,
                                  "eval": j["eval"] | {"tasks": []}})
        out.append(j | {"needs": list(j.get("needs", [])) + [wid], "warmed": True})
    return list(warm.values()) + out


# A few minutes on one GPU: the whole pipeline (compile, events, recompiles, every eval task)
# at the h200 sizes, on 4 M tokens; for checking a machine before the real runs.
PRESETS["smoke"] = PRESETS["h200"] | {
    "tokens": 4_000_000, "seeds": (0,), "frontier": ((256, 4, 4, 1024),), "frontier_tokens": (4_000_000,),
    "lyactl": _LYACTL | {"interval": 10, "min_steps_between_events": 20},
    "freeze": {"start_frac": 0.5, "end_frac": 0.9, "layers": 2},
    "eval": {"tasks": ["bpb", "endings", "lambada", "hellaswag", "mmlu5"], "batch_size": 64,
             "limits": {"mmlu5": 5, "lambada": 1000}},
}
