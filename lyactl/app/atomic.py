"""Atomic, checksummed file writes (crash-safe checkpoints), standard library only.

:func:`atomic_write` puts ``data`` at ``path`` so that after a crash at any instant the
file is either its old content or the whole new content, never a mix:

1. write to a temporary file in the same directory (same file system, so step 3 is a
   rename, not a copy), named ``.<name>.<random>.tmp``;
2. ``flush`` and ``fsync`` it (the bytes are on disk before the name points at them);
3. ``os.replace`` it over ``path`` (atomic on POSIX and Windows);
4. ``fsync`` the directory (the rename itself is on disk).

On any error the temporary file is removed and the error is raised: ``path`` keeps its
old content (a full disk, ``ENOSPC``, leaves the previous file intact).

:func:`sha256_hex` / :func:`sha256_file` give the SHA-256 checksum stored in manifests and
checked before a file is parsed. Cost: one pass over the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from lyactl.errors import CheckpointError, bad_arg

__all__ = ["atomic_write", "atomic_write_json", "sha256_hex", "sha256_file", "read_json", "remove_stale_temps"]

_CHUNK = 1 << 20


def _fsync(fd: int) -> None:
    """``os.fsync`` (one place, so a fault-injection harness can wrap it)."""
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is durable there
        return
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``, fsync dir)."""
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(bad_arg("data", "bytes", type(data).__name__))
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            _fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """:func:`atomic_write` of ``json.dumps(obj)`` (strict JSON: NaN/inf refused)."""
    atomic_write(path, (json.dumps(obj, allow_nan=False, indent=1) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; :class:`CheckpointError` names the file when it is missing,
    unreadable, truncated or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(bad_arg(str(path), "a readable JSON file", f"{type(exc).__name__}: {exc}")) from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left by writes that were killed midway; return them."""
    gone = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
