"""Readers for the offline evaluation files (HellaSwag, MMLU, LAMBADA, corpus text).

Every file is xz-compressed JSON lines (``lzma.open(path, "rt")``, one object a line) or
plain ``.jsonl``. Each reader checks the fields it needs and raises
:class:`lyactl.errors.DataFileError` naming the file and the 1-based line number.

Prompts follow lm-evaluation-harness (v0.4) exactly:

* HellaSwag: ``query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``,
  ``choices = [preprocess(e) for e in endings]``; each continuation is ``" " + choice``.
* MMLU: description ``"The following are multiple choice questions (with answers) about
  {subject}.\\n\\n"``, each question ``"{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``;
  k shots are the first k dev rows of the same subject, each followed by ``" {letter}\\n\\n"``;
  the choices scored are ``" A"``, ``" B"``, ``" C"``, ``" D"``.
* LAMBADA (OpenAI): the context and the target (the last word with its leading space).

Pure Python (no numpy, no torch).
"""

from __future__ import annotations

import json
import lzma
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg

__all__ = [
    "MCItem",
    "MMLURow",
    "LambadaItem",
    "CorpusDoc",
    "read_jsonl",
    "preprocess_hellaswag",
    "read_hellaswag",
    "read_mmlu",
    "mmlu_items",
    "read_lambada",
    "read_corpus",
    "split_heldout",
    "select_docs",
    "MMLU_LETTERS",
]

MMLU_LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item: score ``context + delimiter + choice`` for every choice.

    ``choices`` are stored without the delimiter; acc_norm divides by their length.
    ``group`` is the MMLU subject (empty for other tasks).
    """

    id: str
    context: str
    choices: tuple[str, ...]
    label: int
    group: str = ""
    delimiter: str = " "

    @property
    def continuations(self) -> tuple[str, ...]:
        """The strings actually scored: ``delimiter + choice``."""
        return tuple(self.delimiter + c for c in self.choices)


@dataclass(frozen=True)
class MMLURow:
    """One raw MMLU row (question, four choices, answer index, subject)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str


@dataclass(frozen=True)
class LambadaItem:
    """One LAMBADA item: ``context`` then ``target`` (the last word, with its leading space)."""

    id: str
    context: str
    target: str


@dataclass(frozen=True)
class CorpusDoc:
    """One corpus document: source name, text, index within its file, 1-based line number.

    ``doc_id`` (``"<src>:<line>"``) is the id used by ``lyactl_torch.corpus`` and by the
    ``val_ids`` of a run's recorded split.
    """

    src: str
    text: str
    index: int
    line: int = 0

    @property
    def doc_id(self) -> str:
        return f"{self.src}:{self.line}"


