"""The two tasks of the SSM benchmark: language modelling on the shared corpus (bits per byte)
and multi-query associative recall (MQAR, procedurally generated as in Zoology).

LM: the corpus folder is split by document (:func:`lyactl_torch.corpus.split_documents`),
the training split tokenized once (cached as ``tokens.npy`` next to the results), batches drawn
by :class:`lyactl_torch.corpus.Batches` (the data order is fixed by the seed, so arms with the
same seed see the same data); validation bits per byte by :func:`lyactl_torch.evaluate.evaluate`
on the validation documents (every token of a document predicted once).

MQAR: a sequence holds ``K`` key-value pairs ``k_1 v_1 ... k_K v_K`` (keys from the first half
of the vocabulary, values from the second), then a query region of filler tokens in which each
key appears once more at a random place; the target after a repeated key is its value, and the
loss and accuracy count those positions only. Generated from a seed, no data is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["LMData", "load_lm", "mqar_batch"]


@dataclass(frozen=True)
class LMData:
    """Tokenized training stream, validation documents and the tokenizer."""

    train: np.ndarray
    val: tuple
    tokenizer: object


def load_lm(corpus: Path, tokenizer_path: Path, cache: Path, val_fraction: float, sources: tuple | None) -> LMData:
    """Split ``corpus`` by document, tokenize the training split (cached in ``cache``)."""
    from lyactl_torch.corpus import load_documents, split_documents
    from lyactl_torch.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    split = split_documents(load_documents(corpus, sources), val_fraction, 0)
    path = cache / "tokens.npy"
    key = cache / "tokens.json"
    meta = {"corpus": str(corpus), "tokenizer": str(tokenizer_path), "val_fraction": val_fraction, "sources": sources}
    if path.exists() and key.exists() and json.loads(key.read_text()) == json.loads(json.dumps(meta)):
        return LMData(np.load(path, mmap_mode="r"), split.val, tok)
    ids = tok.encode_batch([d.text for d in split.train])
    stream = np.concatenate([np.asarray([tok.eot_id] + x, dtype=np.int32) for x in ids]).astype(np.uint16)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, stream)
    key.write_text(json.dumps(meta))
    return LMData(stream, split.val, tok)


def mqar_batch(seed: int, step: int, batch: int, seq_len: int, n_pairs: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)``, int64 ``[batch, seq_len]``; targets are -100 except after a
    repeated key (its value). Pure function of ``(seed, step)``."""
    if 2 * n_pairs + n_pairs > seq_len or vocab < 4 * n_pairs + 4:
        raise ValueError(f"mqar: seq_len {seq_len} / vocab {vocab} too small for {n_pairs} pairs")
    rng = np.random.default_rng([seed, step])
    half = vocab // 2
    keys = np.stack([rng.choice(np.arange(1, half), n_pairs, replace=False) for _ in range(batch)])
    vals = rng.integers(half, vocab, size=(batch, n_pairs))
    x = np.zeros((batch, seq_len), dtype=np.int64)
    x[:, 0 : 2 * n_pairs : 2], x[:, 1 : 2 * n_pairs : 2] = keys, vals
    y = np.full((batch, seq_len), -100, dtype=np.int64)
    q_len = seq_len - 2 * n_pairs
    for b in range(batch):
        pos = 2 * n_pairs + np.sort(rng.choice(q_len - 1, n_pairs, replace=False))
        order = rng.permutation(n_pairs)
        x[b, pos] = keys[b, order]
        y[b, pos] = vals[b, order]
    return torch.from_numpy(x), torch.from_numpy(y)
