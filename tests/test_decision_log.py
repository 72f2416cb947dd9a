"""Decision log: JSONL round trip and offline re-verification (tampering detected)."""

from __future__ import annotations

import json

import pytest

from lyactl.control.controller import Controller, ControllerConfig
from lyactl.control.decision_log import DecisionLog, event_from_json, event_to_json, read_log, reverify
from lyactl.errors import DataFileError
from lyactl.control.groups import GroupKind
from lyactl.control.guard import GuardConfig
from sim_training import simulate


@pytest.fixture
def log(tmp_path):
    sim = simulate(["collapsing"] * 3 + ["converging"] * 2 + ["learning"], "gd", n_reports=30, seed=1,
                   kind=GroupKind.LAYER)
    ctrl = Controller(sim.groups, config=ControllerConfig(guard=GuardConfig(window=2)))
    path = tmp_path / "decisions.jsonl"
    writer = DecisionLog(path)
    events = []
    for s in sim.stats:
        out = ctrl.observe(s)
        writer.write(out)
        events += out.events
    return path, events


def test_roundtrip_and_reverify(log):
    path, events = log
    assert events and all(event_from_json(json.loads(json.dumps(event_to_json(e)))) == e for e in events)
    report = reverify(path)
    assert report.ok and report.n_decisions == sum(len(e.decisions) for e in events)
    assert report.n_certificates >= report.n_decisions
    types = {r["type"] for r in read_log(path)}
    assert {"decision", "event", "release"} <= types


@pytest.mark.parametrize("target", ["V_3", "dw_sq_2", "w_sq_7", "r_hat", "r_max", "margin"])
def test_tampering_detected(log, target):
    path, _ = log
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    done = False
    for rec in lines:
        if rec["type"] != "decision" or done:
            continue
        for cert in rec["certificates"]:
            if target == "margin":
                cert["margin"] *= 1.5
                done = True
            elif target in cert["numbers"]:
                cert["numbers"][target] *= 1.01 if cert["numbers"][target] else 0.0
                cert["numbers"][target] += 0.0 if cert["numbers"][target] else 1e-3
                done = True
            if done:
                break
    assert done
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = reverify(path)
    assert not report.ok


def test_malicious_condition_is_not_executed(log):
    path, _ = log
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    rec = next(r for r in lines if r["type"] == "decision")
    rec["certificates"][0]["condition"] = "__import__('os').system('echo hacked') > 0"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = reverify(path)
    assert not report.ok and "could not be evaluated" in report.failures[0][3]


def test_bad_json_names_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"type": "event"}\nnot json\n')
    with pytest.raises(DataFileError, match="x.jsonl:2"):
        read_log(p)
