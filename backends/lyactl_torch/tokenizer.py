"""Offline tokenizer loading (Hugging Face ``tokenizers`` format; never from the network).

``load_tokenizer()`` returns the GPT-2 byte-level BPE shipped in ``lyactl_torch/data``
(50257 tokens; ``"Hello world"`` -> ``[15496, 995]``, both checked at load time).
``load_tokenizer(path)`` accepts a ``tokenizer.json``, a ``tokenizer.json.xz`` or a directory
holding one of them. ``tokenizers`` is imported lazily here and only here.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lyactl.errors import DataFileError, bad_arg

__all__ = ["Tokenizer", "load_tokenizer", "DEFAULT_TOKENIZER", "GPT2_VOCAB_SIZE"]

DEFAULT_TOKENIZER = Path(__file__).resolve().parent / "data" / "gpt2_tokenizer.json.xz"
GPT2_VOCAB_SIZE = 50257
_EOT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")


def _tokenizers() -> Any:
    """The ``tokenizers`` module, or an ImportError saying how to install it."""
    try:
        import tokenizers
    except ImportError as exc:  # also raised when sys.modules["tokenizers"] is None
        raise ImportError("lyactl_torch tokenizer needs the 'tokenizers' package: pip install 'lyactl[torch]'") from exc
    return tokenizers


@dataclass(frozen=True)
class Tokenizer:
    """Thin wrapper: ``encode(str) -> list[int]`` (no special tokens added), ``decode``,
    ``eot_id`` (end-of-text id, also used as BOS) and ``vocab_size``."""

    backend: Any
    eot_id: int
    vocab_size: int
    name: str

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added)."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel in the Rust backend)."""
        return [list(e.ids) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept)."""
        return self.backend.decode(list(ids), skip_special_tokens=False)


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.json.xz"):
            if (path / name).is_file():
                return path / name
        raise DataFileError(bad_arg("path", "a directory holding tokenizer.json", str(path)))
    if not path.is_file():
        raise DataFileError(bad_arg("path", "an existing tokenizer.json(.xz) file or directory", str(path)))
    return path


def load_tokenizer(path: Path | str | None = None) -> Tokenizer:
    """Load a tokenizers-format tokenizer from ``path`` (default: the shipped GPT-2 one).

    Raises
    ------
    DataFileError
        Missing or unreadable file, no end-of-text token, or a GPT-2 file failing its check.
    """
    tk = _tokenizers()
    file = _resolve(Path(path) if path is not None else DEFAULT_TOKENIZER)
    try:
        if file.suffix == ".xz":
            with lzma.open(file, "rt", encoding="utf-8") as fh:
                backend = tk.Tokenizer.from_str(fh.read())
        else:
            backend = tk.Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises its own Exception subclass on bad JSON
        raise DataFileError(f"{file}: cannot load tokenizer ({exc})") from exc
    eot = next((backend.token_to_id(n) for n in _EOT_NAMES if backend.token_to_id(n) is not None), None)
    if eot is None:
        raise DataFileError(f"{file}: " + bad_arg("tokenizer", f"one of the tokens {_EOT_NAMES}", "none"))
    tok = Tokenizer(backend, int(eot), int(backend.get_vocab_size(with_added_tokens=True)), file.name)
    if "gpt2" in file.name.lower() or path is None:
        _check_gpt2(tok, file)
    return tok


def _check_gpt2(tok: Tokenizer, file: Path) -> None:
    """The GPT-2 tokenizer must have 50257 tokens and encode "Hello world" as [15496, 995]."""
    if tok.vocab_size != GPT2_VOCAB_SIZE:
        raise DataFileError(f"{file}: " + bad_arg("vocab_size", str(GPT2_VOCAB_SIZE), tok.vocab_size))
    ids = tok.encode("Hello world")
    if ids != [15496, 995]:
        raise DataFileError(f"{file}: " + bad_arg('encode("Hello world")', "[15496, 995]", ids))
