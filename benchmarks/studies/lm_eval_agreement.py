"""Agreement of lyactl's HellaSwag, LAMBADA and MMLU 5-shot scoring with lm-evaluation-harness,
item by item.

Needs ``lm-eval`` (NOT a project dependency; install it in a separate virtual environment,
e.g. ``python -m venv --system-site-packages /tmp/lmeval && /tmp/lmeval/bin/pip install lm-eval accelerate``)
and runs offline: the rows are written to local JSON-lines files and loaded through task YAMLs
built from lm-eval's own (``hellaswag``: same ``process_docs`` and prompt; ``lambada_openai``
and the MMLU ``_default_template_yaml`` read from the installed package, only ``dataset_path``
replaced by ``json``; one MMLU task per subject with its description, 5-shot from the dev
split by ``first_n`` as lm-eval's ``mmlu`` does). One randomly initialised small Hugging Face
GPT-2 (GPT-2 tokenizer) is scored by both lm-eval's ``HFLM`` and ``lyactl_torch.evaluate``;
per-choice (per-item for LAMBADA) log-likelihoods and accuracies are compared. Writes
``benchmarks/results/lm_eval_agreement.json``.

Usage: /tmp/lmeval/bin/python -m benchmarks.studies.lm_eval_agreement [--n 50] [--n-lambada 100]
[--n-mmlu 3] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASK_YAML = """task: hellaswag_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def _setup_task(data_dir: Path, n: int, work: Path) -> Path:
    """Local copy of the first ``n`` rows and a task folder mirroring lm-eval's hellaswag."""
    import lm_eval.tasks.hellaswag as hs_pkg

    rows = work / "hellaswag_n.jsonl"
    with lzma.open(data_dir / "eval" / "hellaswag_val.jsonl.xz", "rt") as src, open(rows, "w") as dst:
        for i, line in zip(range(n), src):
            dst.write(line)
    task_dir = work / "tasks"
    task_dir.mkdir()
    shutil.copy(Path(hs_pkg.__path__[0]) / "utils.py", task_dir / "utils.py")
    (task_dir / "hellaswag_local.yaml").write_text(TASK_YAML.format(data=rows))
    return task_dir


def _local(yaml_text: str, files: dict[str, Path]) -> str:
    """lm-eval's task YAML with its hub dataset replaced by local JSON-lines files."""
    keep, in_tag = [], False
    for ln in yaml_text.splitlines():  # drop the hub dataset and the tag list (no group here)
        in_tag = ln.startswith("tag:") or (in_tag and ln.startswith("  - "))
        if not in_tag and not ln.startswith(("dataset_path:", "dataset_name:")):
            keep.append(ln)
    data = "\n".join(f"    {k}: {v}" for k, v in files.items())
    return "dataset_path: json\ndataset_kwargs:\n  data_files:\n" + data + "\n" + "\n".join(keep) + "\n"


def _setup_lambada(data_dir: Path, n: int, task_dir: Path) -> None:
    """lm-eval's ``lambada_openai`` on the first ``n`` rows; its ``text`` is our context + target."""
    import lm_eval.tasks.lambada as pkg

    rows = task_dir / "lambada_n.jsonl"
    with lzma.open(data_dir / "eval" / "lambada_openai_test.jsonl.xz", "rt") as src, open(rows, "w") as dst:
        for i, line in zip(range(n), src):
            r = json.loads(line)
            dst.write(json.dumps({"text": r["context"] + r["target"]}) + "\n")
    text = (Path(pkg.__path__[0]) / "lambada_openai.yaml").read_text().replace("task: lambada_openai", "task: lambada_local")
    (task_dir / "lambada_local.yaml").write_text(_local(text, {"test": rows}))


def _setup_mmlu(data_dir: Path, n: int, task_dir: Path) -> list[str]:
    """One task per subject (lm-eval's default MMLU template and description), the first ``n``
    test rows of each, few-shot pool the subject's dev rows. Returns the task names."""
    import lm_eval.tasks.mmlu as pkg

    template = (Path(pkg.__path__[0]) / "default" / "_default_template_yaml").read_text()
    by: dict[str, dict[str, list[str]]] = {}
    for split in ("test", "dev"):
        with lzma.open(data_dir / "eval" / f"mmlu_{split}.jsonl.xz", "rt") as src:
            for line in src:
                rows = by.setdefault(json.loads(line)["subject"], {"test": [], "dev": []})[split]
                if split == "dev" or len(rows) < n:
                    rows.append(line)
    names = []
    for subj, rows in sorted(by.items()):
        files = {}
        for split, lines in rows.items():
            files[split] = task_dir / f"mmlu_{subj}_{split}.jsonl"
            files[split].write_text("".join(lines))
        desc = f"The following are multiple choice questions (with answers) about {subj.replace('_', ' ')}."
        body = _local(template, files) + f"task: mmlu_local_{subj}\ndescription: {json.dumps(desc + chr(10) + chr(10))}\n"
        (task_dir / f"mmlu_local_{subj}.yaml").write_text(body)
        names.append(f"mmlu_local_{subj}")
    return names


