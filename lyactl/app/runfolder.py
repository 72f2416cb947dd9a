"""Run folders as append-only history: where a new run may write, and the manifest that
lets ``lyactl report`` tell an intact run from a damaged one.

Where a run writes (:func:`claim`), decided only after the whole input was validated:

* no ``--out``: the next free ``lyactl-runs/<kind>-<n>`` under the current folder (the
  ``lyactl-runs/`` folder holds a ``.gitignore`` of ``*``, so runs never show in
  ``git status``);
* ``--out DIR`` absent or empty: ``DIR``;
* ``--out DIR`` holding files: refused, naming ``DIR`` and the two flags that allow it:
  ``--new-run`` (the next free sibling ``DIR-2``, ``DIR-3``, ...; nothing is touched) or
  ``--overwrite`` (only for a lyactl run folder: the previous run's files are removed,
  every other file is kept).

The manifest (``manifest.json``, written atomically by :func:`write_manifest` when the run
ends) maps every file of the run, by its path relative to the folder, to its SHA-256 and
size in bytes; the plots :data:`DERIVED` are left out because ``lyactl report`` redraws
them. :func:`audit` lists what is wrong with a run folder: no manifest, a listed file
missing, of another size (empty, truncated) or of other bytes, and a summary whose events
have no decisions in ``decisions.jsonl``. Cost: one pass over the run's bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lyactl.app.atomic import atomic_write_json, sha256_file
from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg

__all__ = ["MANIFEST", "DERIVED", "RUN_FILES", "RUNS_ROOT", "Problem", "claim", "default_out", "write_manifest",
           "audit"]

MANIFEST = "manifest.json"
DERIVED = ("loss.png", "flops.png", "lyapunov.png")
"""Plots redrawn by ``lyactl report``: not in the manifest."""
RUN_FILES = ("config.json", "split.json", "tokenizer.json", "decisions.jsonl", "metrics.jsonl", "metrics.csv",
             "traces.json", "summary.json", "run.log", MANIFEST) + DERIVED
"""The files a run of ``lyactl demo`` / ``lyactl train`` writes (plus ``<arm>.pt`` and ``tensorboard/``)."""
RUNS_ROOT = Path("lyactl-runs")
_FORMAT = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run folder: the file (relative path) and what is wrong."""

    file: str
    problem: str


def default_out(kind: str, root: Path = RUNS_ROOT) -> Path:
    """The next free ``root/<kind>-<n>`` (n = 1, 2, ...); ``root`` is created with a
    ``.gitignore`` of ``*`` so that its runs stay out of version control."""
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# lyactl run folders: not source\n*\n")
    return _next_free(root / f"{kind}-1")


def _next_free(first: Path) -> Path:
    """``first`` if absent or empty, else the first absent or empty ``<stem>-<n>``."""
    stem = first.name[:-2] if first.name.endswith("-1") else first.name
    path, n = first, 1
    while path.exists() and (not path.is_dir() or any(path.iterdir())):
        n += 1
        path = first.with_name(f"{stem}-{n}")
    return path


def _is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (MANIFEST, "summary.json", "config.json"))


def claim(out: Path, *, overwrite: bool = False, new_run: bool = False) -> Path:
    """The folder a new run writes to (created); call it only once the input is validated.

    Raises :class:`InvalidArgumentError` naming the folder and the flags when ``out`` holds
    files and neither flag allows a new run there (see the module docstring).
    """
    out = Path(out)
    if overwrite and new_run:
        raise InvalidArgumentError("--overwrite, --new-run: expected at most one of them, found both")
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(bad_arg("--out", "a folder", f"{out} (a file)"))
    if out.is_dir() and any(out.iterdir()):
        if new_run:
            out = _next_free(out)
        elif overwrite and _is_run_folder(out):
            _remove_previous_run(out)
        elif overwrite:
            raise InvalidArgumentError(bad_arg("--out", "an empty folder or a lyactl run folder for --overwrite",
                                               f"{out} (holds files of something else)"))
        else:
            raise InvalidArgumentError(
                f"--out: {out} already holds files (a run folder is history: nothing in it is replaced); "
                "pass --new-run to write the next numbered run beside it, or --overwrite to replace the "
                "previous run")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _remove_previous_run(out: Path) -> None:
    """Remove the files of the previous run (manifest-listed or standard names), nothing else."""
    listed: list[str] = []
    if (out / MANIFEST).is_file():
        try:
            listed = list(json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", {}))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            listed = []
    arms = [p.name for p in out.glob("*.pt")]
    tb = [str(p.relative_to(out)) for p in (out / "tensorboard").rglob("*") if p.is_file()]
    for name in {*listed, *RUN_FILES, *arms, *tb}:
        path = out / name
        if path.resolve().is_relative_to(out.resolve()) and path.is_file():
            path.unlink()


def _files(run_dir: Path) -> list[Path]:
    skip = {MANIFEST, *DERIVED}
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and str(p.relative_to(run_dir)) not in skip
                  and not p.name.endswith(".tmp"))


