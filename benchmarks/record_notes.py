"""Notes on specific job records, applied by the merge (``report.merge``).

A note names a record by its job id *and* the first 12 hex digits of the sha256 of its
JSON file, so it stays attached to that exact run: a re-run writes a new record, which the
note no longer matches. ``withdrawn`` records are left out of the arms, paired tests and
summaries and listed apart with the reason; ``caveat`` records stay, with the text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["NOTES", "note_for"]

_REPLAY_DEFECT = ("ran with a ReplayController defect (a removed layer's constraints blocked later choices): "
                  "it cut 10% of the FLOPs instead of lyactl-s1's 41.8%, so it is not a matched baseline; "
                  "fixed after the run (tests/test_baselines.py); the re-run follows lyactl-s1 on seed 1")

NOTES: dict[tuple[str, str], tuple[str, str]] = {
    ("random-s0", "48313e9dd8af"): ("withdrawn", _REPLAY_DEFECT),
    ("magnitude-s0", "4ae4835cac71"): ("withdrawn", _REPLAY_DEFECT),
    ("taylor-s0", "940782b86ca7"): ("withdrawn", _REPLAY_DEFECT),
    ("lyactl-s0", "3a19e33850af"): ("caveat", "the guard restored its first event (exactly-zero groups) at step "
                                    "400 and the controller pruned again at step 450; exact events skip the guard "
                                    "since (Controller._exact); not re-run yet"),
}
"""(job id, sha256[:12] of its record) -> ("withdrawn" | "caveat", text)."""


def note_for(job_id: str, path: Path) -> tuple[str, str] | None:
    """The note on the record at ``path`` (None if it has none)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return NOTES.get((job_id, digest))