def _mc_agreement(samples: list[dict], ours: dict, metrics: tuple[str, ...]) -> dict:
    """Per-choice log-likelihood differences and per-item agreement of ``metrics``."""
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    diffs = [abs(a - b) for x, y in zip(ours["logprobs"], theirs) for a, b in zip(x, y)]
    out = {"n_items": len(samples), "n_choices_compared": len(diffs), "max_abs_logprob_diff": max(diffs),
           "mean_abs_logprob_diff": sum(diffs) / len(diffs)}
    for m in metrics:
        out[f"{m}_items_agree"] = sum(float(s[m]) == a for s, a in zip(samples, ours[m]))
        out[f"lm_eval_{m}"] = sum(float(s[m]) for s in samples) / len(samples)
        out[f"lyactl_{m}"] = sum(ours[m]) / len(ours[m])
    return out


def _lambada_agreement(samples: list[dict], ours: dict) -> dict:
    ll = [float(s["filtered_resps"][0][0]) for s in samples]
    diffs = [abs(-a - b) for a, b in zip(ours["nll"], ll)]
    return {"n_items": len(samples), "max_abs_logprob_diff": max(diffs), "mean_abs_logprob_diff": sum(diffs) / len(diffs),
            "acc_items_agree": sum(float(s["acc"]) == a for s, a in zip(samples, ours["acc"])),
            "lm_eval_acc": sum(float(s["acc"]) for s in samples) / len(samples), "lyactl_acc": sum(ours["acc"]) / len(ours["acc"])}


def _mmlu_samples(samples: dict, names: list[str]) -> list[dict]:
    """lm-eval's MMLU samples in our item order (subject by subject, test-file order)."""
    return [s for name in sorted(names) for s in sorted(samples[name], key=lambda s: s["doc_id"])]


def _items_in_order(items: dict, ids: list[str]) -> dict:
    pos = {i: k for k, i in enumerate(items["id"])}
    return {key: [vals[pos[i]] for i in ids] for key, vals in items.items() if isinstance(vals, list)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50, help="HellaSwag items")
    p.add_argument("--n-lambada", type=int, default=100)
    p.add_argument("--n-mmlu", type=int, default=3, help="test items per MMLU subject (57 subjects, 5-shot)")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_eval_agreement.json")
    args = p.parse_args()
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from lyactl_torch.evaluate import evaluate
    from lyactl_torch.tokenizer import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=512, n_embd=64, n_layer=2, n_head=2)).eval()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend, eos_token="<|endoftext|>")
    assert hf_tok.encode("Hello world", add_special_tokens=False) == [15496, 995]
    lm = HFLM(pretrained=model, tokenizer=hf_tok, batch_size=8, device="cpu", max_length=512)
    secs, res = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = _setup_task(args.data_dir, args.n, Path(tmp))
        _setup_lambada(args.data_dir, args.n_lambada, task_dir)
        mmlu_names = _setup_mmlu(args.data_dir, args.n_mmlu, task_dir)
        tm = TaskManager(include_path=str(task_dir))
        t0 = time.perf_counter()
        for tasks, shots in ((["hellaswag_local", "lambada_local"], 0), (mmlu_names, 5)):
            r = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, log_samples=True, num_fewshot=shots)
            res.update(r["samples"])
        secs["lm_eval"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    kw = {"device": "cpu", "batch_size": 8, "seq_len": 512}
    hs = evaluate(model, tok, ["hellaswag"], args.data_dir, limit=args.n, **kw)["tasks"]["hellaswag"]["items"]
    la = evaluate(model, tok, ["lambada"], args.data_dir, limit=args.n_lambada, **kw)["tasks"]["lambada"]["items"]
    mm = evaluate(model, tok, ["mmlu5"], args.data_dir, limit=args.n_mmlu, **kw)["tasks"]["mmlu5"]["items"]
    secs["lyactl"] = round(time.perf_counter() - t0, 1)
    mm_ids = [f"{n[len('mmlu_local_'):]}/{k}" for n in sorted(mmlu_names) for k in range(len(res[n]))]
    out = {
        "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
        "model": "GPT2LMHeadModel(n_embd=64, n_layer=2, n_head=2, n_positions=512), random init seed 0",
        "hellaswag": _mc_agreement(sorted(res["hellaswag_local"], key=lambda s: s["doc_id"]), hs, ("acc", "acc_norm")),
        "lambada": _lambada_agreement(sorted(res["lambada_local"], key=lambda s: s["doc_id"]), la),
        "mmlu_5shot": _mc_agreement(_mmlu_samples(res, mmlu_names), _items_in_order(mm, mm_ids), ("acc",)),
        "seconds": secs, "device": "cpu",
        "setup": ("lm-eval installed with pip in a separate venv (--system-site-packages; plus accelerate, which "
                  "HFLM imports); lm-eval's own task YAMLs with dataset_path json (hellaswag: its process_docs and "
                  "prompt; lambada_openai; MMLU default template, one task per subject, 5-shot first_n from dev); "
                  "HF_DATASETS_OFFLINE=1, no downloads; same HF model object scored by HFLM (max_length 512, "
                  "batch 8) and by lyactl_torch.evaluate (seq_len 512, batch 8)"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
