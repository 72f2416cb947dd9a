"""The corpus ending-choice task: HellaSwag-format items built from held-out documents.

Each item is ``{"ctx", "endings", "label", "src", "doc"}``: ``ctx`` is a passage of
``n_context`` consecutive sentences of one document, ``endings[label]`` is the sentence that
truly follows it, and the three other endings are sentences of *other* documents (of the same
source when it has another document, else of any source) whose UTF-8 length is closest to the true ending's (among ``n_candidates`` randomly drawn ones), so that
length alone does not give the answer away. Scored like HellaSwag (continuation
``" " + ending``; acc and acc_norm).

Sentence splitting (deliberately simple, documented in docs/evaluation.md): whitespace runs
(newlines included) are collapsed to one space, then the text is cut after ``.``, ``!`` or
``?`` (optionally followed by closing quotes or brackets) when whitespace and an upper-case
letter, digit, quote or bracket follow. Sentences outside ``[min_chars, max_chars]`` are never
used as endings, and a passage must be made only of in-range sentences.

Deterministic: one ``random.Random(seed)`` drives every choice; the same documents (in the
same order), ``n_items`` and ``seed`` give the same items. Pure Python.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Sequence

from lyactl.errors import InvalidArgumentError, bad_arg

__all__ = ["split_sentences", "build_endings_task"]

_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_SPACE = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with the regex rule above (whitespace collapsed)."""
    flat = _SPACE.sub(" ", text).strip()
    if not flat:
        return []
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(flat):
        out.append(flat[start : m.start()] + flat[m.start() : m.end()].rstrip())
        start = m.end()
    out.append(flat[start:])
    return [s.strip() for s in out if s.strip()]


def _field(doc: Any, name: str) -> str:
    value = doc[name] if isinstance(doc, Mapping) else getattr(doc, name)
    if not isinstance(value, str):
        raise InvalidArgumentError(bad_arg(f"doc.{name}", "a string", value))
    return value


def _windows(sents: list[str], n_context: int, lo: int, hi: int) -> list[int]:
    """Indices i such that sentences i-n_context .. i are all within [lo, hi] characters."""
    ok = [lo <= len(s.encode("utf-8")) <= hi for s in sents]
    return [i for i in range(n_context, len(sents)) if all(ok[i - n_context : i + 1])]


def _distractors(rng: random.Random, pool: list[tuple[int, str]], doc_id: int, true: str,
                 n_wrong: int, n_candidates: int) -> list[str]:
    """``n_wrong`` sentences of other documents, closest in UTF-8 length to ``true``."""
    target = len(true.encode("utf-8"))
    cands: list[str] = []
    for _ in range(20 * n_candidates):
        j, s = pool[rng.randrange(len(pool))]
        if j != doc_id and s != true and s not in cands:
            cands.append(s)
            if len(cands) >= n_candidates:
                break
    cands.sort(key=lambda s: (abs(len(s.encode("utf-8")) - target), s))
    return cands[:n_wrong]


def build_endings_task(
    docs: Sequence[Any],
    n_items: int,
    seed: int,
    *,
    n_context: int = 3,
    n_wrong: int = 3,
    n_candidates: int = 64,
    min_chars: int = 20,
    max_chars: int = 300,
) -> list[dict]:
    """Build ``n_items`` ending-choice items (fewer if the documents cannot supply them).

    Parameters
    ----------
    docs : held-out documents, each a mapping or object with string fields ``src`` and ``text``.
    n_items : number of items wanted (>= 1).
    seed : seed of the single random generator (deterministic output).
    n_context : sentences in each context passage.
    n_wrong : wrong endings per item (HellaSwag has 3).
    n_candidates : random other-document sentences among which the closest-length are chosen.
    min_chars, max_chars : UTF-8 length range of usable sentences.

    Returns
    -------
    list of dict with keys ``ctx`` (str), ``endings`` (list of ``n_wrong + 1`` str),
    ``label`` (int), ``src`` (str), ``doc`` (int, position of the document in ``docs``).
    Items are distinct (doc, sentence) positions.
    """
    if n_items < 1:
        raise InvalidArgumentError(bad_arg("n_items", "an integer >= 1", n_items))
    if n_context < 1 or n_wrong < 1 or n_candidates < n_wrong:
        raise InvalidArgumentError(bad_arg("n_context/n_wrong/n_candidates", "n_context>=1, 1<=n_wrong<=n_candidates",
                                           (n_context, n_wrong, n_candidates)))
    sents = [split_sentences(_field(d, "text")) for d in docs]
    pool = [(j, s) for j, ss in enumerate(sents) for s in ss if min_chars <= len(s.encode("utf-8")) <= max_chars]
    slots = [(j, i) for j, ss in enumerate(sents) for i in _windows(ss, n_context, min_chars, max_chars)]
    if len({j for j, _ in pool}) < 2 or not slots:
        return []
    srcs = [_field(d, "src") for d in docs]
    by_src: dict[str, list[tuple[int, str]]] = {}
    for j, s in pool:
        by_src.setdefault(srcs[j], []).append((j, s))
    rng = random.Random(seed)
    chosen = rng.sample(slots, min(n_items, len(slots)))
    items: list[dict] = []
    for j, i in chosen:
        true = sents[j][i]
        same = by_src.get(srcs[j], [])
        src_pool = same if any(k != j for k, _ in same) else pool
        wrong = _distractors(rng, src_pool, j, true, n_wrong, n_candidates)
        if len(wrong) < n_wrong:
            continue
        label = rng.randrange(n_wrong + 1)
        endings = wrong[:label] + [true] + wrong[label:]
        ctx = " ".join(sents[j][i - n_context : i])
        items.append({"ctx": ctx, "endings": endings, "label": label, "src": srcs[j], "doc": j})
    return items
