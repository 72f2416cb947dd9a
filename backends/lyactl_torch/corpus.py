"""Training text: documents, the document-level split, a BPE tokenizer, packed token streams.

The corpus is a folder of ``<source>.jsonl.xz`` files, one ``{"src": ..., "text": ...}``
object per line (the format of ``../shared/data/corpus``). Documents, not tokens, are split
between training and validation (a fixed seed), so no validation text leaks into training;
the split is returned as document ids so it can be kept in a run's record.

Token streams are numpy ``uint16``/``int32`` arrays with an end-of-text token between
documents. Batches are fixed-length windows of ``seq_len + 1`` tokens, visited in an order
fixed by a seed (a seed fixes the data order in every benchmark arm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg
from lyactl.app.evaldata import CorpusDoc, read_corpus

__all__ = [
    "Document",
    "Split",
    "load_documents",
    "split_documents",
    "train_bpe",
    "encode_documents",
    "Batches",
]

EOT = "<|endoftext|>"


Document = CorpusDoc
"""One corpus document (``src``, ``text``, ``index``, ``line``; ``doc_id`` = ``"<src>:<line>"``):
the reader of :mod:`lyactl.app.evaldata` is the one reader of corpus files."""


@dataclass(frozen=True)
class Split:
    """A document-level train/validation split (document ids, for the run's record)."""

    train: tuple[Document, ...]
    val: tuple[Document, ...]
    seed: int
    val_fraction: float

    def record(self) -> dict:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "val_ids": [d.doc_id for d in self.val],
            "n_train_docs": len(self.train),
            "train_bytes": sum(len(d.text.encode()) for d in self.train),
            "val_bytes": sum(len(d.text.encode()) for d in self.val),
        }


def load_documents(folder: Path, sources: Sequence[str] | None = None) -> list[Document]:
    """Read every ``<src>.jsonl.xz`` in ``folder`` (or only ``sources``), in sorted order
    (:func:`lyactl.app.evaldata.read_corpus`; errors name the file and the line)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(bad_arg("corpus folder", "an existing folder of *.jsonl.xz", str(folder)))
    files = sorted(folder.glob("*.jsonl.xz"))
    if sources is not None:
        files = [f for f in files if f.name.removesuffix(".jsonl.xz") in set(sources)]
    if not files:
        raise DataFileError(f"{folder}: no *.jsonl.xz corpus files found (sources={sources})")
    return [d for f in files for d in read_corpus(f)]


def split_documents(docs: Sequence[Document], val_fraction: float, seed: int) -> Split:
    """Split by document: each source contributes ``val_fraction`` of its bytes to
    validation (whole documents, chosen in a seeded random order, at least one per
    source with two or more documents)."""
    if not 0.0 < val_fraction < 0.5:
        raise InvalidArgumentError(bad_arg("val_fraction", "a number in (0, 0.5)", val_fraction))
    rng = np.random.default_rng(seed)
    train: list[Document] = []
    val: list[Document] = []
    for src in sorted({d.src for d in docs}):
        group = [d for d in docs if d.src == src]
        order = rng.permutation(len(group))
        target = val_fraction * sum(len(d.text) for d in group)
        taken = 0
        for rank, i in enumerate(order):
            if len(group) > 1 and rank < len(group) - 1 and (taken < target or rank == 0):
                val.append(group[i])
                taken += len(group[i].text)
            else:
                train.append(group[i])
    return Split(tuple(train), tuple(val), seed, val_fraction)


def train_bpe(texts: Sequence[str], vocab_size: int, path: Path) -> Path:
    """Train a byte-level BPE tokenizer (Hugging Face ``tokenizers``) on ``texts`` only
    (the training split), with ``<|endoftext|>`` as token 0; save it as ``path`` (JSON)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def encode_documents(tokenizer, docs: Sequence[Document]) -> np.ndarray:
    """Concatenate the documents' tokens, an end-of-text token before each document.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (batch encoding runs in Rust, in parallel).
    Returns int32 of shape ``[n_tokens]``.
    """
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise InvalidArgumentError(bad_arg("tokenizer", f"a tokenizer with the {EOT} token", "none"))
    encs = tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False)
    parts = [np.asarray([eot] + e.ids, dtype=np.int32) for e in encs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class Batches:
    """Seeded batches of windows of ``seq_len + 1`` tokens from a token stream.

    Window ``j`` starts at ``j * seq_len`` (non-overlapping); each epoch visits every
    window once in an order fixed by ``(seed, epoch)``. ``batch(step)`` is a pure function
    of ``step``, so a resumed run and every benchmark arm see the same data order.
    """

    tokens: np.ndarray
    seq_len: int
    batch_size: int
    seed: int

    @property
    def n_windows(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    @property
    def steps_per_epoch(self) -> int:
        return self.n_windows // self.batch_size

    def batch(self, step: int) -> np.ndarray:
        """Token windows of step ``step``: int64 ``[batch_size, seq_len + 1]``."""
        if self.steps_per_epoch < 1:
            raise InvalidArgumentError(bad_arg("tokens", f"at least {self.batch_size} windows", self.n_windows))
        epoch, within = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        starts = order[within * self.batch_size : (within + 1) * self.batch_size] * self.seq_len
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        return self.tokens[idx].astype(np.int64)
