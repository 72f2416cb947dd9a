"""Task runner on the fixtures: scores equal hand-computed log-likelihoods; CLI, compare, tokenizer."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lyactl.errors import DataFileError, InvalidArgumentError
from lyactl.app.evaldata import read_hellaswag, read_lambada
from lyactl_torch.evaluate import bpb_requests, compare, encode_pair, evaluate, run_eval_cli
from lyactl_torch.tokenizer import load_tokenizer

DATA = Path(__file__).parent / "fixtures" / "data"
TOK = load_tokenizer()
V = TOK.vocab_size


class LowRankBigram(torch.nn.Module):
    """logits[b, t] = E[x[b, t]] @ U (a bigram model over the GPT-2 vocabulary)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = torch.nn.Parameter(torch.randn(V, 4, generator=g))
        self.U = torch.nn.Parameter(torch.randn(4, V, generator=g))
        self.seq_len = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.E[x] @ self.U


def bigram_logprob(model: LowRankBigram, prev: list[int], nxt: list[int]) -> float:
    """Sum of log p(nxt_k | prev_k), float64, straight from the weights (no batching, no padding)."""
    with torch.no_grad():
        logits = (model.E[torch.tensor(prev)] @ model.U).double()
    return float(sum(logits[k, y] - torch.logsumexp(logits[k], 0) for k, y in enumerate(nxt)))


@pytest.fixture(scope="module")
def model() -> LowRankBigram:
    return LowRankBigram(seed=0)


@pytest.fixture(scope="module")
def result(model: LowRankBigram) -> dict:
    tasks = ["bpb", "hellaswag", "mmlu0", "mmlu5", "lambada", "endings"]
    return evaluate(model, TOK, tasks, DATA, device="cpu", batch_size=4, seq_len=64)


def test_shipped_tokenizer() -> None:
    assert TOK.vocab_size == 50257 and TOK.eot_id == 50256
    assert TOK.encode("Hello world") == [15496, 995]
    assert TOK.decode(TOK.encode("Hello world")) == "Hello world"


