"""The decision log (JSON lines) and offline re-verification of every certificate.

One line per decision::

    {"type": "decision", "event_id", "step", "group", "index", "action",
     "certificates": [...], "flops_before", "flops_after"}

plus one ``{"type": "event", ...}`` line per event and ``{"type": "restore" | "release",
"event_id", "step"}`` lines. :func:`reverify` re-evaluates every logged certificate from its
logged numbers with lyactl alone: each ``name := expr`` statement is recomputed and must
match the logged number of that name, and the final ``lhs > rhs`` must hold with the
logged margin. Conditions are evaluated by a small whitelisting evaluator over Python's
``ast`` (numbers, + - * / **, Max, Min, Abs, sqrt, log, exp): never ``eval`` on a file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from lyactl.errors import DataFileError, bad_arg
from lyactl.expr import evaluate
from lyactl.control.groups import Action, Certificate, Decision, Event
from lyactl.verdict import Verdict

__all__ = ["encode_array", "decode_array", "certificate_from_json", "event_to_json", "event_from_json",
           "DecisionLog", "read_log", "evaluate_condition", "verify_certificate", "ReverifyReport", "reverify"]

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_array(x: Any) -> list[Any]:
    """Flat JSON list; non-finite values as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return [float(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
            for v in np.asarray(x, float).ravel().tolist()]


def decode_array(values: Iterable[Any]) -> np.ndarray:
    return np.array([_NONFINITE[v] if isinstance(v, str) else float(v) for v in values], dtype=float)


def certificate_from_json(d: Mapping[str, Any]) -> Certificate:
    nums = {k: (math.nan if v is None else float(v)) for k, v in d["numbers"].items()}
    margin = math.nan if d["margin"] is None else float(d["margin"])
    return Certificate(d["monitor"], Verdict(d["verdict"]), tuple(d["window"]), nums, d["condition"], margin)


def _decision_to_json(d: Decision) -> dict[str, Any]:
    return {"step": d.step, "group": d.group, "index": d.index, "action": d.action.value,
            "certificates": [c.to_json() for c in d.certificates]}


def event_to_json(e: Event) -> dict[str, Any]:
    return {"event_id": e.event_id, "step": e.step, "decisions": [_decision_to_json(d) for d in e.decisions],
            "flops_before": encode_array([e.flops_before])[0], "flops_after": encode_array([e.flops_after])[0],
            "meta": dict(e.meta)}


def event_from_json(d: Mapping[str, Any]) -> Event:
    decisions = tuple(Decision(x["step"], x["group"], x["index"], Action(x["action"]),
                               tuple(certificate_from_json(c) for c in x["certificates"]))
                      for x in d["decisions"])
    fb, fa = decode_array([d["flops_before"], d["flops_after"]])
    return Event(d["event_id"], d["step"], decisions, float(fb), float(fa), dict(d.get("meta", {})))


class DecisionLog:
    """Appends controller output to a JSONL file (one ``write`` per ``observe``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def write(self, output: Any) -> None:
        """Write the events, restores and releases of one ``ControlOutput``."""
        lines = []
        for e in output.events:
            ev = event_to_json(e)
            for d in ev["decisions"]:
                lines.append({"type": "decision", "event_id": e.event_id, **d,
                              "flops_before": ev["flops_before"], "flops_after": ev["flops_after"]})
            lines.append({"type": "event", **{k: v for k, v in ev.items() if k != "decisions"},
                          "groups": [d.group for d in e.decisions]})
        lines += [{"type": "restore", "event_id": e.event_id, "step": e.step} for e in output.restores]
        lines += [{"type": "release", "event_id": e.event_id, "step": e.step} for e in output.releases]
        if lines:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(x, allow_nan=False) + "\n" for x in lines)


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All lines of a decision log; :class:`DataFileError` names the file and line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFileError(bad_arg(f"{path}:{i}", "a JSON object", line.strip())) from exc
    return out


def evaluate_condition(condition: str, numbers: Mapping[str, float]) -> tuple[float, list[str]]:
    """Evaluate ``"a := expr; ...; lhs > rhs"``; return ``(lhs - rhs, mismatches)``.

    A mismatch is a defined name whose logged number differs from its recomputed value
    (relative 1e-9).
    """
    env = dict(numbers)
    mismatches = []
    *defs, final = [s.strip() for s in condition.split(";") if s.strip()]
    for stmt in defs:
        name, expr = (p.strip() for p in stmt.split(":=", 1))
        value = evaluate(expr, env, name)
        if name in numbers and not math.isclose(value, numbers[name], rel_tol=1e-9, abs_tol=1e-300):
            mismatches.append(f"{name}: logged {numbers[name]!r}, recomputed {value!r}")
        env[name] = value
    lhs, gt, rhs = final.partition(">")
    if not gt or rhs.startswith(("=", ">")) or "<" in final or "=" in final:
        raise ValueError(f"final statement must be 'lhs > rhs', found {final!r}")
    return evaluate(lhs, env, "lhs") - evaluate(rhs, env, "rhs"), mismatches


def verify_certificate(cert: Mapping[str, Any]) -> list[str]:
    """Problems with one logged certificate (JSON dict); empty if it re-verifies."""
    numbers = {k: (math.nan if v is None else float(v)) for k, v in cert["numbers"].items()}
    try:
        margin, problems = evaluate_condition(cert["condition"], numbers)
    except (KeyError, ValueError, ZeroDivisionError, OverflowError, SyntaxError, TypeError) as exc:
        return [f"condition could not be evaluated: {type(exc).__name__}: {exc}"]
    if not margin > 0:
        problems.append(f"condition does not hold: margin {margin!r}")
    logged = cert.get("margin")
    if logged is None or not math.isclose(margin, logged, rel_tol=1e-9, abs_tol=1e-12):
        problems.append(f"margin: logged {logged!r}, recomputed {margin!r}")
    if cert.get("verdict") != Verdict.HOLDS.value:
        problems.append(f"verdict logged as {cert.get('verdict')!r}")
    return problems


@dataclass(frozen=True)
class ReverifyReport:
    """``n_certificates`` checked; ``failures`` as ``(line, group, monitor, problem)``."""

    n_decisions: int
    n_certificates: int
    failures: tuple[tuple[int, str, str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def reverify(path: str | os.PathLike[str]) -> ReverifyReport:
    """Re-verify every certificate of every decision in a log (lyactl alone)."""
    n_dec = n_cert = 0
    failures = []
    for line_no, rec in enumerate(read_log(path), 1):
        if rec.get("type") != "decision":
            continue
        n_dec += 1
        if not rec["certificates"]:
            failures.append((line_no, rec["group"], "-", "decision without certificates"))
        for cert in rec["certificates"]:
            n_cert += 1
            failures += [(line_no, rec["group"], cert["monitor"], p) for p in verify_certificate(cert)]
    return ReverifyReport(n_dec, n_cert, tuple(failures))