def write_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``manifest.json`` (atomically) listing every file of the run with its SHA-256
    and size; returns the manifest."""
    run_dir = Path(run_dir)
    files = {p.relative_to(run_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in _files(run_dir)}
    manifest = {"format": _FORMAT, "files": files}
    atomic_write_json(run_dir / MANIFEST, manifest)
    return manifest


def _read_manifest(run_dir: Path) -> Mapping[str, Any] | None:
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) and all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in manifest["files"].values())
    return manifest if ok else None


def audit(run_dir: str | os.PathLike[str]) -> tuple[Problem, ...]:
    """Everything wrong with a run folder (empty when it is intact); see the module docstring.

    Raises :class:`DataFileError` when ``run_dir`` is not a run folder at all (no ``summary.json``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise DataFileError(bad_arg("RUN_DIR", "a run folder holding summary.json", str(run_dir)))
    manifest = _read_manifest(run_dir)
    if manifest is None:
        return (Problem(MANIFEST, "missing or unreadable: the run did not finish, or its folder was altered; "
                                  "its files cannot be checked"),) + _consistency(run_dir)
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        path = run_dir / name
        if not path.resolve().is_relative_to(run_dir.resolve()):
            problems.append(Problem(name, "a manifest entry outside the run folder"))
        elif not path.is_file():
            problems.append(Problem(name, "missing (listed in the manifest)"))
        elif path.stat().st_size != entry["bytes"]:
            problems.append(Problem(name, f"{path.stat().st_size} bytes, the manifest says {entry['bytes']} "
                                          "(emptied, truncated or extended)"))
        elif sha256_file(path) != entry["sha256"]:
            problems.append(Problem(name, "altered (SHA-256 differs from the manifest)"))
    return tuple(problems) + _consistency(run_dir)


def _consistency(run_dir: Path) -> tuple[Problem, ...]:
    """The summary's events against ``decisions.jsonl``: every event's groups are decisions."""
    try:
        arms = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["arms"]
        events = [e for a in arms if a.get("controlled") for e in a.get("events", [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return (Problem("summary.json", f"not a run summary ({type(exc).__name__}: {exc})"),)
    log = run_dir / "decisions.jsonl"
    if not events:
        return ()
    if not log.is_file() or log.stat().st_size == 0:
        return (Problem("decisions.jsonl", f"{'missing' if not log.is_file() else 'empty'}, but the summary "
                                           f"records {len(events)} events"),)
    from lyactl.control.decision_log import read_log

    try:
        records = read_log(log)
    except DataFileError as exc:
        return (Problem("decisions.jsonl", str(exc)),)
    logged: dict[int, int] = {}
    for r in records:
        if isinstance(r, dict) and r.get("type") == "decision":
            logged[r.get("event_id")] = logged.get(r.get("event_id"), 0) + 1
    out = []
    for e in events:
        want, found = len(e.get("groups", [])), logged.get(e.get("event_id"), 0)
        if want != found:
            out.append(Problem("decisions.jsonl", f"event {e.get('event_id')}: the summary records {want} "
                                                  f"decisions, the log holds {found}"))
    return tuple(out)