def _open_text(path: Path):
    """Open ``.xz`` files through lzma, others as UTF-8 text; a missing file is a DataFileError."""
    if not path.is_file():
        raise DataFileError(bad_arg("path", "an existing data file", str(path)))
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def read_jsonl(path: Path | str, fields: Mapping[str, type | tuple[type, ...]]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line, checking ``fields`` and their types.

    Raises
    ------
    DataFileError
        On a missing file, malformed JSON, a non-object line, a missing field or a wrong type;
        the message names the file and the 1-based line.
    """
    path = Path(path)
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield lineno, _parse_line(path, lineno, line, fields)
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot decode file ({exc})") from exc


def _parse_line(path: Path, lineno: int, line: str, fields: Mapping[str, Any]) -> dict:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise DataFileError(f"{where}: " + bad_arg("line", "a JSON object", type(obj).__name__))
    for name, kind in fields.items():
        if name not in obj:
            raise DataFileError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], kind) or isinstance(obj[name], bool):
            raise DataFileError(f"{where}: " + bad_arg(name, f"type {kind}", obj[name]))
    return obj


def _check_choices(where: str, choices: Any, label: Any, n_expected: int | None) -> tuple[str, ...]:
    """Validate a list of non-empty strings and a label indexing it."""
    if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataFileError(f"{where}: " + bad_arg("choices", "a list of non-empty strings", choices))
    if n_expected is not None and len(choices) != n_expected:
        raise DataFileError(f"{where}: " + bad_arg("choices", f"{n_expected} choices", len(choices)))
    if not 0 <= label < len(choices):
        raise DataFileError(f"{where}: " + bad_arg("label", f"an index in [0, {len(choices)})", label))
    return tuple(choices)


def preprocess_hellaswag(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: strip, ``" [title]"`` -> ``". "``, drop ``[...]``, ``"  "`` -> ``" "``."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_label(where: str, label: Any) -> int:
    # The saved datasets hold the label as int; the HF hub version holds it as a string.
    if isinstance(label, str) and label.strip().isdigit():
        return int(label)
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    raise DataFileError(f"{where}: " + bad_arg("label", "an integer 0-3", label))


def read_hellaswag(path: Path | str, limit: int | None = None) -> list[MCItem]:
    """Read ``hellaswag_val.jsonl.xz`` into preprocessed items (the first ``limit`` rows if given)."""
    fields = {"activity_label": str, "ctx_a": str, "ctx_b": str, "endings": list}
    items: list[MCItem] = []
    for lineno, row in read_jsonl(path, fields):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}:{lineno}"
        if "label" not in row:
            raise DataFileError(f"{where}: missing field 'label'")
        label = _hellaswag_label(where, row["label"])
        endings = _check_choices(where, row["endings"], label, 4)
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        query = preprocess_hellaswag(row["activity_label"] + ": " + ctx)
        choices = tuple(preprocess_hellaswag(e) for e in endings)
        items.append(MCItem(id=str(row.get("ind", lineno)), context=query, choices=choices, label=label))
    return items


def read_mmlu(path: Path | str) -> list[MMLURow]:
    """Read an MMLU split (``mmlu_dev``/``mmlu_test``/``mmlu_validation``) into raw rows."""
    rows: list[MMLURow] = []
    for lineno, row in read_jsonl(path, {"question": str, "choices": list, "answer": int, "subject": str}):
        choices = _check_choices(f"{path}:{lineno}", row["choices"], row["answer"], 4)
        rows.append(MMLURow(row["question"], choices, row["answer"], row["subject"]))
    return rows


def _mmlu_question(row: MMLURow) -> str:
    lines = [row.question.strip()] + [f"{L}. {c}" for L, c in zip(MMLU_LETTERS, row.choices)]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_items(test: Sequence[MMLURow], dev: Sequence[MMLURow], k_shot: int, limit: int | None = None) -> list[MCItem]:
    """Build k-shot MMLU prompts; shots are the first ``k_shot`` dev rows of the same subject.

    ``limit`` keeps the first ``limit`` test rows of each subject (lm-eval applies ``--limit``
    per subject task). Raises InvalidArgumentError when a subject has fewer than k dev rows.
    """
    if k_shot < 0:
        raise InvalidArgumentError(bad_arg("k_shot", "an integer >= 0", k_shot))
    pool: dict[str, list[MMLURow]] = {}
    for row in dev:
        pool.setdefault(row.subject, []).append(row)
    seen: dict[str, int] = {}
    items: list[MCItem] = []
    for row in test:
        seen[row.subject] = n = seen.get(row.subject, 0) + 1
        if limit is not None and n > limit:
            continue
        shots = pool.get(row.subject, [])[:k_shot]
        if len(shots) < k_shot:
            raise InvalidArgumentError(bad_arg(f"dev rows of {row.subject!r}", f">= {k_shot}", len(shots)))
        head = f"The following are multiple choice questions (with answers) about {row.subject.replace('_', ' ')}.\n\n"
        shot_text = "".join(_mmlu_question(s) + " " + MMLU_LETTERS[s.answer] + "\n\n" for s in shots)
        context = head + shot_text + _mmlu_question(row)
        items.append(MCItem(f"{row.subject}/{n - 1}", context, MMLU_LETTERS, row.answer, group=row.subject))
    return items


def read_lambada(path: Path | str, limit: int | None = None) -> list[LambadaItem]:
    """Read ``lambada_openai_test.jsonl.xz``; the target must be non-empty."""
    items: list[LambadaItem] = []
    for lineno, row in read_jsonl(path, {"context": str, "target": str}):
        if limit is not None and len(items) >= limit:
            break
        if not row["target"].strip() or not row["context"].strip():
            raise DataFileError(f"{path}:{lineno}: " + bad_arg("context/target", "non-empty strings", row))
        items.append(LambadaItem(str(row.get("id", lineno)), row["context"], row["target"]))
    return items


def read_corpus(path: Path | str) -> list[CorpusDoc]:
    """Read one corpus file, or every ``*.jsonl.xz`` of a directory (sorted by name)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl.xz")) if path.is_dir() else [path]
    if not files:
        raise DataFileError(bad_arg("path", "a directory holding *.jsonl.xz files", str(path)))
    docs: list[CorpusDoc] = []
    for f in files:
        for i, (lineno, row) in enumerate(read_jsonl(f, {"src": str, "text": str})):
            docs.append(CorpusDoc(row["src"], row["text"], i, lineno))
    return docs


def split_heldout(docs: Sequence[CorpusDoc], fraction: float = 0.05, seed: int = 0) -> list[CorpusDoc]:
    """Held-out documents: per source, a seeded shuffle of its n documents, keeping the first
    ``max(1, round(fraction * n))`` (sources with a single document contribute none).

    Deterministic for a given ``(docs, fraction, seed)``; a training run should pass its own
    held-out list instead when it has one.
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidArgumentError(bad_arg("fraction", "a number in (0, 1)", fraction))
    by_src: dict[str, list[CorpusDoc]] = {}
    for d in docs:
        by_src.setdefault(d.src, []).append(d)
    out: list[CorpusDoc] = []
    for src in sorted(by_src):
        group = sorted(by_src[src], key=lambda d: d.index)
        if len(group) < 2:
            continue
        order = list(range(len(group)))
        random.Random(f"{seed}/{src}").shuffle(order)
        keep = sorted(order[: max(1, round(fraction * len(group)))])
        out.extend(group[i] for i in keep)
    return out


def select_docs(docs: Sequence[CorpusDoc], ids: Sequence[str]) -> list[CorpusDoc]:
    """The documents whose ``doc_id`` is in ``ids`` (e.g. a recorded split's ``val_ids``), in
    the order of ``ids``; an id matching no document is a DataFileError."""
    by_id = {d.doc_id: d for d in docs}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataFileError(bad_arg("document ids", "ids present in the corpus", missing[:5]))
    return [by_id[i] for i in ids]