def test_tokenizer_from_directory_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    TOK.backend.save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(tmp_path).encode("Hello world") == [15496, 995]
    with pytest.raises(DataFileError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{")
    with pytest.raises(DataFileError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "bad")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match="tokenizers"):
        load_tokenizer()


def test_encode_pair_moves_trailing_space() -> None:
    r = encode_pair(TOK, "The cat ", "sat")
    assert list(r.context) == TOK.encode("The cat") and list(r.continuation) == TOK.encode(" sat")
    assert encode_pair(TOK, "", "Hi").context == (TOK.eot_id,)


def test_hellaswag_scores_equal_hand_computed(model: LowRankBigram, result: dict) -> None:
    items = read_hellaswag(DATA / "eval" / "hellaswag_val.jsonl.xz")
    per = result["tasks"]["hellaswag"]["items"]
    for it, lps, acc, acc_norm in zip(items, per["logprobs"], per["acc"], per["acc_norm"]):
        ctx = TOK.encode(it.context)
        want = []
        for choice in it.choices:
            whole = TOK.encode(it.context + " " + choice)
            want.append(bigram_logprob(model, whole[len(ctx) - 1 : -1], whole[len(ctx):]))
        assert lps == pytest.approx(want, abs=1e-3)
        assert acc == float(max(range(4), key=lambda k: want[k]) == it.label)
        norm = [w / len(c) for w, c in zip(want, it.choices)]
        assert acc_norm == float(max(range(4), key=lambda k: norm[k]) == it.label)
    m = result["tasks"]["hellaswag"]["metrics"]["acc"]
    assert m["value"] == pytest.approx(sum(per["acc"]) / 8) and m["n"] == 8


def test_lambada_scores_equal_hand_computed(model: LowRankBigram, result: dict) -> None:
    items = read_lambada(DATA / "eval" / "lambada_openai_test.jsonl.xz")
    per = result["tasks"]["lambada"]
    for it, nll in zip(items, per["items"]["nll"]):
        ctx, whole = TOK.encode(it.context), TOK.encode(it.context + it.target)
        assert -nll == pytest.approx(bigram_logprob(model, whole[len(ctx) - 1 : -1], whole[len(ctx):]), abs=1e-3)
    mean_nll = sum(per["items"]["nll"]) / len(items)
    assert per["metrics"]["ppl"]["value"] == pytest.approx(math.exp(mean_nll))


def test_bpb_equals_hand_computed_and_chunking_convention(model: LowRankBigram, result: dict) -> None:
    per = result["tasks"]["bpb"]["items"]
    from lyactl.app.evaldata import read_corpus, split_heldout

    docs = split_heldout(read_corpus(DATA / "corpus"))
    total_nll, total_bytes = 0.0, 0
    for d, nll in zip(docs, per["nll"]):
        t = [TOK.eot_id] + TOK.encode(d.text)
        want = -bigram_logprob(model, t[:-1], t[1:])  # a bigram model is blind to the chunking
        assert nll == pytest.approx(want, rel=1e-5)
        total_nll += want
        total_bytes += len(d.text.encode())
    assert result["tasks"]["bpb"]["metrics"]["bpb"]["value"] == pytest.approx(total_nll / (math.log(2) * total_bytes), rel=1e-5)
    reqs = bpb_requests(TOK, docs[0].text, 7)
    flat = [y for r in reqs for y in r.continuation]
    assert flat == TOK.encode(docs[0].text) and reqs[0].context == (TOK.eot_id,)
    assert all(len(r.context) + len(r.continuation) - 1 <= 7 for r in reqs)


def test_mmlu_macro_and_subjects(result: dict) -> None:
    for task in ("mmlu0", "mmlu5"):
        r = result["tasks"][task]
        subj = r["subjects"]
        assert set(subj) == {"abstract_algebra", "astronomy"}
        assert r["metrics"]["acc_macro"]["value"] == pytest.approx(sum(s["value"] for s in subj.values()) / 2)
        assert r["metrics"]["acc"]["n"] == 6


def test_compare_identical_and_different(model: LowRankBigram, result: dict) -> None:
    same = compare(result, result, n_resamples=200)
    for task, rows in same.items():
        for row in rows.values():
            assert row["diff"] == 0.0 and row["ci_low"] == row["ci_high"] == 0.0
            assert row.get("p_mcnemar", 1.0) == 1.0
    other = evaluate(LowRankBigram(seed=1), TOK, ["hellaswag", "bpb"], DATA, device="cpu", batch_size=8, seq_len=64)
    diff = compare(result, other, n_resamples=200)
    assert set(diff) == {"hellaswag", "bpb"}
    h = diff["hellaswag"]["acc"]
    assert h["diff"] == pytest.approx(h["a"] - h["b"]) and h["ci_low"] <= h["diff"] <= h["ci_high"]
    assert diff["bpb"]["bpb"]["diff"] == pytest.approx(
        result["tasks"]["bpb"]["metrics"]["bpb"]["value"] - other["tasks"]["bpb"]["metrics"]["bpb"]["value"])
    with pytest.raises(InvalidArgumentError, match="item ids"):
        limited = evaluate(model, TOK, ["hellaswag"], DATA, device="cpu", batch_size=8, seq_len=64, limit=2)
        compare(result, limited)


def test_bad_task_name(model: LowRankBigram) -> None:
    with pytest.raises(InvalidArgumentError, match="tasks"):
        evaluate(model, TOK, ["hellaswagg"], DATA, device="cpu", batch_size=2, seq_len=16)


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused() -> None:
    from lyactl_torch.model import GPT, GPTConfig

    small = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=1, n_head=2, head_dim=16, mlp_hidden=64))
    with pytest.raises(InvalidArgumentError, match=r"tokenizer: expected at most 64 token ids.*found .50257 ids"):
        evaluate(small, TOK, ["hellaswag"], DATA, device="cpu", batch_size=2, seq_len=16)


def test_cli_writes_strict_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.json"
    load = lambda path, device: LowRankBigram(seed=0)  # noqa: E731
    argv = ["ckpt.pt", "--tasks", "hellaswag,mmlu0", "--data-dir", str(DATA), "--json", str(out),
            "--limit", "3", "--device", "cpu"]
    assert run_eval_cli(argv, load) == 0
    text = capsys.readouterr().out
    assert "hellaswag" in text and "acc_macro" in text
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert data["config"]["seq_len"] == 64 and data["tasks"]["hellaswag"]["metrics"]["acc"]["n"] == 3
    assert run_eval_cli(argv + ["--compare-with", str(out)], load) == 0
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val_ids": ["prose:2", "manual:3"]}))
    argv_bpb = ["c", "--tasks", "bpb", "--data-dir", str(DATA), "--split", str(split), "--json", str(out)]
    assert run_eval_cli(argv_bpb, load) == 0
    assert json.loads(out.read_text())["tasks"]["bpb"]["items"]["id"] == ["prose:2", "manual:3"]
    assert run_eval_cli(["ckpt.pt", "--tasks", "nope", "--data-dir", str(DATA)], load) == 2
    assert run_eval_cli(["ckpt.pt", "--tasks", "hellaswag", "--data-dir", str(tmp_path)], load) == 2
