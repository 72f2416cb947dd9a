"""Prepare the pretraining benchmark's data: document split and a BPE tokenizer.

Reads ``../shared/data/corpus`` (all sources but gcide, as in the reference runs), splits by
document with a fixed seed, trains a byte-level BPE tokenizer on the TRAINING documents only,
and writes both next to the results (the tokenizer travels with the results; the split is
re-derived from the seed and checked against the recorded ids).

    python -m benchmarks.pretrain.prepare_data --corpus ../shared/data/corpus --vocab 8192
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lyactl_torch.corpus import load_documents, split_documents, train_bpe

__all__ = ["SOURCES", "main"]

SOURCES = ("brown", "linux_doc", "mhcc", "milton", "python_doc", "shakespeare", "tdavid", "web_bible", "wordnet")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus"))
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.03)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    split = split_documents(load_documents(args.corpus, SOURCES), args.val_fraction, args.seed)
    tok_path = train_bpe([d.text for d in split.train], args.vocab, args.out / f"tokenizer_bpe{args.vocab}.json")
    rec = split.record() | {"sources": list(SOURCES), "tokenizer": tok_path.name, "seconds": time.perf_counter() - t0}
    (args.out / "data_split.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps({k: v for k, v in rec.items() if k != "val_ids"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
