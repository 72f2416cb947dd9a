"""Time ``lyactl.analysis.lyapunov.verify_dlyap`` (dlyap + spectral radius + PD check) on a random
Schur-stable 200-dimensional system; writes benchmarks/results/verify.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from lyactl.analysis.lyapunov import verify_dlyap
from lyactl.verdict import Verdict

__all__ = ["run"]

N, RUNS, TARGET_S = 200, 7, 1.0


def run(n: int = N, runs: int = RUNS, seed: int = 0) -> dict:
    """Median wall time of ``runs`` verifications of one random system with rho = 0.95."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ev = verify_dlyap(A)
        times.append(time.perf_counter() - t0)
        if ev.verdict is not Verdict.HOLDS:
            raise RuntimeError(f"benchmark system not verified stable: {ev}")
    median = statistics.median(times)
    return {"name": "verify", "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cpus, numpy {np.__version__}",
            "n": n, "runs": runs, "median_s": median, "target_s": TARGET_S, "passed": median < TARGET_S,
            "residual": ev.residuals["lyapunov"]}


if __name__ == "__main__":
    result = run()
    out = Path(__file__).resolve().parents[1] / "results" / "verify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
