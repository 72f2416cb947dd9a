"""Reading a run folder back: the summary table, the plots, offline re-verification.

Works from the files alone (``summary.json``, ``metrics.jsonl``, ``traces.json``,
``decisions.jsonl``; see :mod:`lyactl_torch.runner`), with lyactl and no torch, so a run can
be audited where it was not trained. :func:`check_run` first checks the folder against its
manifest (:mod:`lyactl.app.runfolder`): a missing, emptied, truncated or altered file, or
events without decisions, is a failure before any certificate is read. matplotlib is imported lazily in :func:`_pyplot` only
(Agg backend, no display).

Plots: ``loss.png`` (training loss of every arm), ``flops.png`` (fraction of the dense
model's training FLOPs/token kept, over steps), ``lyapunov.png`` (per monitor, the newest
``V`` of each decided group and of a few undecided ones over the reports, log scale, with the
decision steps marked).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lyactl.app.runfolder import DERIVED, Problem, audit
from lyactl.control.decision_log import ReverifyReport, read_log, reverify
from lyactl.errors import DataFileError, bad_arg

__all__ = ["check_run", "load_run", "TABLE_LEGEND", "format_table", "format_compress", "is_compress", "plot_run",
           "reverify_run", "PLOTS"]

PLOTS = DERIVED


def check_run(run_dir: str | Path) -> tuple[Problem, ...]:
    """What is wrong with the run folder's files (empty if intact): :func:`lyactl.app.runfolder.audit`.

    Raises :class:`DataFileError` when ``run_dir`` is not a run folder (no ``summary.json``)."""
    return audit(run_dir)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"summary": [arm records], "metrics": [rows], "traces": dict | None,
    "decisions": [decision lines]}`` of a run folder."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise DataFileError(bad_arg("RUN_DIR", "a run folder holding summary.json", str(run_dir)))
    try:
        summary = json.loads(path.read_text())
        metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()] \
            if (run_dir / "metrics.jsonl").is_file() else []
        traces = json.loads((run_dir / "traces.json").read_text()) if (run_dir / "traces.json").is_file() else None
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{run_dir}: a run file is not valid JSON: {exc}") from exc
    log = run_dir / "decisions.jsonl"
    decisions = [r for r in read_log(log) if isinstance(r, dict) and r.get("type") == "decision"] if log.is_file() else []
    return {"summary": summary, "metrics": metrics, "traces": traces, "decisions": decisions}


def _si(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


TABLE_LEGEND = "\n".join([
    "what the rows and words mean:",
    "  model FLOPs/token before/after  training FLOPs (forward + backward) per token of the model at the start / at the end",
    "  training FLOPs                  the FLOPs of the whole run: per step, FLOPs/token of the model then x tokens",
    "  training FLOPs vs dense         training FLOPs / the dense arm's; above 'after/before' because the early "
    "steps ran the full model",
    "  wall-clock (s)                  training time of the arm (evaluation excluded)",
    "  val bits/byte                   held-out bits per byte (lower is better) ± its standard error",
    "  parameters after                parameters of the final model",
    "  events (restored)               pruning/freezing events, and how many the guard undid (restored) after the "
    "loss rose",
    "  collapse, convergence, ...      the Lyapunov monitor whose certificate justified a decision (collapse: the "
    "group's weights went to zero and stayed there)",
    "  margin                          how far inside its certificate's condition a decision was (> 0 certifies; "
    "for collapse, 1 means the Lyapunov function is exactly 0)",
    "  kept (progress bar)             the fraction of the dense model's FLOPs/token the model has now"])
"""One line per row of :func:`format_table` and per word of its event lines."""


def format_table(run: dict[str, Any]) -> str:
    """The comparison table of the arms plus one line per event and its certificates."""
    arms = run["summary"]["arms"]
    rows = [("model FLOPs/token before", lambda a: _si(a["flops_per_token_before"])),
            ("model FLOPs/token after", lambda a: _si(a["flops_per_token_after"])),
            ("training FLOPs", lambda a: _si(a["train_flops"])),
            ("training FLOPs vs dense", lambda a: f"{a['train_flops'] / a['dense_train_flops']:.3f}"),
            ("wall-clock (s)", lambda a: f"{a['wall_s']:.1f}"),
            ("val bits/byte", lambda a: f"{a['val_bpb']:.4f} ± {a['val_bpb_stderr']:.4f}"),
            ("parameters after", lambda a: _si(a["n_params_after"])),
            ("events (restored)", lambda a: f"{len(a.get('events', []))} ({len(a.get('restored', []))})"
             if a["controlled"] else "-")]
    w = max(len(r[0]) for r in rows)
    cols = [max(16, len(a["arm"])) for a in arms]
    lines = [" " * w + " | " + " | ".join(f"{a['arm']:>{c}}" for a, c in zip(arms, cols))]
    lines.append("-" * len(lines[0]))
    lines += [f"{name:<{w}} | " + " | ".join(f"{fn(a):>{c}}" for a, c in zip(arms, cols)) for name, fn in rows]
    return "\n".join(lines + [""] + _event_lines(run))


def is_compress(run: dict[str, Any]) -> bool:
    """True for a folder written by ``lyactl compress`` (one arm named "compress")."""
    arms = run["summary"].get("arms", [])
    return len(arms) == 1 and arms[0].get("arm") == "compress"


def format_compress(run: dict[str, Any]) -> str:
    """What a ``lyactl compress`` folder holds: size before and after against the target,
    tokens, training FLOPs, wall, bits per byte before and after, then one line per event."""
    a = run["summary"]["arms"][0]
    reached = "reached" if a.get("reached_target") else "NOT reached"
    lines = [f"compress, method {a.get('method')}: model FLOPs/token {_si(a['flops_per_token_before'])} -> "
             f"{_si(a['flops_per_token_after'])} (ratio {a['flops_per_token_ratio']:.3f}, target "
             f"{a.get('target_flops')}: {reached})",
             f"tokens {a['tokens']}, training FLOPs {_si(a['train_flops'])}, wall-clock {a['wall_s']:.1f} s",
             f"val bits/byte {a['val_bpb_before']:.4f} -> {a['val_bpb_after']:.4f}"]
    return "\n".join(lines + [""] + _event_lines(run))


def _event_lines(run: dict[str, Any]) -> list[str]:
    """One line per event: step, actions, groups, the monitors that certified them, min margin."""
    by_event: dict[int, list[dict[str, Any]]] = {}
    for d in run["decisions"]:
        by_event.setdefault(int(d["event_id"]), []).append(d)
    restored = {e for a in run["summary"]["arms"] for e in a.get("restored", [])}
    fpt = next((a.get("fpt", []) for a in run["summary"]["arms"] if a.get("controlled")), [])
    out = [f"decisions: {len(run['decisions'])} in {len(by_event)} events"]
    for eid, ds in sorted(by_event.items()):
        acts = sorted({d["action"] for d in ds})
        mons: dict[str, int] = {}
        margins = []
        for d in ds:
            for c in d["certificates"]:
                key = c["monitor"] if c["verdict"] == "holds" else f"{c['monitor']} ({c['verdict']})"
                mons[key] = mons.get(key, 0) + 1
                margins.append(c["margin"] if c["margin"] is not None else math.nan)
        names = ", ".join(d["group"] for d in ds[:4]) + (f", ... (+{len(ds) - 4})" if len(ds) > 4 else "")
        cert = ", ".join(f"{m} x{n}" for m, n in sorted(mons.items()))
        tag = " [restored by the guard]" if eid in restored else ""
        step = int(ds[0]["step"])
        before = [f for s, f in fpt if s < step][-1:] or [_num(ds[0].get("flops_before"))]
        after = [f for s, f in fpt if s <= step][-1:] or [_num(ds[0].get("flops_after"))]
        out.append(f"  event {eid} @ step {step}: {'/'.join(acts)} {len(ds)} group{'s' if len(ds) != 1 else ''} ({names}); "
                   f"model FLOPs/token {_si(before[0])} -> {_si(after[0])}; "
                   f"certificates: {cert}; min margin {min(margins):.3g}{tag}")
    return out


def reverify_run(run_dir: str | Path) -> ReverifyReport:
    """Re-verify every certificate of ``decisions.jsonl`` (an empty report if there is none)."""
    log = Path(run_dir) / "decisions.jsonl"
    return reverify(log) if log.is_file() else ReverifyReport(0, 0, ())


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (the one place matplotlib is imported)."""
    try:
        import matplotlib
    except ImportError as exc:  # also when sys.modules["matplotlib"] is None
        raise ImportError("plots need matplotlib: pip install 'lyactl[torch]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path, run: dict[str, Any] | None = None) -> list[Path]:
    """Write :data:`PLOTS` into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir) if run is None else run
    plt = _pyplot()
    out = [_plot_loss(plt, run, run_dir / "loss.png"), _plot_flops(plt, run, run_dir / "flops.png")]
    out.append(_plot_lyapunov(plt, run, run_dir / "lyapunov.png"))
    return out


def _decision_steps(run: dict[str, Any]) -> list[int]:
    return sorted({int(d["step"]) for d in run["decisions"]})


def _plot_loss(plt: Any, run: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in run["summary"]["arms"]:
        rows = [r for r in run["metrics"] if r["arm"] == arm["arm"] and r.get("loss") is not None]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"{arm['arm']} "
                f"(val {arm['val_bpb']:.3f} bits/byte)")
    for s in _decision_steps(run):
        ax.axvline(s, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="step", ylabel="training loss (nats/token)", title="training loss (dotted: decisions)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_flops(plt: Any, run: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for arm in run["summary"]["arms"]:
        rows = [r for r in run["metrics"] if r["arm"] == arm["arm"]]
        ax.step([0] + [r["step"] for r in rows], [1.0] + [r["flops_kept"] for r in rows], where="post",
                label=arm["arm"])
    ax.set(xlabel="step", ylabel="training FLOPs/token kept", ylim=(0, 1.05),
           title="fraction of the dense model's FLOPs kept")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_lyapunov(plt: Any, run: dict[str, Any], path: Path, n_undecided: int = 3) -> Path:
    tr = run["traces"]
    monitors = list(tr["V"]) if tr else []
    fig, axes = plt.subplots(1, max(1, len(monitors)), figsize=(4 * max(1, len(monitors)), 3.6), squeeze=False)
    if not tr:
        axes[0, 0].text(0.5, 0.5, "no controller in this run", ha="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    decided = {d["index"]: int(d["step"]) for d in run["decisions"]}
    undecided = [i for i in range(len(tr["groups"])) if i not in decided][:: max(1, len(tr["groups"]) // 8)]
    show = sorted(decided)[:6] + undecided[:n_undecided]
    for ax, name in zip(axes[0], monitors):
        if not any(_num(v) > 0 for row in tr["V"][name] for v in (row[i] for i in show)):
            ax.text(0.5, 0.5, "not evaluated on these groups\n(only where it could decide)", ha="center",
                    transform=ax.transAxes, fontsize=7)
            ax.set(xlabel="step", title=f"{name} ({tr['roles'][name]}): V")
            continue
        for i in show:
            y = [_num(row[i]) for row in tr["V"][name]]
            line, = ax.plot(tr["steps"], [max(v, 1e-30) for v in y], lw=1.2 if i in decided else 0.8,
                            ls="-" if i in decided else "--", label=tr["groups"][i])
            if i in decided:
                ax.axvline(decided[i], color=line.get_color(), lw=0.6, ls=":")
        ax.set(yscale="log", xlabel="step", title=f"{name} ({tr['roles'][name]}): V")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Lyapunov functions per group (solid: decided, dotted line: decision; dashed: undecided)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(v: Any) -> float:
    return math.nan if v is None or isinstance(v, str) else float(v)
