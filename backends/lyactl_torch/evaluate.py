"""Evaluation task runner (bpb, HellaSwag, MMLU 0/5-shot, LAMBADA, corpus endings) and its CLI.

Scoring follows lm-evaluation-harness v0.4 (see docs/evaluation.md):

* multiple choice: continuation ``" " + choice``; acc = argmax of the summed log-probability,
  acc_norm = argmax of logprob / len(choice) in characters (lm-eval's acc_norm),
  acc_bytes = argmax of logprob / len(choice) in UTF-8 bytes (lm-eval's acc_bytes);
* (context, continuation) tokenisation as lm-eval's ``_encode_pair``: trailing spaces of the
  context move to the continuation; ``whole = enc(context + continuation)``, the continuation
  tokens are ``whole[len(enc(context)):]``;
* LAMBADA: acc = every target token is the greedy choice; ``ppl = exp(mean_i NLL_i)`` over
  items (lm-eval's per-word perplexity), ``ppl_token = exp(sum NLL / sum tokens)``;
* bpb: ``sum NLL (nats) / (ln 2 * UTF-8 bytes)``, documents cut into non-overlapping chunks of
  ``seq_len`` predicted tokens, the first token of a document conditioned on EOT.

Results are plain JSON-ready dicts holding per-item scores, so :func:`compare` can pair two
models on the same items (paired bootstrap + exact McNemar).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lyactl.app.endings import build_endings_task
from lyactl.errors import InvalidArgumentError, NonFiniteError, bad_arg
from lyactl.app.evaldata import MCItem, mmlu_items, read_corpus, read_hellaswag, read_lambada, read_mmlu, select_docs, split_heldout
from lyactl.app.significance import mcnemar_exact, paired_bootstrap, stderr_mean, stderr_weighted_mean, weighted_mean

from .scoring import Request, mc_predictions, score_requests
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["TASKS", "evaluate", "compare", "run_eval_cli", "encode_pair", "bpb_requests"]

TASKS = ("bpb", "hellaswag", "mmlu0", "mmlu5", "lambada", "endings")
ENDINGS_DEFAULT_ITEMS = 1000


def encode_pair(tok: Tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's ``_encode_pair`` (an empty context becomes ``[eot]``)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        return Request((tok.eot_id,), tuple(tok.encode(continuation)))
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return Request(tuple(ctx), tuple(whole[len(ctx):]))


def _metric(value: float, stderr: float, n: int) -> dict:
    return {"value": float(value), "stderr": float(stderr), "n": int(n)}


def _check_finite(task: str, values: Sequence[float]) -> None:
    if not all(math.isfinite(v) for v in values):
        raise NonFiniteError(bad_arg(f"{task} log-likelihoods", "finite values", "NaN or inf (model output)"))


def _run_mc(task: str, model: Any, tok: Tokenizer, items: Sequence[MCItem], **kw: Any) -> dict:
    """Score every choice of every item; acc, acc_norm (chars), acc_bytes (UTF-8 bytes)."""
    reqs = [encode_pair(tok, it.context, cont) for it in items for cont in it.continuations]
    scored = score_requests(model, reqs, **kw)
    _check_finite(task, [s.logprob for s in scored])
    per: dict[str, list] = {"id": [], "group": [], "acc": [], "acc_norm": [], "acc_bytes": [], "logprobs": []}
    k = 0
    for it in items:
        lp = [s.logprob for s in scored[k : k + len(it.choices)]]
        k += len(it.choices)
        pred, pred_norm = mc_predictions(lp, [len(c) for c in it.choices])
        _, pred_bytes = mc_predictions(lp, [len(c.encode("utf-8")) for c in it.choices])
        per["id"].append(it.id)
        per["group"].append(it.group)
        per["logprobs"].append(lp)
        for key, p in (("acc", pred), ("acc_norm", pred_norm), ("acc_bytes", pred_bytes)):
            per[key].append(float(p == it.label))
    metrics = {m: _metric(sum(per[m]) / len(items), stderr_mean(per[m]), len(items)) for m in ("acc", "acc_norm", "acc_bytes")}
    return {"metrics": metrics, "items": per}


def _mmlu_summary(result: dict) -> dict:
    """Add per-subject accuracy and the macro average (mean over subjects) to an MMLU result."""
    per = result["items"]
    subjects: dict[str, list[float]] = {}
    for g, a in zip(per["group"], per["acc"]):
        subjects.setdefault(g, []).append(a)
    accs = {s: sum(v) / len(v) for s, v in sorted(subjects.items())}
    ses = [stderr_mean(v) if len(v) > 1 else 0.0 for v in subjects.values()]
    macro_se = math.sqrt(sum(se * se for se in ses)) / len(ses)
    result["metrics"]["acc_macro"] = _metric(sum(accs.values()) / len(accs), macro_se, len(per["acc"]))
    result["subjects"] = {s: _metric(accs[s], stderr_mean(subjects[s]) if len(subjects[s]) > 1 else float("nan"),
                                     len(subjects[s])) for s in accs}
    return result


def _run_lambada(model: Any, tok: Tokenizer, data_dir: Path, limit: int | None, **kw: Any) -> dict:
    items = read_lambada(data_dir / "eval" / "lambada_openai_test.jsonl.xz", limit)
    scored = score_requests(model, [encode_pair(tok, it.context, it.target) for it in items], **kw)
    _check_finite("lambada", [s.logprob for s in scored])
    nll = [-s.logprob for s in scored]
    acc = [float(s.is_greedy) for s in scored]
    n_tok = [s.n_tokens for s in scored]
    mean_nll = sum(nll) / len(nll)
    metrics = {
        "acc": _metric(sum(acc) / len(acc), stderr_mean(acc), len(acc)),
        # delta method: se(exp(m)) ~= exp(m) * se(m)
        "ppl": _metric(math.exp(mean_nll), math.exp(mean_nll) * stderr_mean(nll), len(nll)),
        "ppl_token": _metric(math.exp(sum(nll) / sum(n_tok)), float("nan"), len(nll)),
    }
    return {"metrics": metrics, "items": {"id": [it.id for it in items], "acc": acc, "nll": nll, "n_tokens": n_tok}}


def bpb_requests(tok: Tokenizer, text: str, seq_len: int) -> list[Request]:
    """Non-overlapping chunks of ``seq_len`` predicted tokens over ``[eot] + enc(text)``.

    Chunk k feeds ``t[k L : k L + L]`` and predicts ``t[k L + 1 : k L + L + 1]``; every token of
    the text is predicted exactly once, the first one conditioned on EOT only.
    """
    t = [tok.eot_id] + tok.encode(text)
    return [Request((t[k],), tuple(t[k + 1 : k + 1 + seq_len])) for k in range(0, len(t) - 1, seq_len)]


def _run_bpb(model: Any, tok: Tokenizer, docs: Sequence[Any], seq_len: int, **kw: Any) -> dict:
    docs = [d for d in docs if d.text]
    reqs = [bpb_requests(tok, d.text, seq_len) for d in docs]
    scored = score_requests(model, [r for rs in reqs for r in rs], max_len=seq_len, **kw)
    _check_finite("bpb", [s.logprob for s in scored])
    nll, k = [], 0
    for rs in reqs:
        nll.append(-sum(s.logprob for s in scored[k : k + len(rs)]))
        k += len(rs)
    nbytes = [len(d.text.encode("utf-8")) for d in docs]
    bpb = [n / (math.log(2) * b) for n, b in zip(nll, nbytes)]
    src = [d.src for d in docs]
    metrics = {"bpb": _metric(weighted_mean(bpb, nbytes), stderr_weighted_mean(bpb, nbytes), len(docs))}
    for s in sorted(set(src)):
        x = [(v, b) for v, b, ss in zip(bpb, nbytes, src) if ss == s]
        se = stderr_weighted_mean(*zip(*x)) if len(x) > 1 else float("nan")
        metrics[f"bpb/{s}"] = _metric(weighted_mean(*zip(*x)), se, len(x))
    ids = [getattr(d, "doc_id", None) or f"{d.src}:{i}" for i, d in enumerate(docs)]
    return {"metrics": metrics, "items": {"id": ids, "src": src, "nll": nll, "bytes": nbytes, "bpb": bpb},
            "convention": "non-overlapping chunks of seq_len tokens; first token conditioned on EOT"}


def _limit_per_source(docs: Sequence[Any], limit: int | None) -> list[Any]:
    if limit is None:
        return list(docs)
    seen: dict[str, int] = {}
    out = []
    for d in docs:
        seen[d.src] = seen.get(d.src, 0) + 1
        if seen[d.src] <= limit:
            out.append(d)
    return out


def _model_vocab(model: Any) -> int | None:
    """The number of token ids the model embeds (its config's ``vocab_size``, else the rows of
    its input embedding), None when neither is found."""
    cfg = getattr(model, "config", getattr(model, "cfg", None))
    n = getattr(cfg, "vocab_size", None)
    if isinstance(n, int):
        return n
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else getattr(model, "wte", None)
    weight = getattr(emb, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def _check_vocab(model: Any, tokenizer: Tokenizer) -> None:
    """Refuse a tokenizer whose ids the model cannot embed (scores would be garbage or crash
    deep inside an embedding lookup)."""
    n = _model_vocab(model)
    if n is not None and tokenizer.vocab_size > n:
        raise InvalidArgumentError(bad_arg("tokenizer", f"at most {n} token ids (the model's vocabulary)",
                                           f"{tokenizer.vocab_size} ids in {tokenizer.name!r}"))


def evaluate(
    model: Any,
    tokenizer: Tokenizer,
    tasks: Sequence[str],
    data_dir: Path,
    *,
    device: torch.device | str,
    batch_size: int,
    limit: int | None = None,
    seq_len: int,
    heldout: Sequence[Any] | None = None,
) -> dict:
    """Run ``tasks`` and return ``{"config": ..., "tasks": {task: {"metrics", "items", ...}}}``.

    ``data_dir`` holds ``eval/*.jsonl.xz`` and ``corpus/*.jsonl.xz`` (the layout of
    ``shared/data``). ``limit``: first N items (HellaSwag, LAMBADA), first N per subject
    (MMLU), first N held-out documents per source (bpb), N items (endings; default 1000).
    ``heldout``: documents with ``.src``/``.text`` for bpb/endings; default
    ``split_heldout(read_corpus(data_dir / "corpus"))``. The model is put in eval mode.
    """
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InvalidArgumentError(bad_arg("tasks", f"a non-empty subset of {TASKS}", list(tasks)))
    if limit is not None and limit < 1:
        raise InvalidArgumentError(bad_arg("limit", "None or an integer >= 1", limit))
    _check_vocab(model, tokenizer)
    data_dir = Path(data_dir)
    if hasattr(model, "eval"):
        model.eval()
    kw = {"max_len": seq_len, "batch_size": batch_size, "device": device}
    if heldout is None and ({"bpb", "endings"} & set(tasks)):
        heldout = split_heldout(read_corpus(data_dir / "corpus"))
    out: dict[str, dict] = {}
    for task in tasks:
        if task == "hellaswag":
            items = read_hellaswag(data_dir / "eval" / "hellaswag_val.jsonl.xz", limit)
            out[task] = _run_mc(task, model, tokenizer, items, **kw)
        elif task in ("mmlu0", "mmlu5"):
            test, dev = (read_mmlu(data_dir / "eval" / f"mmlu_{s}.jsonl.xz") for s in ("test", "dev"))
            items = mmlu_items(test, dev, 0 if task == "mmlu0" else 5, limit)
            out[task] = _mmlu_summary(_run_mc(task, model, tokenizer, items, **kw))
        elif task == "lambada":
            out[task] = _run_lambada(model, tokenizer, data_dir, limit, **kw)
        elif task == "bpb":
            kw_b = {k: v for k, v in kw.items() if k != "max_len"}
            out[task] = _run_bpb(model, tokenizer, _limit_per_source(heldout, limit), seq_len, **kw_b)
        else:
            raw = build_endings_task(heldout, limit or ENDINGS_DEFAULT_ITEMS, seed=0)
            items = [MCItem(f"{r['src']}/{i}", r["ctx"], tuple(r["endings"]), r["label"], r["src"]) for i, r in enumerate(raw)]
            out[task] = _run_mc(task, model, tokenizer, items, **kw)
    config = {"tasks": list(tasks), "limit": limit, "seq_len": seq_len, "batch_size": batch_size,
              "device": str(device), "tokenizer": tokenizer.name, "data_dir": str(data_dir)}
    return {"config": config, "tasks": out}


_BINARY = ("acc", "acc_norm", "acc_bytes")  # 0/1 per item: McNemar applies
_COMPARED = {"bpb": ("bpb",), "lambada": ("acc", "nll")}  # other tasks: _BINARY


def compare(result_a: dict, result_b: dict, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Per task and per-item metric: mean(A) - mean(B) with a paired bootstrap CI, and the exact
    McNemar p-value for 0/1 metrics. Tasks must have been run on the same items (same ids)."""
    out: dict[str, dict] = {}
    for task in sorted(set(result_a["tasks"]) & set(result_b["tasks"])):
        ia, ib = result_a["tasks"][task]["items"], result_b["tasks"][task]["items"]
        if ia["id"] != ib["id"]:
            raise InvalidArgumentError(bad_arg(f"{task} items", "the same item ids in both results", "different ids"))
        w = ia.get("bytes") if task == "bpb" else None
        out[task] = {}
        for key in _COMPARED.get(task, _BINARY):
            d = paired_bootstrap(ia[key], ib[key], weights=w, n_resamples=n_resamples, seed=seed)
            row = {"a": weighted_mean(ia[key], w), "b": weighted_mean(ib[key], w), "diff": d.diff,
                   "ci_low": d.ci_low, "ci_high": d.ci_high, "level": d.level, "n": d.n}
            if key in _BINARY:
                mc = mcnemar_exact(ia[key], ib[key])
                row.update(n10=mc.n10, n01=mc.n01, p_mcnemar=mc.p_value)
            out[task][key] = row
    return out


def _json_ready(x: Any) -> Any:
    """NaN/inf floats become None (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    return x


def _table(result: dict) -> str:
    lines = [f"{'task':<10} {'metric':<24} {'value':>10} {'± stderr':>10} {'n':>7}"]
    for task, r in result["tasks"].items():
        for name, m in r["metrics"].items():
            lines.append(f"{task:<10} {name:<24} {m['value']:>10.4f} {m['stderr']:>10.4f} {m['n']:>7d}")
    return "\n".join(lines)


def _infer_seq_len(model: Any) -> int:
    cfg = getattr(model, "config", None)
    for obj, name in ((model, "seq_len"), (model, "max_seq_len"), (cfg, "seq_len"),
                      (cfg, "max_position_embeddings"), (cfg, "n_positions")):
        value = getattr(obj, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lyactl eval", description="Offline evaluation (lm-eval conventions).")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--tasks", default="bpb,hellaswag,mmlu0,lambada", help=f"comma list of {','.join(TASKS)}")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--json", type=Path, default=None, help="write the full result (with per-item scores) here")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=None, help="default: from the model, else 1024")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json(.xz) or folder; default GPT-2")
    p.add_argument("--split", type=Path, default=None,
                   help="JSON with 'val_ids' (a run's recorded split) naming the held-out documents for bpb/endings")
    p.add_argument("--compare-with", type=Path, default=None, help="a previous --json result to compare against")
    return p


def run_eval_cli(argv: Sequence[str] | None, load_model: Callable[[Path, str], torch.nn.Module]) -> int:
    """Parse ``argv``, load the model with ``load_model(checkpoint, device)``, evaluate, print a
    table (and a comparison if ``--compare-with``), write ``--json``. Returns the exit status."""
    args = _parser().parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        tok = load_tokenizer(args.tokenizer)
        model = load_model(args.checkpoint, args.device)
        seq_len = args.seq_len or _infer_seq_len(model)
        heldout = None
        if args.split is not None:
            val_ids = json.loads(args.split.read_text())["val_ids"]
            heldout = select_docs(read_corpus(args.data_dir / "corpus"), val_ids)
        result = evaluate(model, tok, tasks, args.data_dir, device=args.device, batch_size=args.batch_size,
                          limit=args.limit, seq_len=seq_len, heldout=heldout)
        result["config"]["checkpoint"] = str(args.checkpoint)
        print(_table(result))
        if args.compare_with is not None:
            other = json.loads(args.compare_with.read_text())
            result["comparison"] = compare(result, other)
            print(json.dumps(result["comparison"], indent=1))
    except (ValueError, OSError, TypeError, KeyError) as exc:
        print(f"lyactl eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_ready(result), indent=1, allow_nan=False))
    return 0
