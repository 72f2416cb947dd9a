"""The merge leaves withdrawn job records out (and lists them), keeps caveated ones with their
text, and a note only matches the exact record it was written for (job id and file hash)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


import benchmarks.pretrain.record_notes as record_notes  # noqa: E402
import benchmarks.pretrain.report as report  # noqa: E402


def _record(path: Path, job_id: str, arm: str, seed: int, bpb: float) -> str:
    rec = {"id": job_id, "arm": arm, "seed": seed, "wall_s": 10.0 + seed, "train_flops": 1e12, "val_bpb": bpb,
           "tokens": 1000, "losses": [[1, 3.0]]}
    path.write_text(json.dumps(rec))
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_withdrawn_records_are_left_out_and_caveats_kept(tmp_path, monkeypatch):
    _record(tmp_path / "dense-s0.json", "dense-s0", "dense", 0, 1.30)
    bad = _record(tmp_path / "random-s0.json", "random-s0", "random", 0, 1.31)
    odd = _record(tmp_path / "lyactl-s0.json", "lyactl-s0", "lyactl", 0, 1.35)
    _record(tmp_path / "taylor-s0.json", "taylor-s0", "taylor", 0, 1.32)
    notes = {("random-s0", bad): ("withdrawn", "a defect"), ("lyactl-s0", odd): ("caveat", "a restore"),
             ("taylor-s0", "000000000000"): ("withdrawn", "another record, not this one")}
    monkeypatch.setattr(record_notes, "NOTES", notes)
    merged = report.merge(tmp_path, "t", "tiny")
    ids = {a["id"] for a in merged["arms"]}
    assert ids == {"dense-s0", "lyactl-s0", "taylor-s0"}  # the hash mismatch keeps taylor-s0
    assert [w["id"] for w in merged["withdrawn"]] == ["random-s0"]
    assert merged["withdrawn"][0]["reason"] == "a defect" and merged["withdrawn"][0]["val_bpb"] == 1.31
    assert next(a for a in merged["arms"] if a["id"] == "lyactl-s0")["caveat"] == "a restore"
    assert "random" not in merged["summary"] and "taylor" in merged["summary"]


def test_the_committed_results_match_their_notes():
    """benchmarks/results/pretrain_h200.json was merged with the current notes: no withdrawn
    record among its arms, and every caveat on the record it names."""
    res = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pretrain_h200.json").read_text())
    withdrawn = {k[0] for k, v in record_notes.NOTES.items() if v[0] == "withdrawn"}
    assert withdrawn == {w["id"] for w in res["withdrawn"]}
    assert not withdrawn & {a["id"] for a in res["arms"]}
    caveats = {k[0]: v[1] for k, v in record_notes.NOTES.items() if v[0] == "caveat"}
    assert caveats == {a["id"]: a["caveat"] for a in res["arms"] if a.get("caveat")}
