"""Notes on specific job records, applied by the merge (``report.merge``).

A note names a record by its job id *and* the first 12 hex digits of the sha256 of its
JSON file, so it stays attached to that exact run: a re-run writes a new record, which the
note no longer matches. ``withdrawn`` records are left out of the arms, paired tests and
summaries and listed apart with the reason; ``caveat`` records stay, with the text.

Records superseded by a re-run (the replays that ran with a ReplayController defect, the
lyactl-s0 run whose guard restored an event, and the arms derived from it) are kept in the
job archive under ``superseded/``, which the merge does not read; docs/results.md says why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["NOTES", "note_for"]

_DEGENERATE_SMALL = ("its shape came from the old matching rule (any heads/MLP pair whose FLOPs fit), which "
                     "chose 1 head of 64 dims beside an MLP of 2688: attention all but removed, not a sensible "
                     "small dense model (it lands above the d512 frontier point that costs less); the rule now "
                     "shrinks heads and MLP together (benchmarks/job.py:_matching_dense); not re-run yet")

NOTES: dict[tuple[str, str], tuple[str, str]] = {
    ("small-dense-s0", "31b24a9d4dec"): ("caveat", _DEGENERATE_SMALL),
}
"""(job id, sha256[:12] of its record) -> ("withdrawn" | "caveat", text)."""


def note_for(job_id: str, path: Path) -> tuple[str, str] | None:
    """The note on the record at ``path`` (None if it has none)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return NOTES.get((job_id, digest))
