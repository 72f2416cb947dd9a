"""Benchmark ``lyactl rate``: time per call, and certified rate against condition number.

Run from the repository root: ``python -m benchmarks.micro.bench_rate``. Writes
``benchmarks/results/rate.json`` and ``docs/img/rates.png``.

* Timing: ``lyactl.app.cli.main(["rate", ...])`` in-process (warm: imports paid) and
  ``python -m lyactl rate`` in a fresh process (cold: interpreter, numpy, scipy, sympy and
  clarabel imports included; the issue's target, < 0.5 s per call), for the three optimizers
  with tuned parameters. The LMIs go to clarabel's native API; cvxpy is never imported.
* Curves: for kappa = L / m on a log grid, the certified rate of gd (step 2 / (m + L)),
  Nesterov (1 / L, (sqrt kappa - 1) / (sqrt kappa + 1)) and heavy-ball with Polyak's tuning
  (Lessard, Recht & Packard 2016, Fig. 4-5 setting), the quadratic rate of each (a lower
  bound), and the lower bound (sqrt kappa - 1) / (sqrt kappa + 1) of any first-order method.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lyactl.analysis.lure import (gd_system, heavy_ball_system, nesterov_system, tuned_gd, tuned_heavy_ball,
                                  tuned_nesterov)
from lyactl.analysis.rates import certify_rate
from lyactl.app.cli import main

__all__ = ["run", "time_calls", "rate_curves", "plot"]

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 0.5
KAPPAS = tuple(float(k) for k in np.logspace(0.2, 3, 22))
TUNED = {  # name -> (m, L) -> (system, lr, momentum)
    "gd": lambda m, L: (gd_system(tuned_gd(m, L)), tuned_gd(m, L), None),
    "nesterov": lambda m, L: (nesterov_system(*tuned_nesterov(m, L)), *tuned_nesterov(m, L)),
    "heavy-ball": lambda m, L: (heavy_ball_system(*tuned_heavy_ball(m, L)), *tuned_heavy_ball(m, L)),
}


def _argv(name: str, kappa: float) -> list[str]:
    _, lr, beta = TUNED[name](1.0, kappa)
    extra = [] if beta is None else ["--momentum", repr(beta)]
    return ["rate", "--optimizer", name, "--lr", repr(lr), *extra, "--mu", "1", "--L", repr(kappa), "--json"]


def _cold(args: list[str], runs: int) -> list[float]:
    """Wall times of ``runs`` fresh ``python args`` processes (seconds)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=False, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return times


def time_calls(kappas: tuple[float, ...] = (10.0, 100.0, 1000.0), cold_runs: int = 7) -> dict:
    """Warm in-process and cold subprocess wall times of ``lyactl rate`` (seconds).

    Cold: ``python -m lyactl rate ...`` in a fresh process, ``cold_runs`` times per optimizer at
    kappa = 100 (median per optimizer, and over all); for scale, the medians of a fresh process
    that only imports the CLI (``lyactl.app.cli``), only clarabel, and only cvxpy (which the
    command no longer imports).
    """
    warm, codes = {}, {}
    with contextlib.redirect_stdout(io.StringIO()):
        main(_argv("gd", 10.0))  # pay the imports once
        for name in TUNED:
            for kappa in kappas:
                t0 = time.perf_counter()
                codes[f"{name}@{kappa:g}"] = main(_argv(name, kappa))
                warm[f"{name}@{kappa:g}"] = time.perf_counter() - t0
    cold = {name: _cold(["-m", "lyactl", *_argv(name, 100.0)], cold_runs) for name in TUNED}
    floor = {what: statistics.median(_cold(["-c", f"import {what}"], cold_runs))
             for what in ("lyactl.app.cli", "clarabel", "cvxpy")}
    cold_all = [t for ts in cold.values() for t in ts]
    return {"warm_s": warm, "exit_codes": codes, "warm_median_s": statistics.median(warm.values()),
            "warm_max_s": max(warm.values()), "cold_s": cold,
            "cold_median_s": {name: statistics.median(ts) for name, ts in cold.items()},
            "cold_median_all_s": statistics.median(cold_all), "cold_max_s": max(cold_all),
            "cold_import_median_s": floor, "cold_runs": cold_runs, "target_s": TARGET_S,
            "warm_passed": max(warm.values()) < TARGET_S, "cold_passed": statistics.median(cold_all) < TARGET_S}


def rate_curves(kappas: tuple[float, ...] = KAPPAS) -> dict:
    """Certified rate (None where unknown) and quadratic rate per optimizer, per kappa."""
    out = {"kappa": list(kappas), "lower_bound": [(math.sqrt(k) - 1) / (math.sqrt(k) + 1) for k in kappas]}
    for name, make in TUNED.items():
        cert, quad = [], []
        for kappa in kappas:
            res = certify_rate(make(1.0, kappa)[0], 1.0, kappa)
            cert.append(res.rate)
            quad.append(res.quadratic_rate)
        out[name] = {"certified": cert, "quadratic": quad}
    return out


def plot(curves: dict, path: Path) -> None:
    """Rate and iterations-per-e-fold ``1 / -ln(rho)`` against kappa (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.array(curves["kappa"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"gd": "tab:blue", "nesterov": "tab:green", "heavy-ball": "tab:red"}
    for name, c in colors.items():
        cert = np.array([np.nan if r is None else r for r in curves[name]["certified"]])
        quad = np.array(curves[name]["quadratic"])
        for ax, f in ((axes[0], lambda r: r), (axes[1], lambda r: -1 / np.log(r))):
            ax.plot(k, f(cert), "o-", color=c, ms=3, label=f"{name}: certified over S(m, L)")
            ax.plot(k, f(quad), ":", color=c, label=f"{name}: quadratics only")
    lb = np.array(curves["lower_bound"])
    for ax, f in ((axes[0], lambda r: r), (axes[1], lambda r: -1 / np.log(r))):
        ax.plot(k, f(lb), "k--", label="lower bound (sqrt k - 1)/(sqrt k + 1)")
        ax.set_xscale("log")
        ax.set_xlabel("condition number kappa = L / m")
    axes[0].set_ylabel("rate rho")
    axes[1].set_ylabel("iterations per e-fold, 1 / -ln(rho)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("lyactl rate: IQC-certified rates (tuned steps; gaps = unknown)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run() -> dict:
    """Time, compute the curves, write the JSON and the plot; returns the JSON object."""
    result = {"name": "rate", "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cpus, "
                                         f"numpy {np.__version__}", "timing": time_calls(), "curves": rate_curves()}
    out = ROOT / "benchmarks" / "results" / "rate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result["curves"], ROOT / "docs" / "img" / "rates.png")
    return result


if __name__ == "__main__":
    res = run()
    print(json.dumps(res["timing"], indent=2))
    c = res["curves"]
    for i, k in enumerate(c["kappa"]):
        print(f"kappa {k:8.2f}  lb {c['lower_bound'][i]:.4f}  " + "  ".join(
            f"{n} {c[n]['certified'][i] if c[n]['certified'][i] is None else round(c[n]['certified'][i], 4)}"
            for n in TUNED))
