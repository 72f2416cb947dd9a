"""The benchmark orchestrator: a deadline guard that starts no job it cannot finish, a flag on
jobs that shared a GPU, and the merge keeping such wall-clocks out of the ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


import benchmarks.pretrain.orchestrate as orchestrate  # noqa: E402
import benchmarks.pretrain.report as report  # noqa: E402

JOBS = [{"id": "a", "cost": 2.0}, {"id": "b", "cost": 1.0, "needs": ["a"]}]


def _fake_run(seen: list[dict]):
    def run_one(job: dict, device: str, out: Path, timeout_s: float) -> bool:
        seen.append(job | {"device": device})
        return True
    return run_one


def test_no_job_starts_with_less_than_min_start_left(tmp_path, monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(orchestrate, "_run_one", _fake_run(seen))
    status = orchestrate.run_jobs(JOBS, ["cpu"], tmp_path, timeout_s=5.0, min_start_s=10.0)
    assert seen == [] and status == {"a": "pending", "b": "pending"}
    status = orchestrate.run_jobs(JOBS, ["cpu"], tmp_path, timeout_s=5.0, min_start_s=1.0)
    assert [j["id"] for j in seen] == ["a", "b"] and set(status.values()) == {"done"}


def test_jobs_on_a_shared_gpu_say_so(tmp_path, monkeypatch):
    for devices, shared in ((["0", "0"], 2), (["0", "1"], 1)):
        seen: list[dict] = []
        monkeypatch.setattr(orchestrate, "_run_one", _fake_run(seen))
        orchestrate.run_jobs([{"id": "x"}, {"id": "y"}], devices, tmp_path, timeout_s=60.0)
        assert sorted(j["gpu_shared_by"] for j in seen) == [shared, shared]
    seen = []
    monkeypatch.setattr(orchestrate, "_run_one", _fake_run(seen))
    orchestrate.run_jobs([{"id": "x"}], ["cpu", "cpu"], tmp_path, timeout_s=60.0)
    assert "gpu_shared_by" not in seen[0]


def _rec(out: Path, arm: str, seed: int, wall: float, shared: int | None = None) -> None:
    rec = {"id": f"{arm}-s{seed}", "arm": arm, "seed": seed, "wall_s": wall, "train_flops": 1e12, "val_bpb": 1.3,
           "tokens": 1000, "losses": [[1, 3.0]]} | ({"gpu_shared_by": shared} if shared else {})
    (out / f"{arm}-s{seed}.json").write_text(json.dumps(rec))


def test_shared_gpu_wall_clocks_stay_out_of_the_ratio(tmp_path):
    for s in (0, 1):
        _rec(tmp_path, "dense", s, 100.0)
    _rec(tmp_path, "random", 0, 300.0, shared=3)
    _rec(tmp_path, "random", 1, 80.0)
    _rec(tmp_path, "taylor", 0, 250.0, shared=3)
    summary = report.merge(tmp_path, "t", "tiny")["summary"]
    assert summary["random"]["seeds"] == [0, 1]
    assert summary["random"]["wall_ratio"]["n"] == 1
    assert abs(summary["random"]["wall_ratio"]["mean_rel"] - (-0.2)) < 1e-12
    assert summary["taylor"]["wall_ratio"]["n"] == 0


def test_a_need_neither_queued_nor_done_is_refused(tmp_path, monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(orchestrate, "_run_one", _fake_run(seen))
    with pytest.raises(ValueError, match="'b' needs \\['a'\\]"):
        orchestrate.run_jobs(JOBS[1:], ["cpu"], tmp_path, timeout_s=60.0)
    assert seen == []
    status = orchestrate.run_jobs(JOBS[1:], ["cpu"], tmp_path, timeout_s=60.0, done=["a"])
    assert status == {"a": "done", "b": "done"} and [j["id"] for j in seen] == ["b"]
