"""Notes on specific job records, applied by the merge (``report.merge``).

A note names a record by its job id *and* the first 12 hex digits of the sha256 of its
JSON file, so it stays attached to that exact run: a re-run writes a new record, which the
note no longer matches. ``withdrawn`` records are left out of the arms, paired tests and
summaries and listed apart with the reason; ``caveat`` records stay, with the text.

Records superseded by a re-run (the replays that ran with a ReplayController defect, the
lyactl-s0 run whose guard restored an event, and the arms derived from it) are kept in the
job archive under ``superseded/``, which the merge does not read; docs/results.md says why.
``superseded/stop11/`` holds the small-dense-s0 run of the old matching rule (1 head beside
an MLP of 2688, the caveat it carried here until its re-run), and lyactl-s1, lyactl-s2 from
the controller before the double-counting fix, with the seed-1 replays that followed them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["NOTES", "note_for"]

NOTES: dict[tuple[str, str], tuple[str, str]] = {}
"""(job id, sha256[:12] of its record) -> ("withdrawn" | "caveat", text)."""


def note_for(job_id: str, path: Path) -> tuple[str, str] | None:
    """The note on the record at ``path`` (None if it has none)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return NOTES.get((job_id, digest))
