"""Agreement of lyactl's HellaSwag scoring with lm-evaluation-harness, item by item.

Needs ``lm-eval`` (NOT a project dependency; install it in a separate virtual environment,
e.g. ``python -m venv --system-site-packages /tmp/lmeval && /tmp/lmeval/bin/pip install lm-eval accelerate``)
and runs offline: the HellaSwag rows are written to a local JSON-lines file and loaded through a
task YAML that mirrors lm-eval's own ``hellaswag`` task (same ``process_docs``, same prompt), with
``dataset_path: json``. One randomly initialised small Hugging Face GPT-2 (GPT-2 tokenizer) is
scored by both lm-eval's ``HFLM`` and ``lyactl_torch.evaluate``; per-choice log-likelihoods,
acc and acc_norm are compared. Writes ``benchmarks/results/lm_eval_agreement.json``.

Usage: /tmp/lmeval/bin/python benchmarks/lm_eval_agreement.py [--n 50] [--data-dir ../shared/data]
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

ROOT = Path(__file__).resolve().parents[1]
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50)
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
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = _setup_task(args.data_dir, args.n, Path(tmp))
        t0 = time.perf_counter()
        lm = HFLM(pretrained=model, tokenizer=hf_tok, batch_size=8, device="cpu", max_length=512)
        res = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag_local"], task_manager=TaskManager(include_path=str(task_dir)),
                                      log_samples=True, num_fewshot=0)
        t_lm = time.perf_counter() - t0
    samples = sorted(res["samples"]["hellaswag_local"], key=lambda s: s["doc_id"])
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    t0 = time.perf_counter()
    ours = evaluate(model, tok, ["hellaswag"], args.data_dir, device="cpu", batch_size=8, limit=args.n, seq_len=512)
    t_ours = time.perf_counter() - t0
    mine = ours["tasks"]["hellaswag"]["items"]
    diffs = [abs(a - b) for x, y in zip(mine["logprobs"], theirs) for a, b in zip(x, y)]
    out = {
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "unknown",
        "model": "GPT2LMHeadModel(n_embd=64, n_layer=2, n_head=2, n_positions=512), random init seed 0",
        "n_items": len(samples), "n_choices_compared": len(diffs),
        "max_abs_logprob_diff": max(diffs), "mean_abs_logprob_diff": sum(diffs) / len(diffs),
        "acc_items_agree": sum(float(s["acc"]) == a for s, a in zip(samples, mine["acc"])),
        "acc_norm_items_agree": sum(float(s["acc_norm"]) == a for s, a in zip(samples, mine["acc_norm"])),
        "lm_eval_acc": res["results"]["hellaswag_local"]["acc,none"],
        "lm_eval_acc_norm": res["results"]["hellaswag_local"]["acc_norm,none"],
        "lyactl_acc": ours["tasks"]["hellaswag"]["metrics"]["acc"]["value"],
        "lyactl_acc_norm": ours["tasks"]["hellaswag"]["metrics"]["acc_norm"]["value"],
        "seconds": {"lm_eval": round(t_lm, 1), "lyactl": round(t_ours, 1)},
        "device": "cpu",
        "setup": ("lm-eval installed with pip in a separate venv (--system-site-packages; plus accelerate, which "
                  "HFLM imports); lm-eval's own hellaswag process_docs/prompt via a local task YAML with "
                  "dataset_path json; HF_DATASETS_OFFLINE=1, no downloads; same HF model object scored by HFLM "
                  "(max_length 512, batch 8) and by lyactl_torch.evaluate (seq_len 512, batch 8)"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
