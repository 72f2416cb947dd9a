"""Readers of the evaluation files: lm-eval prompt formats and clear errors on bad input."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyactl.errors import DataFileError, InvalidArgumentError
from lyactl.app.evaldata import (
    MMLURow,
    mmlu_items,
    preprocess_hellaswag,
    read_corpus,
    read_hellaswag,
    read_lambada,
    read_mmlu,
    select_docs,
    split_heldout,
)

DATA = Path(__file__).parent / "fixtures" / "data"


def _raw(name: str) -> list[dict]:
    with lzma.open(DATA / "eval" / name, "rt") as fh:
        return [json.loads(line) for line in fh]


def test_hellaswag_fixture_matches_lm_eval_formula() -> None:
    raw = _raw("hellaswag_val.jsonl.xz")
    items = read_hellaswag(DATA / "eval" / "hellaswag_val.jsonl.xz")
    assert len(items) == len(raw) == 8
    for row, it in zip(raw, items):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        assert it.context == preprocess_hellaswag(row["activity_label"] + ": " + ctx)
        assert it.context.startswith(row["activity_label"].strip() + ":")
        assert it.label == row["label"] and len(it.choices) == 4
        assert all(c.startswith(" ") for c in it.continuations)
        assert all("[" not in s and "  " not in s for s in (it.context, *it.choices))
    assert len(read_hellaswag(DATA / "eval" / "hellaswag_val.jsonl.xz", limit=3)) == 3


def test_preprocess_hand_example() -> None:
    text = " Label: [header] How to x [title] Do y. [step] Z "
    # strip; " [title]" -> ". "; drop [...]; "  " -> " "
    assert preprocess_hellaswag(text) == "Label: How to x. Do y. Z"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .[]")), max_size=40))
def test_preprocess_removes_closed_brackets(text: str) -> None:
    out = preprocess_hellaswag(text)
    assert re.search(r"\[.*?\]", out) is None
    assert len(out) <= len(text) + text.count(" [title]")


def test_mmlu_zero_shot_prompt_exact() -> None:
    row = MMLURow(" What is 1+1? ", ("1", "2", "3", "4"), 1, "high_school_math")
    (item,) = mmlu_items([row], [], 0)
    assert item.context == (
        "The following are multiple choice questions (with answers) about high school math.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    )
    assert item.continuations == (" A", " B", " C", " D") and item.label == 1


def test_mmlu_five_shot_uses_first_dev_rows_of_subject() -> None:
    test = read_mmlu(DATA / "eval" / "mmlu_test.jsonl.xz")
    dev = read_mmlu(DATA / "eval" / "mmlu_dev.jsonl.xz")
    items = mmlu_items(test, dev, 5)
    assert len(items) == len(test) == 6
    for row, it in zip(test, items):
        shots = [d for d in dev if d.subject == row.subject][:5]
        letters = re.findall(r"\nAnswer: ([ABCD])\n\n", it.context)
        assert letters == ["ABCD"[s.answer] for s in shots]
        assert it.context.endswith(row.question.strip() + "\n" + "\n".join(
            f"{L}. {c}" for L, c in zip("ABCD", row.choices)) + "\nAnswer:")
        assert it.context.count("The following are") == 1 and it.group == row.subject
    assert len(mmlu_items(test, dev, 0, limit=1)) == 2  # one per subject
    with pytest.raises(InvalidArgumentError, match="dev rows"):
        mmlu_items(test, dev, 6)


def test_lambada_targets_keep_leading_space() -> None:
    items = read_lambada(DATA / "eval" / "lambada_openai_test.jsonl.xz")
    assert len(items) == 8
    assert all(it.target.startswith(" ") and " " not in it.target.strip() for it in items)


def test_corpus_and_heldout_split() -> None:
    docs = read_corpus(DATA / "corpus")
    assert {d.src for d in docs} == {"prose", "manual"} and len(docs) == 6
    h1, h2 = split_heldout(docs, 0.3, seed=1), split_heldout(docs, 0.3, seed=1)
    assert h1 == h2 and {d.src for d in h1} == {"prose", "manual"}
    assert all(sum(d.src == s for d in h1) == 1 for s in ("prose", "manual"))
    with pytest.raises(InvalidArgumentError, match="fraction"):
        split_heldout(docs, 1.5)
    picked = select_docs(docs, ["manual:2", "prose:1"])
    assert [(d.src, d.line) for d in picked] == [("manual", 2), ("prose", 1)]
    assert picked[1].text == docs[[d.doc_id for d in docs].index("prose:1")].text
    with pytest.raises(DataFileError, match="prose:9"):
        select_docs(docs, ["prose:9"])


def _write(tmp_path: Path, lines: list[str], xz: bool = True) -> Path:
    path = tmp_path / ("bad.jsonl.xz" if xz else "bad.jsonl")
    opener = lzma.open if xz else open
    with opener(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


GOOD_HS = {"ind": 1, "activity_label": "A", "ctx_a": "x.", "ctx_b": "y", "endings": ["a", "b", "c", "d"], "label": 0}


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ("{not json", r"bad\.jsonl(\.xz)?:2: malformed JSON"),
        (json.dumps({k: v for k, v in GOOD_HS.items() if k != "ctx_a"}), r":2: missing field 'ctx_a'"),
        (json.dumps({**GOOD_HS, "label": 4}), r":2: label"),
        (json.dumps({**GOOD_HS, "endings": ["a", "", "c", "d"]}), r":2: choices"),
        (json.dumps({**GOOD_HS, "endings": []}), r":2: choices"),
        (json.dumps({**GOOD_HS, "ctx_b": 3}), r":2: ctx_b"),
        ("[1, 2]", r":2: line: expected a JSON object"),
    ],
)
@pytest.mark.parametrize("xz", [True, False])
def test_hellaswag_errors_name_file_and_line(tmp_path: Path, bad: str, pattern: str, xz: bool) -> None:
    path = _write(tmp_path, [json.dumps(GOOD_HS), bad], xz)
    with pytest.raises(DataFileError, match=pattern):
        read_hellaswag(path)


def test_other_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="missing.jsonl.xz"):
        read_hellaswag(tmp_path / "missing.jsonl.xz")
    mm = {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7, "subject": "s"}
    with pytest.raises(DataFileError, match=":1: label"):
        read_mmlu(_write(tmp_path, [json.dumps(mm)]))
    with pytest.raises(DataFileError, match=":1: choices"):
        read_mmlu(_write(tmp_path, [json.dumps({**mm, "answer": 0, "choices": ["a", "b"]})]))
    with pytest.raises(DataFileError, match=":1: context/target"):
        read_lambada(_write(tmp_path, [json.dumps({"context": "c", "target": " "})]))
    with pytest.raises(DataFileError, match=":1: missing field 'src'"):
        read_corpus(_write(tmp_path, [json.dumps({"text": "t"})]))
    (tmp_path / "trunc.jsonl.xz").write_bytes(b"\xfd7zXZ\x00garbage")
    with pytest.raises(DataFileError, match="cannot decode"):
        read_lambada(tmp_path / "trunc.jsonl.xz")
