"""Why does no freeze fire in continued training? How far the movement certificate is from its
tolerance under AdamW, even with the remaining path taken from the known schedule.

The freeze rule needs BOUNDED: ``|g| R + curv R^2 / 2 < tol`` with ``tol = eps * loss / n_groups``
(``eps = 1e-3``; :class:`lyactl.control.monitor_library.LossMoveBound`), where the built-in ``R``
comes from a geometric contraction of the displacement that AdamW does not show mid-run.
This study replaces that ``R`` by one that needs no contraction: the displacement per step and
per unit learning rate, at its maximum over the controller's window,
``s = max_k sqrt(dw_sq_k) / (K_k lr_k)``, times the learning rate still to come,
``Lambda_k = sum_{t > k} lr_t`` (the schedule is known to ``lyactl compress``), so
``R_sched = s * Lambda_k`` (per-report displacements summed as if aligned). It then reports, per
controller report, ``|g| R_sched / tol`` over the live groups: the FIRST-order term alone, a lower
bound of the certificate's ``dL`` (the curvature term only adds). A ratio below 1 is needed for any
freeze.

Runs the compression benchmark's tiny preset (``benchmarks.compress.run``, arm lyactl-distill,
80 k tokens) on CPU in about a minute and writes ``benchmarks/results/freeze_margin_cpu.json``.
A diagnostic: it wraps the private training loop of :mod:`lyactl_torch.compress` (patched for the
duration of the call only) to read the controller's statistics window at every report.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.compress import run as bench
from lyactl_torch import compress as C

__all__ = ["margins", "main"]

OUT = Path(__file__).resolve().parents[1] / "results" / "freeze_margin_cpu.json"


def margins(window, lr_to_come: float, eps: float = 1e-3, beta1: float = 0.9) -> dict | None:
    """``|g| R_sched / tol`` over the groups with finite statistics (module docstring), and the
    same with the mean gradient ``|mu|`` in place of ``|g|``: ``mu`` estimated from Adam's first
    moment over the window, ``|mu|^2 ~ max(0, mean(m_sq) - c mean(g_sq)) / (1 - c)`` with
    ``c = (1 - beta1)/(1 + beta1)``, the share of a gradient's noise that an EMA keeps (white noise,
    a stationary mean: an estimate, not a bound)."""
    lrs, Ks = window.scalar("lr"), window.scalar("interval")
    c = (1 - beta1) / (1 + beta1)
    with np.errstate(all="ignore"):
        s = np.max(np.sqrt(window.field("dw_sq")) / (Ks[:, None] * lrs[:, None]), axis=0)
        R = s * lr_to_come
        first = np.sqrt(window.field("g_sq")[-1]) * R
        mu = np.sqrt(np.maximum(0.0, window.field("m_sq").mean(0) - c * window.field("g_sq").mean(0)) / (1 - c))
        first_mu = mu * R
    tol = eps * abs(float(window.scalar("loss")[-1])) / window.n_total
    live = np.isfinite(first) & (first > 0) & np.isfinite(first_mu)
    if not live.any():
        return None
    ratio, ratio_mu = first[live] / tol, first_mu[live] / tol
    return {"tol": tol, "lr_to_come": lr_to_come, "groups": int(live.sum()),
            "ratio_min": float(ratio.min()), "ratio_median": float(np.median(ratio)),
            "mean_grad_ratio_min": float(ratio_mu.min()), "mean_grad_ratio_median": float(np.median(ratio_mu)),
            "below_tol_with_mean_grad": int((ratio_mu < 1).sum())}


def main() -> list[dict]:
    rows: list[dict] = []
    train = C._train

    def traced(model, teacher, loop, opt, batches, config, dev, on_report, progress):
        ctl, steps = loop.controller, config.steps

        def hook(out) -> None:
            w = ctl.window
            step = int(w.scalar("step")[-1])
            m = margins(w, sum(C._lr(t, steps, config) for t in range(step, steps)))
            if m is not None:
                rows.append({"step": step, "frac": step / steps, **m})
            if on_report is not None:
                on_report(out)

        return train(model, teacher, loop, opt, batches, config, dev, hook, progress)

    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(C, "_train", traced):
        bench.main(["--preset", "tiny", "--tokens", "80000", "--seeds", "1", "--arms", "lyactl-distill",
                    "--out", str(Path(tmp) / "c.json")])
    OUT.write_text(json.dumps({"study": "freeze_margin", "preset": "tiny", "tokens": 80000, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    for r in main()[::4]:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
