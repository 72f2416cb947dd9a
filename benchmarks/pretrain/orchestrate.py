"""Run benchmark jobs side by side, one per GPU, in dependency order.

A job is a JSON-ready dict with an ``"id"`` and an optional ``"needs"`` list of job ids whose
results it derives from (e.g. "lyactl-arch-scratch" needs lyactl's final architecture). A
worker per device takes the next job whose needs are done (longest estimated cost first),
runs ``python -m benchmarks.pretrain job SPEC --out DIR`` in a subprocess with
``CUDA_VISIBLE_DEVICES`` set to its device, and the result appears as ``DIR/<id>.json``.
A failed job is recorded (its log kept) and jobs that need it are skipped, not the run.

A device may be listed more than once (``["0", "0"]``): its workers then share that GPU, and
each job's spec says so in ``"gpu_shared_by"`` so that its wall-clock is not read as a solo
run's. ``min_start_s``: no job starts with less time than that left before the deadline (a job
killed at the deadline is lost, one not started runs in the next call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

__all__ = ["run_jobs"]


def run_jobs(jobs: Sequence[dict], devices: Sequence[str], out: Path, timeout_s: float,
             done: Sequence[str] = (), min_start_s: float = 0.0) -> dict[str, str]:
    """Run ``jobs`` on ``devices`` (e.g. ``["0", "1"]`` or ``["cpu"]``); ``done``: ids whose
    results already exist in ``out`` (their dependants may run). Returns id -> status."""
    out.mkdir(parents=True, exist_ok=True)
    known = {j["id"] for j in jobs} | set(done)
    for j in jobs:  # a need nobody will meet would leave the job pending for ever, silently
        if missing := [n for n in j.get("needs", ()) if n not in known]:
            raise ValueError(f"job {j['id']!r} needs {missing}: expected queued jobs or done ids, found neither")
    status: dict[str, str] = {j["id"]: "pending" for j in jobs} | {i: "done" for i in done}
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s

    def next_job() -> dict | None:
        with lock:
            while True:
                pending = [j for j in jobs if status[j["id"]] == "pending"]
                if not pending:
                    return None
                for j in pending:
                    if any(status.get(n) in ("failed", "skipped") for n in j.get("needs", ())):
                        status[j["id"]] = "skipped"
                ready = [j for j in pending if status[j["id"]] == "pending"
                         and all(status.get(n) == "done" for n in j.get("needs", ()))]
                if ready and deadline - time.monotonic() < min_start_s:
                    return None
                if ready:
                    job = max(ready, key=lambda j: j.get("cost", 1.0))
                    status[job["id"]] = "running"
                    return job
                if not any(s == "running" for s in status.values()):
                    return None
                lock.release()
                time.sleep(1.0)
                lock.acquire()

    def worker(device: str) -> None:
        while (job := next_job()) is not None:
            job = job | {"gpu_shared_by": list(devices).count(device)} if device != "cpu" else job
            ok = _run_one(job, device, out, max(1.0, deadline - time.monotonic()))
            with lock:
                status[job["id"]] = "done" if ok else "failed"

    threads = [threading.Thread(target=worker, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return status


def _run_one(job: dict, device: str, out: Path, timeout_s: float) -> bool:
    spec = out / f"{job['id']}.spec.json"
    spec.write_text(json.dumps(job))
    env = dict(os.environ)
    if device != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = device
    root = Path(__file__).resolve().parents[2]  # the repository: python -m benchmarks.pretrain runs from there
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "backends"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "benchmarks.pretrain", "job", str(spec), "--out", str(out)]
    t0 = time.monotonic()
    with open(out / f"{job['id']}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                                cwd=root).returncode
        except subprocess.TimeoutExpired:
            rc = -9
    print(f"[orchestrate] {job['id']} on {device}: rc={rc} in {time.monotonic() - t0:.0f}s", flush=True)
    return rc == 0 and (out / f"{job['id']}.json").exists()
