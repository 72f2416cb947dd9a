"""The corpus ending-choice task: true endings follow their context, distractors are length-matched."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyactl.app.endings import build_endings_task, split_sentences
from lyactl.errors import InvalidArgumentError
from lyactl.app.evaldata import read_corpus

DATA = Path(__file__).parent / "fixtures" / "data"
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "river", "stone", "light", "north", "field"]


def synthetic_docs(n_docs: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for j in range(n_docs):
        sents = []
        for _ in range(rng.randint(5, 12)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 25))]
            sents.append(f"D{j} " + " ".join(words) + rng.choice([".", "!", "?"]))
        docs.append({"src": f"s{j % 2}", "text": "\n".join(sents)})
    return docs


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("Ab .!?\"\n 1")), max_size=60))
def test_split_sentences_reconstructs_collapsed_text(text: str) -> None:
    sents = split_sentences(text)
    assert " ".join(sents) == re.sub(r"\s+", " ", text).strip()
    assert all(s == s.strip() and s for s in sents)


def test_split_sentences_example() -> None:
    assert split_sentences('He said "Go." Then he\nleft! Why? no. 3 cats.') == [
        'He said "Go."', "Then he left!", "Why? no.", "3 cats."]


def test_items_are_well_formed_and_true_ending_follows_context() -> None:
    docs = synthetic_docs(12, seed=0)
    items = build_endings_task(docs, 40, seed=3)
    assert len(items) == 40
    keys = set()
    for it in items:
        flat = re.sub(r"\s+", " ", docs[it["doc"]]["text"])
        true = it["endings"][it["label"]]
        assert it["ctx"] + " " + true in flat
        assert len(it["endings"]) == 4 and len(set(it["endings"])) == 4
        assert it["src"] == docs[it["doc"]]["src"]
        for k, e in enumerate(it["endings"]):
            if k != it["label"]:
                assert e not in flat  # distractors come from other documents
                assert e.startswith("D") and docs[int(e[1:].split()[0])]["src"] == it["src"]
        keys.add((it["doc"], it["ctx"]))
    assert len(keys) == len(items)  # distinct positions
    assert {it["label"] for it in items} == {0, 1, 2, 3}


def test_deterministic_and_seed_dependent() -> None:
    docs = synthetic_docs(10, seed=1)
    assert build_endings_task(docs, 20, seed=5) == build_endings_task(docs, 20, seed=5)
    assert build_endings_task(docs, 20, seed=5) != build_endings_task(docs, 20, seed=6)


def test_distractors_are_closer_in_length_than_random_sentences() -> None:
    docs = synthetic_docs(20, seed=2)
    items = build_endings_task(docs, 60, seed=0)
    all_sents = [s for d in docs for s in split_sentences(d["text"])]
    rng = random.Random(0)
    matched, random_gap = 0.0, 0.0
    for it in items:
        n = len(it["endings"][it["label"]].encode())
        wrong = [e for k, e in enumerate(it["endings"]) if k != it["label"]]
        matched += sum(abs(len(e.encode()) - n) for e in wrong)
        random_gap += sum(abs(len(rng.choice(all_sents).encode()) - n) for _ in wrong)
    assert matched < 0.5 * random_gap


def test_fixture_corpus_and_edge_cases() -> None:
    docs = read_corpus(DATA / "corpus")
    items = build_endings_task(docs, 5, seed=0)
    assert len(items) == 5 and all(isinstance(it["label"], int) for it in items)
    assert build_endings_task(docs[:1], 5, seed=0) == []  # one document: no distractors possible
    with pytest.raises(InvalidArgumentError, match="n_items"):
        build_endings_task(docs, 0, seed=0)
